"""Says which process imported it and which one answers, for the zygote tests
(crates/c10k/tests/zygote.rs): a forked worker imports the app itself, after the fork."""

import json
import os

IMPORTED_IN = os.getpid()


def app(environ, start_response):
    body = json.dumps(
        {"pid": os.getpid(), "ppid": os.getppid(), "imported_in": IMPORTED_IN}
    ).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]
