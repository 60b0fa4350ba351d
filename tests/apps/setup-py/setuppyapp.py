def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"setup-py: served as the setup.py distribution name\n"]
