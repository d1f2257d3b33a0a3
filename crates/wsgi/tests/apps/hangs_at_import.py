"""An app whose import never finishes (a database that never answers, a lock never released)."""

import time

time.sleep(3600)


def app(environ, start_response):  # never reached
    start_response("200 OK", [])
    return [b""]
