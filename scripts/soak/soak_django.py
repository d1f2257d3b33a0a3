"""The Django app `scripts/soak.sh` hosts, in one module (settings, views, urls)."""

import time

from django.conf import settings

settings.configure(
    DEBUG=False,
    SECRET_KEY="c10k-soak-only",
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    MIDDLEWARE=["django.middleware.common.CommonMiddleware"],
    INSTALLED_APPS=[],
    DATABASES={},
    LOGGING={
        "version": 1,
        "handlers": {"null": {"class": "logging.NullHandler"}},
        "loggers": {"django.request": {"handlers": ["null"], "propagate": False}},
    },
)

from django.core.signals import request_finished, request_started  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.http import HttpResponse, StreamingHttpResponse  # noqa: E402
from django.urls import path  # noqa: E402
from django.views.decorators.csrf import csrf_exempt  # noqa: E402

from common import COUNTS, counting  # noqa: E402

# Django's own pairing: request_finished fires from the response's close().
COUNTS["django_started"] = 0
COUNTS["django_finished"] = 0


def _started(**_):
    COUNTS["django_started"] += 1


def _finished(**_):
    COUNTS["django_finished"] += 1


request_started.connect(_started)
request_finished.connect(_finished)


def index(request):
    return HttpResponse("hello\n", content_type="text/plain")


@csrf_exempt
def post(request):
    how = request.GET.get("read", "all")
    if how == "all":
        n = len(request.body)
    elif how == "part":
        n = len(request.read(10))
    else:
        n = 0
    return HttpResponse("read %d\n" % n, content_type="text/plain")


def stream(request):
    n = int(request.GET.get("n", "100"))
    chunk = b"x" * int(request.GET.get("size", "1000"))
    return StreamingHttpResponse((chunk for _ in range(n)), content_type="application/octet-stream")


def fail(request):
    raise RuntimeError("soak: the view failed")


def slow(request):
    time.sleep(float(request.GET.get("s", "1")))
    return HttpResponse("slept\n", content_type="text/plain")


urlpatterns = [
    path("", index),
    path("post", post),
    path("stream", stream),
    path("fail", fail),
    path("slow", slow),
]

app = counting(get_wsgi_application())
