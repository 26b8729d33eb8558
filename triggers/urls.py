"""URLs of the web inspector (SPEC §16). Include them at any prefix::

    urlpatterns = [
        path("admin/", admin.site.urls),
        path("triggers/", include("triggers.urls")),
    ]

``triggers:sessions`` is the session list, ``triggers:session`` (with the
uid) one session.
"""

from __future__ import annotations

from django.urls import path

from .inspector import views

app_name = "triggers"

urlpatterns = [
    path("", views.session_list, name="sessions"),
    path("sessions/<path:uid>/", views.session_detail, name="session"),
]
