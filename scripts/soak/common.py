"""Shared by the soak apps: a WSGI middleware that counts response iterables returned and closed,
and the /soak-probe answer (this worker's pid, live Python objects after a collection, threads,
iterables not yet closed). `scripts/soak.sh` reads it; nothing else does."""

import ctypes
import gc
import json
import os
import sys
import threading

_LOCK = threading.Lock()
COUNTS = {"returned": 0, "closed": 0}


class _Counted:
    """Wraps the app's iterable so that the server's close() call is counted."""

    def __init__(self, inner):
        self._inner = inner
        self._it = None

    def __iter__(self):
        self._it = iter(self._inner)
        return self._it

    def close(self):
        with _LOCK:
            COUNTS["closed"] += 1
        close = getattr(self._inner, "close", None)
        if close is not None:
            close()


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (n, ctypes.c_size_t)
        for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")
    ]


try:
    _mallinfo2 = ctypes.CDLL(None).mallinfo2
    _mallinfo2.restype = _Mallinfo2
except (OSError, AttributeError):
    _mallinfo2 = None


def _malloc_kb():
    """KiB malloc has handed out and not had back (glibc, every arena), the Rust side's and
    Python's; and KiB it holds (arenas and mmapped chunks), in use or free."""
    if _mallinfo2 is None:
        return -1, -1
    m = _mallinfo2()
    return (m.uordblks + m.hblkhd) // 1024, (m.arena + m.hblkhd) // 1024


def probe_body():
    gc.collect()
    used, held = _malloc_kb()
    with _LOCK:
        counts = dict(COUNTS)
    return json.dumps(
        {
            "pid": os.getpid(),
            "objects": len(gc.get_objects()),
            "threads": threading.active_count(),
            "blocks": sys.getallocatedblocks(),
            "malloc_kb": used,
            "malloc_held_kb": held,
            **counts,
        }
    ).encode()


def counting(app):
    def wrapped(environ, start_response):
        if environ.get("PATH_INFO") == "/soak-probe":
            body = probe_body()
            start_response(
                "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
            )
            return [body]
        result = app(environ, start_response)
        with _LOCK:
            COUNTS["returned"] += 1
        return _Counted(result)

    return wrapped
