"""A Flask app for the `gevent` worker class's tests: views that wait on patched sockets.

`/fetch?url=...` calls another HTTP server through `requests` (patched sockets yield to the hub);
`/boom` raises after a cooperative wait; `/patched` says whether the standard library is patched;
`/greenlet` counts the requests its greenlet has served; `/contextvar` shows a context variable an
earlier request set and never reset.
"""

import contextvars
import time

import requests
from flask import Flask, jsonify, request

app = Flask(__name__)


@app.route("/fetch")
def fetch():
    r = requests.get(request.args["url"], timeout=10)
    return r.text


@app.route("/boom")
def boom():
    time.sleep(float(request.args.get("delay", "0")))
    raise RuntimeError("greenlet view failed")


@app.route("/patched")
def patched():
    from gevent import monkey

    return jsonify(
        time=monkey.is_module_patched("time"), socket=monkey.is_module_patched("socket")
    )


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


@app.route("/contextvar")
def contextvar():
    before = MARK.get()
    MARK.set("set by an earlier request")
    return before
