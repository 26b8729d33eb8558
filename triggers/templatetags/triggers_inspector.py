"""``{% triggers_inspector_link %}``: a box linking to the inspector, for the
admin index (shown only to users allowed in, and only when ``triggers.urls``
is included). The package's ``admin/index.html`` uses it; a project with its
own admin index template can add ``{% load triggers_inspector %}`` and the
tag where it likes."""

from __future__ import annotations

from typing import Any

from django import template
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html

register = template.Library()


@register.simple_tag(takes_context=True)
def triggers_inspector_link(context: dict[str, Any]) -> str:
    from ..inspector.views import has_permission

    request = context.get("request")
    if request is None:
        return ""
    try:
        url = reverse("triggers:sessions")
    except NoReverseMatch:
        return ""
    if not has_permission(request):
        return ""
    return format_html(
        '<div class="app-triggers module" id="triggers-inspector-link"><table>'
        '<caption><a href="{}" class="section">Triggers</a></caption>'
        '<tr><th scope="row"><a href="{}">Sessions</a></th><td></td><td></td></tr>'
        "</table></div>",
        url,
        url,
    )
