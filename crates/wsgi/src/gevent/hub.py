"""The gevent side of c10k's `gevent` worker class (see crates/wsgi/src/gevent/mod.rs).

c10k's Rust event loop accepts, parses and writes every connection. Complete requests (and the
steps of streamed bodies) arrive through `queue`; an eventfd (`fd`) says when there is work, and an
io watcher on this hub turns that into a callback in the hub greenlet, which only schedules: each
job runs in its own greenlet, so a view that sleeps, calls `requests` or a database driver through
patched sockets yields to the others.

Greenlets are reused: one that has finished its job waits in `idle` for the next (up to
`MAX_IDLE` of them). A new greenlet costs more than its Python objects: CPython 3.11 gives each
its own 16 KiB frame stack, an mmap and a munmap per greenlet, which made a third of the hub's
system calls. Each job still starts in a fresh `contextvars.Context`, as a new greenlet would.
"""

import contextvars
import os
import warnings

# Finished greenlets kept for the next jobs; beyond this many idle ones, they exit.
MAX_IDLE = 512


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
    run_callback = hub.loop.run_callback
    hub_switch = hub.switch
    new_context = contextvars.Context
    idle = []

    def run(job, me):
        seconds = job.seconds_left()
        if seconds is None:
            context = job.context()
            if context is None:
                new_context().run(job.run, me)
            else:
                # A step of a streamed body: in its request's context (Flask's
                # stream_with_context keeps the request there).
                context.run(job.run, me)
            return
        # --request-timeout: gevent.Timeout is raised in the view at its next wait; the Rust side
        # answers 504 whichever happens first (this, or its own timer).
        timer = Timeout.start_new(max(seconds, 0.0))
        try:
            new_context().run(job.run, me)
        except Timeout as e:
            if e is not timer:
                raise
        finally:
            timer.close()

    flush_pending = [False]

    def flush():
        flush_pending[0] = False
        queue.flush()

    def worker(job):
        me = getcurrent()
        job_type = type(job)
        while True:
            try:
                run(job, me)
            finally:
                # The answer is queued; the event loop is woken once the greenlets runnable now
                # have run (callbacks run in order), for all their answers at once.
                if not flush_pending[0]:
                    flush_pending[0] = True
                    run_callback(flush)
            if len(idle) >= MAX_IDLE:
                return
            idle.append(me)
            # Back to the hub until `ready` pops this greenlet from `idle` and hands it a job.
            # Anything else that switches here (a wait of the last job firing late) is ignored.
            job = hub_switch()
            while type(job) is not job_type:
                job = hub_switch()

    def throw_if_running(doomed):
        # Checked when the callback runs, not when it was queued: by then the greenlet may have
        # finished that job and taken another, which must not get the GreenletExit.
        g = doomed.greenlet()
        if g is not None:
            try:
                g.throw()  # GreenletExit
            except Exception:  # noqa: BLE001 - a dead greenlet needs no killing
                pass

    def ready():
        try:
            os.read(fd, 8)
        except BlockingIOError:
            pass
        jobs, doomed = queue.take()
        for job in jobs:
            g = None
            while idle and g is None:
                g = idle.pop()
                if g.dead:
                    g = None
            if g is None:
                spawn(worker, job)
            else:
                run_callback(g.switch, job)
        for d in doomed:
            # Raises GreenletExit in it at the next loop iteration; never blocks the hub.
            run_callback(throw_if_running, d)

    watcher = hub.loop.io(fd, 1)
    watcher.start(ready)
    while True:
        # The watcher keeps the loop alive; join() returns only if it were stopped.
        hub.join()
        gevent.sleep(1)
