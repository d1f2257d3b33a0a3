"""A Flask app for the `gevent` worker class's tests: views that wait on patched sockets.

`/fetch?url=...` calls another HTTP server through `requests` (patched sockets yield to the hub);
`/boom` raises after a cooperative wait; `/patched` says whether the standard library is patched.
"""

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
