"""Says which process imported it and which one answers, and how many objects are frozen out of
the garbage collector's reach, for the zygote and --preload tests (crates/c10k/tests/zygote.rs,
preload.rs): a forked worker imports the app itself, after the fork, unless it was preloaded."""

import gc
import json
import os

IMPORTED_IN = os.getpid()


def app(environ, start_response):
    body = json.dumps(
        {
            "pid": os.getpid(),
            "ppid": os.getppid(),
            "imported_in": IMPORTED_IN,
            "frozen": gc.get_freeze_count(),
        }
    ).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]
