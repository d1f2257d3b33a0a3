"""A Flask app for the `gevent` worker class's tests: views that wait on patched sockets.

`/fetch?url=...` calls another HTTP server through `requests` (patched sockets yield to the hub);
`/boom` raises after a cooperative wait; `/patched` says whether the standard library is patched;
`/greenlet` counts the requests its greenlet has served; `/hold?s=` keeps an object in a
`threading.local` (as Django keeps its database connection) and waits, `/held` counts those alive; `/stream-local?token=` streams what a
`threading.local` the view set holds at each step (Django keeps its database connection in
one); `/contextvar` shows a context variable an
earlier request set and never reset; `/sleep?s=` waits and `/stacks` lists how much C stack each
waiting greenlet has saved; `/gc` shows the garbage collector's thresholds, which the app
sets itself at import when `GEVENT_APP_GC_THRESHOLDS` says so (e.g. `--env
GEVENT_APP_GC_THRESHOLDS=500,5,5`). `/imported` says which process imported the app and whether
`time` and `socket` were patched then (`--preload`), and in which processes a thread that the app
starts at import when `GEVENT_APP_THREAD_AT_IMPORT` is set (a scheduler's, say) has run.
"""

import contextvars
import gc
import os
import subprocess
import threading
import time

import requests
from flask import Flask, Response, jsonify, request

from gevent import monkey

app = Flask(__name__)

IMPORTED_IN = os.getpid()
PATCHED_AT_IMPORT = monkey.is_module_patched("time") and monkey.is_module_patched("socket")
# The processes the thread started at import has run in.
RAN_IN = set()


def tick():
    while True:
        RAN_IN.add(os.getpid())
        time.sleep(0.05)


if os.environ.get("GEVENT_APP_THREAD_AT_IMPORT"):
    threading.Thread(target=tick, daemon=True).start()


@app.route("/imported")
def imported():
    return jsonify(
        pid=os.getpid(), imported_in=IMPORTED_IN, patched=PATCHED_AT_IMPORT, ran_in=sorted(RAN_IN)
    )

if os.environ.get("GEVENT_APP_GC_THRESHOLDS"):
    gc.set_threshold(*(int(t) for t in os.environ["GEVENT_APP_GC_THRESHOLDS"].split(",")))


@app.route("/gc")
def gc_thresholds():
    return jsonify(list(gc.get_threshold()))


@app.route("/fetch")
def fetch():
    r = requests.get(request.args["url"], timeout=10)
    return r.text


@app.route("/boom")
def boom():
    time.sleep(float(request.args.get("delay", "0")))
    raise RuntimeError("greenlet view failed")


@app.route("/subprocess")
def run_subprocess():
    # Patched: gevent watches the child, which needs the hub on gevent's default loop.
    out = subprocess.run(["echo", "from a child"], capture_output=True, timeout=10).stdout
    pid = os.fork()
    if pid == 0:
        os._exit(7)
    _, status = os.waitpid(pid, 0)
    return "%s fork exit %d" % (out.decode().strip(), os.waitstatus_to_exitcode(status))


@app.route("/patched")
def patched():
    from gevent import monkey

    return jsonify(
        time=monkey.is_module_patched("time"), socket=monkey.is_module_patched("socket")
    )


LOCAL = threading.local()


@app.route("/stream-local")
def stream_local():
    LOCAL.token = request.args["token"]
    n = int(request.args.get("n", "5"))

    def steps():
        for _ in range(n):
            time.sleep(0.01)
            yield getattr(LOCAL, "token", "unset") + "\n"

    return Response(steps(), mimetype="text/plain")


@app.route("/")
def index():
    return "gevent app\n"


MARK = contextvars.ContextVar("mark", default="unset")


@app.route("/greenlet")
def greenlet_served():
    from gevent import getcurrent

    g = getcurrent()
    g.c10k_served = getattr(g, "c10k_served", 0) + 1
    return str(g.c10k_served)


class Held:
    """Stands for a database connection a view keeps in a `threading.local` (CONN_MAX_AGE)."""

    alive = 0

    def __init__(self):
        Held.alive += 1
        # In a reference cycle, as Django's database wrapper is: only the collector frees it.
        self.me = self

    def __del__(self):
        Held.alive -= 1


@app.route("/hold")
def hold():
    if getattr(LOCAL, "held", None) is None:
        LOCAL.held = Held()
    time.sleep(float(request.args.get("s", "0.3")))
    return "held\n"


@app.route("/held")
def held():
    return str(Held.alive)


@app.route("/contextvar")
def contextvar():
    before = MARK.get()
    MARK.set("set by an earlier request")
    return before


@app.route("/sleep")
def sleep():
    time.sleep(float(request.args.get("s", "1")))
    return "slept\n"


@app.route("/stacks")
def stacks():
    """The bytes of C stack each other waiting greenlet saved when it switched away (greenlet
    copies a greenlet's stack out then, and back in when it resumes)."""
    import greenlet
    from gevent import get_hub

    skip = (greenlet.getcurrent(), get_hub())
    return jsonify(
        [
            g._stack_saved
            for g in gc.get_objects()
            if isinstance(g, greenlet.greenlet) and g not in skip and not g.dead and g._stack_saved
        ]
    )
