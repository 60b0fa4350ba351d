from django.contrib.auth.models import User
from django.http import HttpResponse


def index(request):
    # Querying a table proves that `manage.py migrate` ran before the server started.
    body = f"django: gunicorn, migrated, users={User.objects.count()}\n"
    return HttpResponse(body, content_type="text/plain")
