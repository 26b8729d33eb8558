"""URLs of ``demo.py --serve``: the admin and the triggers inspector."""

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

urlpatterns = [
    path("", RedirectView.as_view(url="/triggers/")),
    path("admin/", admin.site.urls),
    path("triggers/", include("triggers.urls")),
]
