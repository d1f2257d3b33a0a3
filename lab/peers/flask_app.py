"""The seed's experiment app: GET /?delay=SECONDS sleeps, then says hello.

Used by `c10k lab --python PATH` to put gunicorn, uWSGI and Granian beside c10k. Under gevent
workers the sleep yields only because the worker monkey-patches `time.sleep` (gunicorn's gevent
worker does it itself; uWSGI needs --gevent-monkey-patch), which is the seed's point.
"""

import time

from flask import Flask, request

app = Flask(__name__)


@app.route("/")
def hello():
    delay = request.args.get("delay")
    if delay is not None:
        try:
            seconds = float(delay)
        except ValueError:
            return "delay: not a number of seconds\n", 400
        if not 0 <= seconds <= 60:
            return "delay: must be between 0 and 60\n", 400
        time.sleep(seconds)
    return "hello\n"


@app.route("/cpu")
def cpu():
    ms = int(request.args.get("ms", "0"))
    end = time.perf_counter() + ms / 1000
    x = 0
    while time.perf_counter() < end:
        x += 1
    return f"burned {ms} ms\n"
