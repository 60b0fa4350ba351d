from django.contrib.auth.models import User
from django.http import HttpResponse

MESSAGE = "django-port: runserver original"


def index(request):
    return HttpResponse(f"{MESSAGE}, users={User.objects.count()}\n", content_type="text/plain")
