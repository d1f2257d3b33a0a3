from django.urls import path

from notes import views

urlpatterns = [
    path("", views.index),
    path("notes", views.notes),
    path("notes/stream", views.notes_stream),
    path("db-sleep", views.db_sleep),
    path("db-open", views.db_open),
    path("fail", views.fail),
    path("file", views.file),
]
