def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"app-home: served from the APP_HOME subdirectory\n"]
