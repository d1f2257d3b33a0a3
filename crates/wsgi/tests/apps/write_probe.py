"""Probe app for the legacy write() callable's edges, run under c10k and gunicorn alike
(crates/c10k/tests/write_callable.rs): a HEAD answer of an app that writes, write() before a
wsgi.file_wrapper, and write() from a thread the app started. Standard library only, unwrapped
(wsgiref.validate would hide the file wrapper and refuses writes from other threads).
"""

import io
import os
import threading
import time
from urllib.parse import parse_qs

# token -> what the app's thread saw: "ok" or the exception write() raised
THREADS = {}
THREADS_LOCK = threading.Lock()
# token -> how many times Python's read() was called on the file behind /write_file
READS = {}


class CountingFile(io.FileIO):
    """A real file (its fileno() works) whose read() calls are counted: the server may read it
    without Python, through the descriptor."""

    def __init__(self, name, token):
        super().__init__(name, "rb")
        self.token = token
        READS.setdefault(token, 0)

    def read(self, size=-1):
        READS[self.token] += 1
        return super().read(size)


def _qs(environ):
    return {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}


def _headers(q, ctype="text/plain"):
    headers = [("Content-Type", ctype)]
    if "cl" in q:
        headers.append(("Content-Length", q["cl"]))
    return headers


def _record(token, what):
    with THREADS_LOCK:
        THREADS[token] = what


def _thread_writes(write, token, pieces, delay):
    """Writes `pieces` one by one, `delay` seconds apart, and records how it went."""
    try:
        for p in pieces:
            time.sleep(delay)
            write(p)
        _record(token, "ok")
    except Exception as e:  # noqa: BLE001 - the test reads what it was
        _record(token, "%s: %s" % (type(e).__name__, e))


def _thread_waits(write, token, signal, wait):
    """Writes `piece0,`, waits for the file `signal`, then says whether it came."""
    try:
        write(b"piece0,")
        deadline = time.monotonic() + wait
        while not os.path.exists(signal) and time.monotonic() < deadline:
            time.sleep(0.02)
        write(b"signalled," if os.path.exists(signal) else b"not-signalled,")
        _record(token, "ok")
    except Exception as e:  # noqa: BLE001 - the test reads what it was
        _record(token, "%s: %s" % (type(e).__name__, e))


def app(environ, start_response):
    path = environ["PATH_INFO"]
    q = _qs(environ)
    if path == "/write":
        # write() the body (?n= pieces of `hello world\n`, 12 bytes each), optionally
        # announcing a Content-Length (?cl=), then return [] or (?tail=1) one more chunk.
        write = start_response("200 OK", _headers(q))
        for _ in range(int(q.get("n", "1"))):
            write(b"hello world\n")
        return [b"tail\n"] if q.get("tail") else []
    if path == "/write_file":
        # write() a prefix, then return a wsgi.file_wrapper over $WRITE_PROBE_FILE from ?skip=;
        # its read() calls are counted under ?token= (see /reads).
        f = CountingFile(os.environ["WRITE_PROBE_FILE"], q.get("token", "t"))
        f.seek(int(q.get("skip", "0")))
        write = start_response("200 OK", _headers(q, "application/octet-stream"))
        write(b"prefix:")
        return environ["wsgi.file_wrapper"](f, 65536)
    if path == "/thread_join":
        # A thread the app started writes ?n= pieces while the app waits for it (?first=1: the
        # app writes first itself); the app then returns [b"end"]. With ?signal=PATH the thread
        # writes `piece0,`, waits (?wait= s at most) for the client to create PATH, and writes
        # `signalled,` or `not-signalled,`.
        token = q.get("token", "t")
        write = start_response("200 OK", _headers(q))
        if q.get("first"):
            write(b"app,")
        if "signal" in q:
            target, args = _thread_waits, (write, token, q["signal"], float(q.get("wait", "10")))
        else:
            pieces = [b"piece%d," % i for i in range(int(q.get("n", "3")))]
            target, args = _thread_writes, (write, token, pieces, 0)
        t = threading.Thread(target=target, args=args)
        t.start()
        t.join(30)
        return [b"end"]
    if path == "/thread_after":
        # The app returns [b"done"] at once; a thread it started writes ?delay= s later, after
        # the answer is complete.
        token = q.get("token", "t")
        write = start_response("200 OK", _headers(q))
        t = threading.Thread(
            target=_thread_writes, args=(write, token, [b"late"], float(q.get("delay", "0.3")))
        )
        t.start()
        return [b"done"]
    if path == "/reads":
        body = str(READS.get(q.get("token", "t"), "")).encode()
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]
    if path == "/thread_seen":
        with THREADS_LOCK:
            body = THREADS.get(q.get("token", "t"), "").encode()
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]
    body = b"write_probe"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
