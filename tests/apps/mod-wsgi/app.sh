#!/bin/bash
# Serve wsgi.py with Apache httpd through mod_wsgi-express (full image only).
exec mod_wsgi-express start-server wsgi.py --port "${PORT:-8080}" --log-to-terminal --access-log
