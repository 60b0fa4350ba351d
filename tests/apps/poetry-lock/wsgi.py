from importlib.metadata import version

from flask import Flask
from poetry_lock_app import report

application = Flask(__name__)


@application.route("/")
def index():
    try:
        six = version("six")
    except Exception:
        six = "none"
    return f"poetry-lock: {report()} six={six} project={version('poetry-lock-app')}\n"
