# Never served: assemble must refuse ENABLE_PIPENV together with ENABLE_MICROPIPENV (exit 3).
def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"both-pipenv-flags: must not build\n"]
