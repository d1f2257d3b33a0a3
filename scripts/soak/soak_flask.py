"""The Flask app `scripts/soak.sh` hosts: one view per kind of traffic the soak sends."""

import time

from flask import Flask, Response, request

from common import counting

flask_app = Flask(__name__)


@flask_app.route("/", methods=["GET", "HEAD"])
def index():
    return "hello\n"


@flask_app.route("/post", methods=["POST"])
def post():
    # ?read=all|part|none: how much of the body the view reads.
    how = request.args.get("read", "all")
    if how == "all":
        n = len(request.get_data())
    elif how == "part":
        n = len(request.stream.read(10))
    else:
        n = 0
    return "read %d\n" % n


@flask_app.route("/stream")
def stream():
    n = int(request.args.get("n", "100"))
    size = int(request.args.get("size", "1000"))
    chunk = b"x" * size

    def gen():
        for _ in range(n):
            yield chunk

    return Response(gen(), mimetype="application/octet-stream")


@flask_app.route("/fail")
def fail():
    raise RuntimeError("soak: the view failed")


@flask_app.route("/slow")
def slow():
    time.sleep(float(request.args.get("s", "1")))
    return "slept\n"


app = counting(flask_app)
