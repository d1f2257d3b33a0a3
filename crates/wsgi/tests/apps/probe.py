"""Probe WSGI apps for c10k's tests: each route exercises one PEP 3333 behaviour of the server.

`app` is wrapped in wsgiref.validate.validator, which asserts on the server's side of the
protocol (environ types and keys, start_response rules, close() called, input/errors methods).
`raw` is the same dispatcher unwrapped, for what the validator hides (the file_wrapper fast path).
"""

import gc
import json
import os
import sys
import threading
import time
from urllib.parse import parse_qs
from wsgiref.validate import validator

# token -> how many times close() was called on that response's iterable
CLOSED = {}
LOCAL = threading.local()
# (start_response, write) pairs kept by /keep_start_response
KEPT = []
# token -> a threading.Barrier that /meet requests with that token wait on together
MEETINGS = {}
MEETINGS_LOCK = threading.Lock()
BOOTED = os.environ.get("PROBE_BOOT_MARK", "")
# how many objects kept by /meet?keep=1 in a thread's LOCAL have been freed
FREED = [0]
# token -> what write() raised in /write_gone (the exception's class and its OSError ancestry)
WRITE_ERRORS = {}


class Cyclic:
    """Held in a thread's LOCAL, in a reference cycle (as Django's database wrapper is): only
    the cyclic collector frees it once its thread is gone."""

    def __init__(self):
        self.me = self

    def __del__(self):
        FREED[0] += 1


def _qs(environ):
    return {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}


def _text(start_response, body, status="200 OK", ctype="text/plain"):
    body = body if isinstance(body, bytes) else body.encode()
    start_response(status, [("Content-Type", ctype), ("Content-Length", str(len(body)))])
    return [body]


class Tracked:
    """A streamed body that records its close()."""

    def __init__(self, token, chunks, delay):
        self.token = token
        self.chunks = chunks
        self.delay = delay
        CLOSED.setdefault(token, 0)

    def __iter__(self):
        for c in self.chunks:
            if self.delay:
                time.sleep(self.delay)
            yield c

    def close(self):
        CLOSED[self.token] = CLOSED.get(self.token, 0) + 1


class ClosingList(list):
    """A complete body in a list subclass that records its close()."""

    def __init__(self, token, chunks):
        super().__init__(chunks)
        self.token = token

    def close(self):
        CLOSED[self.token] = CLOSED.get(self.token, 0) + 1


class RaisingClose(list):
    """A complete body whose close() raises."""

    def close(self):
        raise RuntimeError("close() of the probe failed")


def _gc_said(phase, info):
    if phase == "start" and info["generation"] == 2:
        sys.stderr.write("probe: full garbage collection\n")
        sys.stderr.flush()


def dispatch(environ, start_response):
    path = environ["PATH_INFO"]
    q = _qs(environ)
    if path == "/environ":
        out = {}
        for k, v in environ.items():
            if isinstance(v, (str, bool, int)):
                out[k] = v
            elif isinstance(v, tuple):
                out[k] = list(v)
        out["__type__"] = type(environ).__name__
        out["__input__"] = type(environ["wsgi.input"]).__name__
        return _text(start_response, json.dumps(out), ctype="application/json")
    if path == "/echo":
        inp = environ["wsgi.input"]
        mode = q.get("mode", "read")
        n = int(environ.get("CONTENT_LENGTH") or 0)
        if mode == "read":
            body = inp.read(n)
            assert inp.read(10) == b""
        elif mode == "small":
            parts = []
            while True:
                c = inp.read(3)
                if not c:
                    break
                parts.append(c)
            body = b"".join(parts)
        elif mode == "readline":
            lines = []
            while True:
                line = inp.readline()
                if not line:
                    break
                lines.append(line)
            body = b"|".join(lines)
        elif mode == "readlines":
            body = b"|".join(inp.readlines())
        elif mode == "iter":
            body = b"|".join(line for line in inp)
        else:
            raise ValueError(mode)
        return _text(start_response, body, ctype="application/octet-stream")
    if path == "/stream":
        n = int(q.get("n", "3"))
        delay = float(q.get("delay", "0"))
        token = q.get("token", "t")
        size = int(q.get("size", "0"))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Tracked(token, [(b"chunk%d\n" % i).ljust(size, b".") for i in range(n)], delay)
    if path == "/closed":
        return _text(start_response, str(CLOSED.get(q.get("token", "t"), 0)))
    if path == "/write":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written1,")
        write(b"written2,")
        return [b"returned"]
    if path == "/write_in_body":
        # write() from inside the iterable, after its first chunk has gone out.
        write = start_response("200 OK", [("Content-Type", "text/plain")])

        def body():
            yield b"first,"
            write(b"written,")
            yield b"last,"
            write(b"after the last")

        return body()
    if path == "/close_raises":
        # A complete answer whose close() fails (a Flask teardown that raises).
        start_response("200 OK", [("Content-Type", "text/plain")])
        return RaisingClose([b"answered"])
    if path == "/exc_info":
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            raise ValueError("handled before anything was sent")
        except ValueError:
            start_response("500 Internal Server Error", [("Content-Type", "text/plain")], sys.exc_info())
        return [b"replaced by the error page"]
    if path == "/exc_info_late":
        def body():
            yield b"first"
            try:
                raise ValueError("too late to change the head")
            except ValueError:
                start_response("500 Internal Server Error", [("Content-Type", "text/plain")], sys.exc_info())
            yield b"never sent"
        start_response("200 OK", [("Content-Type", "text/plain")])
        return body()
    if path == "/exc_info_after_write":
        # write() has sent the head (PEP 3333): exc_info now re-raises instead of replacing it.
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written,")
        try:
            raise ValueError("too late to change the head")
        except ValueError:
            try:
                start_response("500 Internal Server Error", [("Content-Type", "text/plain")], sys.exc_info())
            except ValueError:
                return [b"re-raised"]
        return [b"replaced"]
    if path == "/file":
        # ?big=1: the file named by $PROBE_BIG_FILE (set with -e); ?proc=1: a procfs file, whose
        # size says 0 though it has content; ?cl=N: the app's Content-Length.
        name = os.environ["PROBE_BIG_FILE"] if q.get("big") else __file__
        f = open("/proc/self/status" if q.get("proc") else name, "rb")
        f.seek(int(q.get("skip", "0")))
        headers = [("Content-Type", "text/x-python")]
        if "cl" in q:
            headers.append(("Content-Length", q["cl"]))
        start_response("200 OK", headers)
        return environ["wsgi.file_wrapper"](f, 1024)
    if path == "/local":
        LOCAL.n = getattr(LOCAL, "n", 0) + 1
        return _text(start_response, "%s %d" % (threading.current_thread().name, LOCAL.n))
    if path == "/slow":
        time.sleep(float(q.get("s", "1")))
        return _text(start_response, "slept")
    if path == "/meet":
        # Answers "met" once n requests with this token are inside the app at the same time,
        # "alone" if they are not within `timeout` seconds: whether the server runs them at once.
        n = int(q.get("n", "2"))
        if q.get("keep"):
            LOCAL.kept = Cyclic()
            # As logging does for every record: a thread Python did not start gets a
            # threading._DummyThread here.
            threading.current_thread()
        with MEETINGS_LOCK:
            barrier = MEETINGS.setdefault(q.get("token", "t"), threading.Barrier(n))
        try:
            barrier.wait(timeout=float(q.get("timeout", "5")))
            return _text(start_response, "met")
        except threading.BrokenBarrierError:
            return _text(start_response, "alone")
    if path == "/freed":
        return _text(start_response, str(FREED[0]))
    if path == "/active_count":
        return _text(start_response, str(threading.active_count()))
    if path == "/raise":
        raise RuntimeError("boom from the probe app")
    if path == "/errors":
        print("probe wrote to wsgi.errors", file=environ["wsgi.errors"])
        environ["wsgi.errors"].flush()
        return _text(start_response, "ok")
    if path == "/errors_stream":
        # What code that takes wsgi.errors for a stream asks of it (a logging handler, a
        # library checking for a terminal before colouring its output).
        # Unwrapped from wsgiref.validate's wrapper, which offers write/writelines/flush only
        # (and forbids close(); gunicorn's wsgi.errors has them all).
        err = environ["wsgi.errors"]
        err = getattr(err, "errors", err)
        out = {}
        for name in ("isatty", "writable", "readable", "seekable"):
            try:
                out[name] = getattr(err, name)()
            except Exception as e:  # noqa: BLE001 - reported to the test
                out[name] = type(e).__name__
        try:
            err.fileno()
            out["fileno"] = "no error"
        except Exception as e:  # noqa: BLE001
            out["fileno"] = type(e).__name__ + (" (OSError)" if isinstance(e, OSError) else "")
        out["encoding"] = getattr(err, "encoding", None)
        import logging
        handler = logging.StreamHandler(err)
        log = logging.getLogger("probe.errors_stream")
        log.addHandler(handler)
        log.propagate = False
        log.warning("through a logging handler")
        log.removeHandler(handler)
        err.writelines(["lines ", "joined\n"])
        err.close()
        out["closed"] = err.closed
        err.write("still open after close()\n")
        err.flush()
        return _text(start_response, json.dumps(out), ctype="application/json")
    if path == "/status":
        return _text(start_response, "custom", status=q.get("s", "201 Created"))
    if path == "/prefix":
        return _text(start_response, sys.prefix)
    if path == "/boot":
        return _text(start_response, BOOTED)
    if path == "/closing_list":
        # A list subclass may have a close() of its own: the server must still call it.
        token = q.get("token", "t")
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "4")])
        return ClosingList(token, [b"list"])
    if path == "/echo_header":
        # The value is a new string each time; the name a constant.
        value = q.get("v", "")
        start_response("200 OK", [("Content-Type", "text/plain"), ("X-Echo", value)])
        return [value.encode()]
    if path == "/keep_start_response":
        # Keeps this request's start_response and write: the server must not hand them to a
        # later request.
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        KEPT.append((start_response, write))
        return [b"kept"]
    if path == "/kept_is_mine":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        mine = any(sr is start_response or w is write for sr, w in KEPT)
        return [b"yes" if mine else b"no"]
    if path == "/tuple_headers":
        # Not a list: the server must take any iterable of pairs (the validator would refuse).
        start_response("200 OK", (("Content-Type", "text/plain"), ("X-Probe", "tuple")))
        return [b"tuple"]
    if path == "/list_headers":
        # Pairs as lists: gunicorn unpacks them (the validator, and PEP 3333's letter, want
        # tuples); a 3-item one is still an error.
        extra = [["X-Probe", "list"]] if q.get("n") != "3" else [["X-Probe", "list", "x"]]
        start_response("200 OK", [["Content-Type", "text/plain"]] + extra)
        return [b"list"]
    if path == "/head_empty":
        # As werkzeug answers HEAD: the length GET would get, and no body (?cl=0: no length).
        body = b"twelve bytes"
        headers = [("Content-Type", "text/plain")]
        if q.get("cl") != "0":
            headers.append(("Content-Length", str(len(body))))
        start_response("200 OK", headers)
        return [] if environ["REQUEST_METHOD"] == "HEAD" else [body]
    if path == "/gc_watch":
        # From now on every full garbage collection says so in the log as it starts.
        if _gc_said not in gc.callbacks:
            gc.callbacks.append(_gc_said)
        return _text(start_response, "watching")
    if path == "/content_length":
        # The app's own Content-Length headers (?v=5|6 sends two) over the body `hello`, as a
        # list or (?gen=1) a generator of two chunks.
        headers = [("Content-Type", "text/plain")]
        headers += [("Content-Length", v) for v in q.get("v", "5").split("|")]
        start_response("200 OK", headers)
        if q.get("gen"):
            return iter([b"hel", b"lo"])
        return [b"hello"]
    if path == "/write_wait":
        # write() goes out at once: the client gets `first,` while the app waits for the file
        # (?signal=PATH) the client creates once it has it, then the app writes the rest.
        signal = q["signal"]
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"first,")
        deadline = time.monotonic() + float(q.get("wait", "10"))
        while not os.path.exists(signal) and time.monotonic() < deadline:
            time.sleep(0.02)
        write(b"signalled," if os.path.exists(signal) else b"not-signalled,")
        return [b"end"]
    if path == "/write_big":
        # One write() of ?mb= MiB; ?mark=PATH gets the worker's pid and resident size (KiB)
        # before, and `returned` once write() has returned.
        mark = q["mark"]
        size = int(q.get("mb", "64")) << 20
        with open(mark, "w") as f:
            f.write("%d %d\n" % (os.getpid(), _rss_kib()))
        write = start_response(
            "200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))]
        )
        write(b"x" * size)
        with open(mark, "a") as f:
            f.write("returned\n")
        return []
    if path == "/write_gone":
        # Writes until write() raises (the client left), then returns an iterable whose close()
        # is recorded (?token=).
        token = q.get("token", "t")
        CLOSED.setdefault(token, 0)
        write = start_response("200 OK", [("Content-Type", "application/octet-stream")])
        piece = b"y" * 65536
        try:
            for _ in range(int(q.get("n", "4096"))):
                write(piece)
            WRITE_ERRORS[token] = "none"
        except Exception as e:  # noqa: BLE001 - the test reads what it was
            WRITE_ERRORS[token] = "%s oserror=%s" % (type(e).__name__, isinstance(e, OSError))
        return Tracked(token, [b"after"], 0)
    if path == "/write_error":
        return _text(start_response, WRITE_ERRORS.get(q.get("token", "t"), ""))
    if path == "/":
        return _text(start_response, "probe")
    return _text(start_response, "not found: " + path, status="404 Not Found")


def _rss_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


app = validator(dispatch)
raw = dispatch


def hello(environ, start_response):
    """The bare hello app of the benchmarks."""
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
    return [b"Hello, world!"]


def create_app(greeting="hi", loud=False):
    """A factory: `probe:create_app('hey', loud=True)`."""
    body = (greeting.upper() if loud else greeting).encode()

    def greet(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body]

    return validator(greet)


not_callable = 42
