from django.urls import path

from . import views

app_name = "questionnaire"
urlpatterns = [
    path("<slug:questionnaire_id>/", views.status, name="status"),
    path("<slug:questionnaire_id>/start/", views.start, name="start"),
    path("<slug:questionnaire_id>/pages/<int:page>/", views.submit_page, name="page"),
    path("<slug:questionnaire_id>/finish/", views.finish, name="finish"),
    path("<slug:questionnaire_id>/withdraw/", views.withdraw, name="withdraw"),
]
