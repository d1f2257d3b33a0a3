"""WSGI entry point: `c10k serve --chdir .../djangoproj djangoproj.wsgi:application`.

With DJANGO_MIGRATE=1 the tables are created at boot (the tests' throw-away databases); with
DJANGO_ADMIN_PASSWORD set too (and settings_admin), a superuser `admin` with that password.
"""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djangoproj.settings")
application = get_wsgi_application()

if os.environ.get("DJANGO_MIGRATE") == "1":
    from django.core.management import call_command

    call_command("migrate", run_syncdb=True, verbosity=0)

    password = os.environ.get("DJANGO_ADMIN_PASSWORD")
    if password:
        from django.contrib.auth import get_user_model

        User = get_user_model()
        if not User.objects.filter(username="admin").exists():
            User.objects.create_superuser("admin", "admin@example.com", password)
