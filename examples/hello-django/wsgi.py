"""The WSGI entry point at the source root: the builder's run script serves `gunicorn wsgi`."""

from hello.wsgi import application

__all__ = ["application"]
