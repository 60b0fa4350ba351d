def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    served = "yes" if "mod_wsgi.version" in environ else "no"
    return [f"mod-wsgi: served by Apache mod_wsgi={served}\n".encode()]
