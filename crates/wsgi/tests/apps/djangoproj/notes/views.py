import threading
import time
from pathlib import Path

from django.db import connection
from django.http import FileResponse, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from .models import Note


def index(request):
    return HttpResponse("hello\n", content_type="text/plain")


@csrf_exempt
def notes(request):
    if request.method == "POST":
        note = Note.objects.create(text=request.body.decode()[:200])
        return JsonResponse({"id": note.id}, status=201)
    return JsonResponse(
        {
            "count": Note.objects.count(),
            "last": list(Note.objects.order_by("-id").values_list("text", flat=True)[:1]),
            "thread": threading.get_ident(),
            "vendor": connection.vendor,
            "db_connection": db_connection_id(),
        }
    )


def notes_stream(request):
    """Django's "streaming large CSV files" pattern over a lazy queryset: each row comes from a
    cursor of the view thread's database connection, read as the body is sent (?delay=SECONDS
    before each row). A line per note, "TEXT THREAD", the thread that produced it, then "end"."""
    delay = float(request.GET.get("delay", "0"))

    def rows():
        for note in Note.objects.order_by("id").iterator(chunk_size=1):
            time.sleep(delay)
            yield f"{note.text} {threading.get_ident()}\n"
        yield "end\n"

    return StreamingHttpResponse(rows(), content_type="text/plain")


def db_connection_id():
    """The server's id of this thread's database connection (MariaDB), else None."""
    if connection.vendor != "mysql":
        return None
    with connection.cursor() as cur:
        cur.execute("SELECT CONNECTION_ID()")
        return cur.fetchone()[0]


def db_sleep(request):
    """Waits in the database (?s=SECONDS): concurrent only when the driver's socket yields."""
    with connection.cursor() as cur:
        cur.execute("SELECT SLEEP(%s)", [float(request.GET.get("s", "0.2"))])
        cur.fetchone()
    return HttpResponse("slept\n", content_type="text/plain")


def db_open(request):
    """How many PyMySQL connections this worker process holds open (live objects with a socket;
    the collector is not run, so a connection only garbage holds still counts)."""
    import gc

    import pymysql

    n = sum(
        1
        for o in gc.get_objects()
        if isinstance(o, pymysql.connections.Connection) and o._sock is not None
    )
    return HttpResponse(f"{n}\n", content_type="text/plain")


def file(request):
    """This project's manage.py through FileResponse (Django hands it to wsgi.file_wrapper)."""
    path = Path(__file__).resolve().parent.parent / "manage.py"
    return FileResponse(open(path, "rb"), content_type="text/plain")


def fail(request):
    raise RuntimeError("django view failed")
