"""WSGI entry point: `c10k serve --chdir .../djangoproj djangoproj.wsgi:application`.

With DJANGO_MIGRATE=1 the tables are created at boot (the tests' throw-away databases).
"""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djangoproj.settings")
application = get_wsgi_application()

if os.environ.get("DJANGO_MIGRATE") == "1":
    from django.core.management import call_command

    call_command("migrate", run_syncdb=True, verbosity=0)
