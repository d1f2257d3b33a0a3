"""A small Django project for c10k's tests: one app (notes) using the ORM.

The database is SQLite at $DJANGO_SQLITE (default: notes.sqlite3 beside this file), or MariaDB
when $DJANGO_MYSQL_URL is set (mysql://user:pass@host:port/db, through PyMySQL) with
CONN_MAX_AGE=60: persistent connections, one per Python thread.
"""

import os
from pathlib import Path
from urllib.parse import urlparse

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = "c10k-test-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["django.contrib.contenttypes", "notes"]
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
ROOT_URLCONF = "djangoproj.urls"
WSGI_APPLICATION = "djangoproj.wsgi.application"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

_mysql = os.environ.get("DJANGO_MYSQL_URL")
if _mysql:
    import pymysql

    pymysql.install_as_MySQLdb()
    u = urlparse(_mysql)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.mysql",
            "NAME": u.path.lstrip("/"),
            "USER": u.username or "root",
            "PASSWORD": u.password or "",
            "HOST": u.hostname or "127.0.0.1",
            "PORT": str(u.port or 3306),
            "CONN_MAX_AGE": 60,
        }
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get("DJANGO_SQLITE", str(BASE_DIR / "notes.sqlite3")),
        }
    }

LOGGING = {
    "version": 1,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {"django.request": {"handlers": ["stderr"], "level": "ERROR"}},
}
