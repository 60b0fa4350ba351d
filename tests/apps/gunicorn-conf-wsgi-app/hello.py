def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"gunicorn-conf-wsgi-app: wsgi_app from gunicorn.conf.py\n"]
