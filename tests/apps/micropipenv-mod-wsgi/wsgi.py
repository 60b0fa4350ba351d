"""No app.sh, no app.py, no gunicorn: run finds this file and serves it with mod_wsgi-express."""

from flask import Flask, request

application = Flask(__name__)


@application.route("/")
def index() -> str:
    served = "yes" if "mod_wsgi.version" in request.environ else "no"
    return f"micropipenv-mod-wsgi: flask served by mod_wsgi-express, mod_wsgi={served}\n"
