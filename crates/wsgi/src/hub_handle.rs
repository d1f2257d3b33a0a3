//! [`Hub`]: the handle through which any thread hands the `gevent` class's hub its work, and the
//! way the hub's answers come back. Work is a [`Task`] on a queue plus a write to an eventfd that
//! the hub watches: a request's [`Call`], a step of a streamed body for the greenlet that owns it
//! ([`Owner`]), or a kill. Answers are queued by the hub ([`Hub::answer`]) and completed on the
//! event loop in batches ([`deliver`]). What runs on the hub thread itself, and why, is in
//! gevent/ (`mod.rs` and `hub.py`); this handle is below it, so that the body machinery
//! (stream.rs, write.rs) can reach the hub without naming the executor.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::task::{Poll, Waker};
use std::time::Instant;

use c10k_http::{Request, Response};
use crossbeam_channel as chan;
use pyo3::prelude::*;
use tokio::sync::oneshot;

use crate::loader::AppState;
use crate::pool::Job;

/// A request for the hub to call the app with, in a greenlet of its own.
pub(crate) struct Call {
    pub state: Arc<AppState>,
    pub req: Request,
    /// Given the app's answer, in the request's greenlet once the app has returned.
    pub done: Done,
}

/// What becomes of a [`Call`]'s answer: the response, given in the request's greenlet (a streamed
/// body's steps are already bound to it).
pub(crate) type Done = Box<dyn for<'py> FnOnce(Python<'py>, Response) + Send>;

/// What the hub is asked to do.
// Nearly every task is a `Call`: boxing it would cost an allocation per request to save the
// space of the rare small ones.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Task {
    Call {
        call: Call,
        deadline: Option<Instant>,
        slot: Arc<Slot>,
    },
    /// A step of a streamed body, for its owner (`hub.py`'s `Owned`); `last`: the owner's
    /// release, after its last step.
    Run {
        job: Job,
        context: Option<Arc<Py<PyAny>>>,
        last: bool,
    },
    Kill(Arc<Slot>),
}

/// A request's greenlet, as far as the waiting side needs it to give up.
#[derive(Default)]
pub(crate) struct Slot {
    pub(crate) greenlet: Mutex<Option<Py<PyAny>>>,
    pub(crate) cancelled: AtomicBool,
}

/// What the hub and its handles share.
pub(crate) struct Shared {
    pub(crate) tx: chan::Sender<Task>,
    pub(crate) rx: chan::Receiver<Task>,
    /// An eventfd: readable when tasks are queued.
    pub(crate) fd: OwnedFd,
    /// A wake-up is pending (the eventfd was written and the hub has not drained the queue yet).
    pub(crate) notified: AtomicBool,
    /// Answers waiting for [`deliver`], and its waker.
    pub(crate) answers: Mutex<Vec<(oneshot::Sender<Response>, Response)>>,
    pub(crate) deliverer: Mutex<Option<Waker>>,
    /// [`deliver`] runs on the event loop (started by the first request).
    pub(crate) delivering: Once,
}

/// A handle to the worker's hub; cheap to clone.
#[derive(Clone)]
pub(crate) struct Hub {
    pub(crate) shared: Arc<Shared>,
}

impl Hub {
    /// Calls the app for a request in a greenlet of its own (in a fresh `contextvars` context),
    /// with a `gevent.Timeout` at `deadline`; the returned slot lets the waiting side kill it.
    pub(crate) fn call(&self, call: Call, deadline: Option<Instant>) -> Arc<Slot> {
        let slot = Arc::new(Slot::default());
        self.send(Task::Call {
            call,
            deadline,
            slot: slot.clone(),
        });
        slot
    }

    /// Gives up on a tracked job: it will not start, or its greenlet gets `GreenletExit`.
    pub(crate) fn kill(&self, slot: &Arc<Slot>) {
        if !slot.cancelled.swap(true, Ordering::AcqRel) {
            self.send(Task::Kill(slot.clone()));
        }
    }

    /// Starts [`deliver`] on the calling task's tokio runtime, once; false outside one (answers
    /// are then sent one by one).
    pub(crate) fn deliver_on_this_runtime(&self) -> bool {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return false;
        };
        let shared = self.shared.clone();
        self.shared.delivering.call_once(|| {
            rt.spawn(deliver(shared));
        });
        true
    }

    /// On the hub: queues `resp` for the request waiting on `tx`; `hub.py` flushes the queue
    /// after the runnable greenlets have run (`Queue::flush` in gevent/mod.rs).
    pub(crate) fn answer(&self, tx: oneshot::Sender<Response>, resp: Response) {
        lock(&self.shared.answers).push((tx, resp));
    }

    /// Wakes [`deliver`] for the answers queued so far, outside the hub's batching: for an
    /// answer whose greenlet runs on (`write()` sent its head, see write.rs).
    pub(crate) fn flush_answers(&self) {
        if lock(&self.shared.answers).is_empty() {
            return;
        }
        let waker = lock(&self.shared.deliverer).take();
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Runs `job` in a greenlet of its own (from any thread).
    pub(crate) fn run(&self, job: Job) {
        self.send(Task::Run {
            job,
            context: None,
            last: false,
        });
    }

    fn send(&self, task: Task) {
        if self.shared.tx.send(task).is_err() {
            return; // unreachable: the hub holds a receiver itself
        }
        if !self.shared.notified.swap(true, Ordering::AcqRel) {
            let one = 1u64.to_ne_bytes();
            // SAFETY: writing 8 bytes from a live buffer to our eventfd. It can only fail with
            // EAGAIN when the counter is saturated, which means the hub is being woken anyway.
            unsafe { libc::write(self.shared.fd.as_raw_fd(), one.as_ptr().cast(), one.len()) };
        }
    }
}

/// Where the steps of a streamed body run: the greenlet that ran its view (see `own` in
/// gevent/mod.rs).
pub(crate) struct Owner {
    pub(crate) hub: Hub,
    /// `hub.py`'s `Owned`; `None` if it could not be made (then each step runs in a fresh greenlet).
    pub(crate) owned: Option<Arc<Py<PyAny>>>,
}

impl Owner {
    /// Runs `job` in the owning greenlet, after the steps submitted before it.
    pub(crate) fn submit(&self, job: Job) {
        self.hub.send(Task::Run {
            job,
            context: self.owned.clone(),
            last: false,
        });
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        // After the body's last step (its close(), submitted first): the greenlet is free.
        if let Some(owned) = self.owned.take() {
            self.hub.send(Task::Run {
                job: Box::new(|_| {}),
                context: Some(owned),
                last: true,
            });
        }
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The event loop's side of the answers: completes every queued request's oneshot on the loop's
/// own thread (a local wake, no system call), then waits for the hub's next flush.
async fn deliver(shared: Arc<Shared>) {
    std::future::poll_fn(|cx| {
        // The waker first: an answer queued after the drain below wakes this task again.
        *lock(&shared.deliverer) = Some(cx.waker().clone());
        let batch = std::mem::take(&mut *lock(&shared.answers));
        for (tx, resp) in batch {
            let _ = tx.send(resp);
        }
        Poll::<()>::Pending
    })
    .await
}
