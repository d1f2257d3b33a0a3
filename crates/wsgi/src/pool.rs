//! A bounded pool of Python threads: where `async` workers run the app (a tokio thread never calls
//! Python), and where the blocking classes run it when `--request-timeout` is set.
//!
//! Each pool thread attaches to the interpreter once for its life and releases the GIL while it
//! waits for work, so `threading.local` state survives between requests and an idle pool costs no
//! GIL traffic. Threads start on demand, up to the pool size: a request submitted while every
//! thread already has one (running or queued for it) starts one more. The count of requests held
//! is taken when they are submitted, not when a thread wakes: the event loop submits a burst of
//! requests before the thread it woke for the first one runs (they share a CPU), and counting
//! idle threads as they wake saw one idle thread for the whole burst — the burst then queued
//! behind it, and a `time.sleep(0.1)` view answered in 0.2, 0.3, 0.4 s.
//!
//! **Stuck threads.** Python cannot interrupt a thread that runs past `--request-timeout` (a
//! `time.sleep`, a driver call in C). When the waiting side gives up, the client gets its 504 and
//! the request's [`Ticket`] is marked stuck: the thread keeps running the app until the app returns
//! on its own; its answer is then closed and dropped, and the thread exits. To keep serving
//! meanwhile, the pool starts a replacement thread for each stuck one — up to `max_stuck` of them.
//! One more stuck thread than that and the worker is asked to recycle (the `recycle` callback: the
//! worker drains and exits, and the master starts a fresh process), since a process full of stuck
//! threads only grows.
//!
//! **Idle threads.** A pool sized for the `thread` class (as many threads as
//! `--worker-connections`) is built with `retire_after`: a thread that has had no request for that
//! long exits, as the `thread` class's connection threads do, and its `threading.local` values
//! (Django's database connection) go with it. Without it, every thread a burst started stayed for
//! the worker's life: a `-k thread --request-timeout` worker only ever grew to its busiest moment's
//! count of threads, each holding its thread state and whatever the app kept per thread. The
//! `async` pool, `--threads` in size, keeps its threads.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use c10k_queue::{Popped, WorkQueue};
use pyo3::prelude::*;

/// Work for a Python thread.
pub(crate) type Job = Box<dyn for<'py> FnOnce(Python<'py>) + Send>;

struct Task {
    job: Job,
    ticket: Option<Arc<Ticket>>,
}

const QUEUED: u8 = 0;
const RUNNING: u8 = 1;
const DONE: u8 = 2;
/// Given up on before a thread took it: it never runs.
const ABANDONED: u8 = 3;
/// Given up on (past its deadline) while running: its thread is stuck.
const STUCK: u8 = 4;

/// The state of one submitted request, shared by the waiting side and the thread running it.
pub(crate) struct Ticket {
    state: AtomicU8,
    /// `METHOD /path` for the log lines of a stuck request; `None` when the request has no
    /// deadline (it can never be stuck, so the label is not made for every request).
    label: Option<Arc<str>>,
}

impl Ticket {
    fn label(&self) -> &str {
        self.label.as_deref().unwrap_or("-")
    }
}

#[derive(Default)]
struct Counts {
    /// Threads started and not exited.
    live: usize,
    /// Threads running a request whose waiter gave up after its deadline.
    stuck: usize,
}

/// Held by every [`Pool`] handle; the last one dropped closes the queue.
struct Closer(Arc<Shared>);

impl Drop for Closer {
    fn drop(&mut self) {
        self.0.queue.close();
    }
}

struct Shared {
    /// Requests waiting for a thread: an idle thread sleeps there without spinning, and is woken
    /// once however many requests arrive before it runs.
    queue: WorkQueue<Task>,
    size: usize,
    max_stuck: usize,
    /// A thread idle this long exits (see the module's doc); `None`: threads stay.
    retire_after: Option<Duration>,
    counts: Mutex<Counts>,
    /// Tasks submitted and not finished (queued or running): more than `live` threads means one
    /// waits for another's task to end.
    pending: AtomicUsize,
    recycle: Option<Arc<dyn Fn() + Send + Sync>>,
    recycling: AtomicBool,
}

/// A handle to the pool; cheap to clone.
#[derive(Clone)]
pub(crate) struct Pool {
    _closer: Arc<Closer>,
    shared: Arc<Shared>,
}

impl Pool {
    pub(crate) fn new(
        size: usize,
        max_stuck: usize,
        retire_after: Option<Duration>,
        recycle: Option<Arc<dyn Fn() + Send + Sync>>,
    ) -> Pool {
        let shared = Arc::new(Shared {
            queue: WorkQueue::default(),
            size: size.max(1),
            max_stuck,
            retire_after,
            counts: Mutex::new(Counts::default()),
            pending: AtomicUsize::new(0),
            recycle,
            recycling: AtomicBool::new(false),
        });
        Pool {
            _closer: Arc::new(Closer(shared.clone())),
            shared,
        }
    }

    /// Runs `job` on a pool thread; the returned ticket lets the waiting side give up on it.
    pub(crate) fn submit_tracked(&self, label: Option<Arc<str>>, job: Job) -> Arc<Ticket> {
        let ticket = Arc::new(Ticket {
            state: AtomicU8::new(QUEUED),
            label,
        });
        self.send(Task {
            job,
            ticket: Some(ticket.clone()),
        });
        ticket
    }

    fn send(&self, task: Task) {
        // Counted before the push, so a thread that finishes this task at once never makes the
        // count wrap below zero.
        self.shared.pending.fetch_add(1, Ordering::AcqRel);
        // The queue closes only when the last handle is gone, and `self` is one; were it closed,
        // dropping the job would drop its answer's sender, and its waiter would answer 500.
        if self.shared.queue.push(task).is_err() {
            self.shared.pending.fetch_sub(1, Ordering::AcqRel);
            tracing::error!("the Python pool's queue is closed; a request was dropped");
            return;
        }
        self.grow(false);
    }

    /// Starts a thread when fewer are live than tasks pending (or, `replacing` a stuck thread,
    /// in any case) and the non-stuck ones are fewer than the pool size. The pending count is
    /// read under the counts' lock, not taken from the caller: requests submitted from several
    /// threads at once (the `thread` class's connections) reach here in any order, and a
    /// submitter that brought its own, older count after a later one had started a thread for
    /// the larger count started none, so a burst of N ran on fewer than N threads. Read here,
    /// the k-th call sees at least k pending with at most k - 1 threads started by the calls
    /// before it, so each call starts one until the pool is full.
    fn grow(&self, replacing: bool) {
        let mut c = self.shared.counts.lock().unwrap_or_else(|e| e.into_inner());
        let pending = if replacing {
            usize::MAX
        } else {
            self.shared.pending.load(Ordering::Acquire)
        };
        if c.live >= pending {
            return;
        }
        let replacements = c.stuck.min(self.shared.max_stuck);
        if c.live >= self.shared.size + replacements {
            return;
        }
        c.live += 1;
        let index = c.live;
        drop(c);
        let shared = self.shared.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("c10k-python-{index}"))
            .spawn(move || run_thread(&shared));
        if let Err(e) = spawned {
            tracing::error!("cannot start a Python thread: {e}");
            self.shared
                .counts
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .live -= 1;
        }
    }

    /// The waiting side gives up on `ticket`; `timed_out`: because its deadline passed (a thread
    /// still running it is then stuck).
    pub(crate) fn abandon(&self, ticket: &Ticket, timed_out: bool) {
        if ticket
            .state
            .compare_exchange(QUEUED, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            return;
        }
        if !timed_out {
            return; // it finishes normally; its thread drops the answer nobody waits for
        }
        if ticket
            .state
            .compare_exchange(RUNNING, STUCK, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return; // it just finished
        }
        let stuck = {
            let mut c = self.shared.counts.lock().unwrap_or_else(|e| e.into_inner());
            c.stuck += 1;
            c.stuck
        };
        if stuck > self.shared.max_stuck {
            tracing::error!(
                request = ticket.label(),
                stuck,
                max = self.shared.max_stuck,
                "request passed --request-timeout and its Python thread cannot be interrupted; \
                 more Python threads are stuck than this worker tolerates: recycling the worker"
            );
            if !self.shared.recycling.swap(true, Ordering::AcqRel) {
                if let Some(recycle) = &self.shared.recycle {
                    recycle();
                }
            }
        } else {
            tracing::warn!(
                request = ticket.label(),
                stuck,
                max = self.shared.max_stuck,
                "request passed --request-timeout; its Python thread keeps running until the app \
                 returns (it cannot be interrupted) and a replacement thread takes its place"
            );
            self.grow(true);
        }
    }

    /// Threads stuck past their deadline right now.
    pub(crate) fn stuck(&self) -> usize {
        self.shared
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .stuck
    }
}

/// The next task for this thread; `None` when it should exit: the queue is closed, or the
/// thread was idle for `retire_after` (it is then no longer counted live).
fn wait(shared: &Shared) -> Option<Task> {
    let Some(idle) = shared.retire_after else {
        return shared.queue.pop();
    };
    match shared.queue.pop_timeout(idle) {
        Popped::Item(t) => Some(t),
        Popped::Closed => None,
        Popped::Idle => {
            // Decided under the counts' lock, with one more look at the queue: a task pushed
            // after that look is followed by its `grow`, which then sees this thread gone and
            // starts another; one pushed before it is taken here.
            let mut c = shared.counts.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(t) = shared.queue.try_pop() {
                return Some(t);
            }
            c.live -= 1;
            None
        }
    }
}

fn run_thread(shared: &Shared) {
    crate::interp::start_collector();
    Python::attach(|py| {
        crate::interp::mark_thread(py);
        serve(py, shared)
    });
    // Its thread state is gone now: what its `threading.local` values held in reference
    // cycles (a Django database connection) is collected soon, not whenever Python next runs
    // its collector.
    crate::interp::thread_exited();
}

/// Runs tasks on this attached thread until it is to exit.
fn serve(py: Python<'_>, shared: &Shared) {
    loop {
        // Work already queued runs without giving up the GIL in between; only an empty queue
        // releases it for the wait.
        let task = match shared.queue.try_pop() {
            Some(t) => Some(t),
            None => py.detach(|| wait(shared)),
        };
        let Some(Task { job, ticket }) = task else {
            return;
        };
        if let Some(t) = &ticket {
            if t.state
                .compare_exchange(QUEUED, RUNNING, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                shared.pending.fetch_sub(1, Ordering::AcqRel);
                continue; // abandoned while queued
            }
        }
        if std::panic::catch_unwind(AssertUnwindSafe(|| job(py))).is_err() {
            tracing::error!("a Python job panicked");
        }
        shared.pending.fetch_sub(1, Ordering::AcqRel);
        if let Some(t) = &ticket {
            if t.state
                .compare_exchange(RUNNING, DONE, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                // This thread was stuck and has come back; its replacement serves on.
                let mut c = shared.counts.lock().unwrap_or_else(|e| e.into_inner());
                c.stuck -= 1;
                c.live -= 1;
                tracing::info!(
                    request = t.label(),
                    "a stuck Python thread finished; it exits"
                );
                return;
            }
        }
    }
}
