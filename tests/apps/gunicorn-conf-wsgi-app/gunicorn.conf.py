wsgi_app = "hello:application"
bind = "0.0.0.0:8080"
