"""The gevent side of c10k's `gevent` worker class (see crates/wsgi/src/gevent/mod.rs).

The app is imported on the hub's thread, with `signal.signal` deferred to the main thread
(`defer_signals`), so that what it starts at import runs on the hub that serves.

c10k's Rust event loop accepts, parses and writes every connection. Complete requests (and the
steps of streamed bodies) arrive through `queue`; an eventfd (`fd`) says when there is work, and an
io watcher on this hub turns that into a callback in the hub greenlet, which only schedules: each
job runs in its own greenlet, so a view that sleeps, calls `requests` or a database driver through
patched sockets yields to the others.

A request whose answer is streamed keeps its greenlet until the body is done (`own`): every
`next()` and the `close()` run there, in the request's `contextvars` context, because the
generator expects the view's greenlet-local state (patched `threading.local`: Django's database
connection, with a transaction the generator may hold open across yields). In a greenlet of their
own, those steps used another request's connection and ran inside its transaction.

Greenlets are reused: one that has finished its job waits in `idle` for the next (up to
`MAX_IDLE` of them). A new greenlet costs more than its Python objects: CPython 3.11 gives each
its own 16 KiB frame stack, an mmap and a munmap per greenlet, which made a third of the hub's
system calls. Each request still starts in an empty `contextvars` context, as in a new greenlet.
A reused greenlet keeps its (patched) `threading.local` state, as a pool thread does: Django's
persistent database connection (`CONN_MAX_AGE`) lives there. So that a burst does not leave one
open connection per greenlet it needed for as long as the worker lives, a greenlet idle for
`IDLE_TIMEOUT` seconds exits (the idle list is last in, first out, so under a steady load the
same few greenlets serve and the others age out), and its greenlet-local state is freed with it;
a garbage collection follows, since a database wrapper sits in reference cycles. (Under
gunicorn's gevent worker every greenlet ends with its request, and its connection stays open
until a collection happens to run: one more open connection per request meanwhile.)

The cyclic garbage collector's young generations are widened (`tune_gc`): thousands of requests
wait here at once, each holding its objects (environ, the framework's request, a timer) for as
long as it waits, far longer than CPython's default thresholds expect of young objects.
"""

import collections
import contextvars
import gc
import os
import types
import warnings

# Finished greenlets kept for the next jobs; beyond this many idle ones, they exit.
MAX_IDLE = 512
# Seconds an idle greenlet waits for a job before it exits, and how often the hub looks.
IDLE_TIMEOUT = 5.0
IDLE_SWEEP = 1.0
# Sent to an idle greenlet instead of a job: exit.
EXIT = object()

# CPython's default collection thresholds, and the ones this hub uses instead (see tune_gc).
DEFAULT_GC_THRESHOLDS = (700, 10, 10)
HUB_GC_THRESHOLDS = (5000, 100, 10)


def tune_gc():
    """Widens the collector's young generations, unless the app chose its own thresholds.
    Returns the thresholds in force.

    With the defaults, the middle generation is collected every 10 young collections, a few
    milliseconds of traffic under load: the objects of every request that is still waiting (a
    `time.sleep(1)`, a slow upstream) survive it and are promoted to the old generation, whose
    full collections then walk all of them again and again. The hub of a C10K run spent a third of
    its CPU there. Here the middle generation spans seconds of requests, so most waiting requests
    finish first and their objects are freed by reference counting instead; the youngest spans
    about a hundred requests (each young collection walks every waiting request's new objects
    once, whatever its size, so fewer, larger ones cost less). Cyclic garbage is still found
    within those hundred requests; a cycle that was still reachable then waits for the middle
    generation's next collection, seconds later.
    """
    if gc.get_threshold() == DEFAULT_GC_THRESHOLDS:
        gc.set_threshold(*HUB_GC_THRESHOLDS)
    return gc.get_threshold()


# Request greenlets whose answer became a stream during their job (see own), until their worker
# loop takes them.
OWNED = {}


class Owned:
    """A request greenlet kept for the steps of its streamed body, and their queue."""

    __slots__ = ("greenlet", "context", "jobs", "parked")

    def __init__(self, greenlet, context):
        self.greenlet = greenlet
        self.context = context
        self.jobs = collections.deque()
        # Waiting in `steps` for `ready` to switch it back with a job queued.
        self.parked = False


def own():
    """Called (from Rust) in a request's greenlet when its answer is a stream: that greenlet
    runs the body's steps once the view has returned."""
    from greenlet import getcurrent

    me = getcurrent()
    owned = Owned(me, me.gr_context)
    OWNED[me] = owned
    return owned


def patch():
    """gevent.monkey.patch_all(), returning gevent's warnings (ssl/threading imported too early)."""
    from gevent import monkey

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        monkey.patch_all()
    return [str(w.message) for w in seen]


def python_entry(app):
    """What to call `app` through: for an instance whose class defines `__call__` in Python (a
    Flask or Django app), its bound `__call__`, which CPython calls without a C frame of its own
    (the instance itself is called through the type's C slot, another C frame on the greenlet's
    stack); else the app."""
    if not isinstance(app, (types.FunctionType, types.MethodType)):
        dunder = getattr(type(app), "__call__", None)
        if isinstance(dunder, types.FunctionType):
            return app.__call__
    return app


def note_main_hub():
    """Called on the main thread after gevent is imported and before the hub's thread starts.
    Only gevent's default loop has child watchers, and a patched `subprocess.run` or `os.fork()`
    needs one (else "child watchers are only available on the default loop"); under gunicorn's
    gevent worker the hub is the main thread's, on that loop. If patching made the main thread's
    hub, it would hold the default loop and never run (the main thread runs no greenlet), so it is
    destroyed here with its loop, and the hub's thread makes the default loop again
    (`own_hub`). Returns whether there was a hub to destroy.

    Under `--preload` the zygote calls it too, after patching and again after the import, so that
    the workers it forks inherit no hub: a hub there after the import was made by the app (a
    greenlet or patched thread it started, a gevent wait), and what it started would never run."""
    from gevent._hub_local import get_hub_if_exists

    hub = get_hub_if_exists()
    if hub is None:
        return False
    hub.destroy(destroy_loop=True)
    return True


def started_at_import():
    """How many greenlets are alive or waiting to start besides the hub and this one: under
    `--preload`, what the import started (a patched thread, `gevent.spawn`). They belong to the
    zygote's hub and would never run in a forked worker."""
    import greenlet
    from gevent import Greenlet
    from gevent.hub import Hub

    me = greenlet.getcurrent()
    return sum(
        1
        for g in gc.get_objects()
        if isinstance(g, greenlet.greenlet)
        and g is not me
        and not isinstance(g, Hub)
        and (bool(g) or (isinstance(g, Greenlet) and not g.dead))
    )


# The app is imported on the hub's thread (so that what it starts at import runs on the hub that
# serves), but CPython lets only the main thread call signal.signal: while it imports, the calls
# are recorded here and the main thread makes them once the import is done (see defer_signals).
DEFERRED_SIGNALS = []
_deferring = [False]


def defer_signals():
    """Until `undo_defer_signals`: `signal.signal` called on another thread than the main one is
    checked as CPython checks it (signal number, handler; SIGKILL and SIGSTOP refused), recorded
    for `apply_deferred_signals` and answered with the previous handler, and `signal.getsignal`
    answers with what was recorded. An app that installs a handler at import (as under gunicorn's
    gevent worker, which imports on its main thread) therefore boots. Outside the import, the
    replacements call through (a module may have kept them: `from signal import signal`)."""
    import errno
    import signal

    real_signal, real_getsignal = signal.signal, signal.getsignal
    pending = {}

    def getsignal(signalnum):
        if _deferring[0] and signalnum in pending:
            return pending[signalnum]
        return real_getsignal(signalnum)

    def deferring_signal(signalnum, handler):
        if not _deferring[0]:
            return real_signal(signalnum, handler)
        try:
            # The main thread, or gevent's own SIGCHLD handling: nothing to defer.
            return real_signal(signalnum, handler)
        except ValueError:
            pass
        previous = getsignal(signalnum)  # ValueError for a number out of range, as CPython
        if handler not in (signal.SIG_IGN, signal.SIG_DFL) and not callable(handler):
            raise TypeError(
                "signal handler must be signal.SIG_IGN, signal.SIG_DFL, or a callable object"
            )
        if signalnum in (signal.SIGKILL, signal.SIGSTOP):
            raise OSError(errno.EINVAL, "Invalid argument")
        pending[signalnum] = handler
        DEFERRED_SIGNALS.append((signalnum, handler))
        return previous

    deferring_signal.__wrapped__ = real_signal
    getsignal.__wrapped__ = real_getsignal
    signal.signal, signal.getsignal = deferring_signal, getsignal
    _deferring[0] = True


def undo_defer_signals():
    """Ends `defer_signals`: `signal.signal` and `signal.getsignal` are the real ones again."""
    import signal

    _deferring[0] = False
    for name in ("signal", "getsignal"):
        wrapper = getattr(signal, name)
        real = getattr(wrapper, "__wrapped__", None)
        if real is not None:
            setattr(signal, name, real)


def apply_deferred_signals():
    """On the main thread, after the import: makes the `signal.signal` calls the import made on
    the hub's thread, in their order (with the C function: gevent's own wrapper would make the
    main thread a hub for a SIGCHLD reset)."""
    import _signal

    calls = list(DEFERRED_SIGNALS)
    DEFERRED_SIGNALS.clear()
    for signalnum, handler in calls:
        _signal.signal(signalnum, handler)


def own_hub():
    """This thread's hub, on gevent's default loop (see `note_main_hub`)."""
    import gevent
    from gevent._hub_local import get_hub_class, get_hub_if_exists, set_hub

    if get_hub_if_exists() is None:
        set_hub(get_hub_class()(default=True))
    return gevent.get_hub()


def serve(fd, queue, call_type, job_type):
    """Runs this thread's hub until the process exits. Jobs are requests (`call_type`: the app is
    called here) and steps of streamed bodies (`job_type`)."""
    import gevent
    from gevent import Timeout, getcurrent

    tune_gc()
    hub = own_hub()
    spawn = gevent.spawn_raw
    run_callback = hub.loop.run_callback
    hub_switch = hub.switch
    new_context = contextvars.Context
    # (greenlet, when it became idle), oldest first.
    idle = []
    now = hub.loop.now
    # The app, and what to call it through (see python_entry).
    entry = [None, None]

    def call(job, me):
        # The app is called from here, not from Rust, so that only Python frames are on the
        # greenlet's stack while the app waits (see HubCall in mod.rs).
        started = job.begin(me)
        if started is None:
            return
        app, environ, start_response = started
        if app is not entry[0]:
            entry[0], entry[1] = app, python_entry(app)
        try:
            result = entry[1](environ, start_response)
        except BaseException as e:  # noqa: BLE001 - any failure is the request's (logged) 500
            job.fail(e)
        else:
            job.finish(result)

    def run(job, me):
        if type(job) is job_type:
            owned = job.context()
            context = None if owned is None else owned.context
            if context is None:
                new_context().run(job.run)
            else:
                # A step of a streamed body: in its request's context (Flask's
                # stream_with_context keeps the request there).
                context.run(job.run)
            return
        # A request starts in an empty context, as in a new greenlet, and leaves none behind.
        me.gr_context = None
        seconds = job.seconds_left()
        if seconds is None:
            try:
                call(job, me)
            finally:
                me.gr_context = None
            return
        # --request-timeout: gevent.Timeout is raised in the view at its next wait; the Rust side
        # answers 504 whichever happens first (this, or its own timer).
        timer = Timeout.start_new(max(seconds, 0.0))
        try:
            call(job, me)
        except Timeout as e:
            if e is not timer:
                raise
        finally:
            timer.close()
            me.gr_context = None

    flush_pending = [False]

    def flush():
        flush_pending[0] = False
        queue.flush()

    def after_job():
        # The answer is queued; the event loop is woken once the greenlets runnable now have run
        # (callbacks run in order), for all their answers at once.
        if not flush_pending[0]:
            flush_pending[0] = True
            run_callback(flush)

    def steps(owned):
        # The steps of this greenlet's streamed body, one at a time as the writer asks, until the
        # body's owner is released (Rust queues that after the last step).
        context = owned.context
        while True:
            while not owned.jobs:
                owned.parked = True
                # Woken by `ready` with `owned`; anything else (a wait of the view firing late)
                # is ignored.
                while hub_switch() is not owned:
                    pass
            job = owned.jobs.popleft()
            if job.last:
                return
            try:
                if context is None:
                    new_context().run(job.run)
                else:
                    context.run(job.run)
            finally:
                after_job()

    def worker(job):
        me = getcurrent()
        while True:
            try:
                run(job, me)
            finally:
                after_job()
                owned = OWNED.pop(me, None)
            if owned is not None:
                steps(owned)
            if len(idle) >= MAX_IDLE:
                return
            idle.append((me, now()))
            # Back to the hub until `ready` pops this greenlet from `idle` and hands it a job,
            # or `sweep` tells it to exit. Anything else that switches here (a wait of the last
            # job firing late) is ignored.
            job = hub_switch()
            while type(job) is not call_type and type(job) is not job_type:
                if job is EXIT:
                    return
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
            if type(job) is job_type:
                owned = job.context()
                if owned is not None and not owned.greenlet.dead:
                    owned.jobs.append(job)
                    if owned.parked:
                        owned.parked = False
                        run_callback(owned.greenlet.switch, owned)
                    continue
                if owned is not None and job.last:
                    continue
                # Its greenlet died (not expected): the step runs in another one.
            g = None
            while idle and g is None:
                g = idle.pop()[0]
                if g.dead:
                    g = None
            if g is None:
                spawn(worker, job)
            else:
                run_callback(g.switch, job)
        for d in doomed:
            # Raises GreenletExit in it at the next loop iteration; never blocks the hub.
            run_callback(throw_if_running, d)

    # Whether greenlets exited since the last collection, and when that was.
    garbage = [False, 0.0]

    def sweep():
        # The oldest idle greenlets are at the front (see IDLE_TIMEOUT).
        limit = now() - IDLE_TIMEOUT
        n = 0
        while n < len(idle) and idle[n][1] < limit:
            n += 1
        if n:
            expired = idle[:n]
            del idle[:n]
            for g, _ in expired:
                if not g.dead:
                    run_callback(g.switch, EXIT)
            garbage[0] = True
        if garbage[0] and now() - garbage[1] >= IDLE_TIMEOUT:
            # After the expired greenlets have exited (their EXIT callbacks run first): what
            # their locals held is often in reference cycles (a Django database wrapper is),
            # which only the collector frees, and a quiet worker allocates nothing that would
            # run it. A full collection of a Django worker takes some 20-30 ms, so at most one
            # per IDLE_TIMEOUT.
            garbage[0], garbage[1] = False, now()
            run_callback(gc.collect)

    watcher = hub.loop.io(fd, 1)
    watcher.start(ready)
    sweeper = hub.loop.timer(IDLE_SWEEP, IDLE_SWEEP)
    sweeper.start(sweep)
    while True:
        # The watcher keeps the loop alive; join() returns only if it were stopped.
        hub.join()
        gevent.sleep(1)
