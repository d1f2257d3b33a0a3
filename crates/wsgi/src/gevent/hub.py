"""The gevent side of c10k's `gevent` worker class (see crates/wsgi/src/gevent/mod.rs).

c10k's Rust event loop accepts, parses and writes every connection. Complete requests (and the
steps of streamed bodies) arrive through `queue`; an eventfd (`fd`) says when there is work, and an
io watcher on this hub turns that into a callback in the hub greenlet, which only spawns: each job
runs in its own greenlet, so a view that sleeps, calls `requests` or a database driver through
patched sockets yields to the others.
"""

import os
import warnings


def patch():
    """gevent.monkey.patch_all(), returning gevent's warnings (ssl/threading imported too early)."""
    from gevent import monkey

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        monkey.patch_all()
    return [str(w.message) for w in seen]


def serve(fd, queue):
    """Runs this thread's hub until the process exits."""
    import gevent
    from gevent import Timeout, getcurrent

    hub = gevent.get_hub()
    spawn = gevent.spawn_raw
    kill = gevent.kill

    def run(job):
        seconds = job.seconds_left()
        if seconds is None:
            context = job.context()
            if context is None:
                job.run(getcurrent())
            else:
                # A step of a streamed body: in its request's context (Flask's
                # stream_with_context keeps the request there).
                context.run(job.run, getcurrent())
            return
        # --request-timeout: gevent.Timeout is raised in the view at its next wait; the Rust side
        # answers 504 whichever happens first (this, or its own timer).
        timer = Timeout.start_new(max(seconds, 0.0))
        try:
            job.run(getcurrent())
        except Timeout as e:
            if e is not timer:
                raise
        finally:
            timer.close()

    def ready():
        try:
            os.read(fd, 8)
        except BlockingIOError:
            pass
        jobs, doomed = queue.take()
        for job in jobs:
            spawn(run, job)
        for g in doomed:
            # Raises GreenletExit in it at the next loop iteration; never blocks the hub.
            try:
                kill(g)
            except Exception:  # noqa: BLE001 - a dead greenlet needs no killing
                pass

    watcher = hub.loop.io(fd, 1)
    watcher.start(ready)
    while True:
        # The watcher keeps the loop alive; join() returns only if it were stopped.
        hub.join()
        gevent.sleep(1)
