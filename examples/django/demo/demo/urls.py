from django.contrib import admin
from django.http import HttpResponse
from django.urls import path


def index(request):
    return HttpResponse("doorman demo: the admin is at /admin/\n", content_type="text/plain")


urlpatterns = [
    path("", index),
    path("admin/", admin.site.urls),
]
