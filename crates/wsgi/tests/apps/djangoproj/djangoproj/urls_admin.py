"""settings_admin's URLs: the admin site under /admin/, beside the notes app's."""

from django.contrib import admin
from django.urls import path

from .urls import urlpatterns as notes

urlpatterns = [path("admin/", admin.site.urls), *notes]
