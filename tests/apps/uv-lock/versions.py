# A second top-level module: setuptools would refuse this flat layout, so installing the
# (virtual) project with pip would fail; uv does not install it, and neither does assemble.
from importlib.metadata import version


def report():
    return f"flask={version('flask')} werkzeug={version('werkzeug')}"
