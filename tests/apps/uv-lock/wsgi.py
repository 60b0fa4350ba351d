from importlib.metadata import version

from flask import Flask
from versions import report

application = Flask(__name__)


@application.route("/")
def index():
    return f"uv-lock: {report()} six={version_or_none('six')}\n"


def version_or_none(name):
    try:
        return version(name)
    except Exception:
        return "none"
