# Custom gunicorn settings (APP_CONFIG): another port, and reload on code changes (hot deploy).
bind = "0.0.0.0:8081"
reload = True
accesslog = "-"
