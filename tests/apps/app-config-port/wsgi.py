MESSAGE = "app-config-port: original"


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [(MESSAGE + "\n").encode()]
