"""The seed's Flask service, as its users run it under gunicorn: `c10k serve flask_app:app`."""

import hashlib
import threading
import time

from flask import Flask, Response, jsonify, request, stream_with_context

app = Flask(__name__)
LOCAL = threading.local()


@app.route("/")
def index():
    # The seed's experiment: ?delay=SECONDS sleeps first.
    delay = float(request.args.get("delay", "0"))
    if delay:
        time.sleep(delay)
    return "hello\n"


@app.route("/hello")
def hello():
    return "Hello, world!"


@app.route("/echo", methods=["POST"])
def echo():
    data = request.get_json()
    return jsonify(got=data, length=request.content_length)


@app.route("/form", methods=["POST"])
def form():
    return jsonify(dict(request.form))


@app.route("/upload", methods=["POST"])
def upload():
    # A browser's file upload: werkzeug parses the multipart body from wsgi.input.
    f = request.files["file"]
    data = f.read()
    return jsonify(
        name=f.filename,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        note=request.form.get("note"),
    )


@app.route("/digest", methods=["POST", "PUT"])
def digest():
    # Any request body, however framed (Content-Length or chunked).
    data = request.get_data()
    return jsonify(size=len(data), sha256=hashlib.sha256(data).hexdigest())


@app.route("/stream")
def stream():
    n = int(request.args.get("n", "3"))

    @stream_with_context
    def gen():
        for i in range(n):
            yield "line %d %s\n" % (i, request.path)

    return Response(gen(), mimetype="text/plain")


@app.route("/stream-threads")
def stream_threads():
    # Each step sleeps (releasing the GIL) and names the thread it ran on: under `-k async
    # --threads N` every step of one body runs on the thread that ran the view, while the
    # others serve other requests, and the request context that stream_with_context pushed
    # must still be there.
    n = int(request.args.get("n", "10"))
    delay = float(request.args.get("delay", "0.005"))

    @stream_with_context
    def gen():
        for i in range(n):
            time.sleep(delay)
            yield "%d %s %d\n" % (i, request.path, threading.get_ident())

    return Response(gen(), mimetype="text/plain")


@app.route("/local")
def local():
    LOCAL.n = getattr(LOCAL, "n", 0) + 1
    return jsonify(thread=threading.get_ident(), n=LOCAL.n)


@app.route("/fail")
def fail():
    raise RuntimeError("flask view failed")
