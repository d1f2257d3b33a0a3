"""A worker's life and death as real apps live it (tests in crates/c10k/tests/wsgi.rs).

At import it registers an `atexit` handler, as libraries do (logging's flush, metrics clients,
connection pools); the handler appends "atexit <pid>" to the file named by LIFECYCLE_ATEXIT.
"""

import atexit
import os


def _at_exit():
    path = os.environ.get("LIFECYCLE_ATEXIT")
    if path:
        with open(path, "a") as f:
            f.write("atexit %d\n" % os.getpid())


atexit.register(_at_exit)


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"pid %d\n" % os.getpid()]
