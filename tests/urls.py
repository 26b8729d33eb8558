"""URLs of the test project: the admin and the triggers inspector."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("triggers/", include("triggers.urls")),
]
