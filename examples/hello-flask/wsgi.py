"""The example application: Flask, served by gunicorn (the builder finds wsgi.py)."""

import os

from flask import Flask

application = Flask(__name__)


@application.get("/")
def hello() -> str:
    greeting = os.environ.get("GREETING", "Hello")
    return f"{greeting} from buildpy!\n"


@application.get("/healthz")
def healthz() -> str:
    return "ok\n"
