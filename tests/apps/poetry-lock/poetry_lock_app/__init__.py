from importlib.metadata import version


def report():
    return f"flask={version('flask')} werkzeug={version('werkzeug')}"
