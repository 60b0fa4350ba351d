import numpy


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"numpy: sum={int(numpy.arange(10).sum())}\n".encode()]
