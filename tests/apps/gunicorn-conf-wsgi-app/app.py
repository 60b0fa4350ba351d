# Not used: a gunicorn.conf.py that sets wsgi_app comes first.
raise SystemExit("app.py must not run when gunicorn.conf.py sets wsgi_app")
