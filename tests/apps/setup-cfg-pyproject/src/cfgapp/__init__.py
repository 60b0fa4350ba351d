def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"setup-cfg-pyproject: installed from src/\n"]
