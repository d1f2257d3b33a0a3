//! The `async` class's way back from the pool to the event loop: answers go down one channel to
//! a task on the loop ([`Answers`], each a [`Delivery`]), and [`Busy`] counts the pool threads
//! that go on with a request after its answer has freed its place (a streamed body, or an app
//! still running after `write()` sent its head).

use std::sync::atomic::{AtomicUsize, Ordering};

use c10k_http::Response;

/// Pool threads kept by answered `async` requests: by a streamed body (see stream.rs), or by
/// an app that goes on running after `write()` sent its head (write.rs). They are busy, though
/// their requests no longer count in `in_flight`.
#[derive(Default)]
pub(crate) struct Busy {
    pub streaming: AtomicUsize,
    /// Told each time a pooled `async` request is answered, or a pool thread is done with a
    /// streamed body (see [`c10k_http::Handler::capacity_freed`]).
    pub freed: tokio::sync::Notify,
}

impl Busy {
    /// A pool thread goes on with a request whose answer is about to free its place.
    pub(crate) fn begin(&self) {
        self.streaming.fetch_add(1, Ordering::AcqRel);
    }

    /// That thread is free.
    pub(crate) fn end(&self) {
        let _ = self
            .streaming
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        self.freed.notify_one();
    }
}

/// An answer on its way back to the request that waits for it.
pub(crate) type Delivery = (tokio::sync::oneshot::Sender<Response>, Response);

/// The way back from the pool to the event loop, shared by every `async` request of the worker.
///
/// Waking a task from a thread outside the runtime costs a write to the runtime's eventfd (and
/// a read on the other side), one per answer if each request's oneshot were completed by the
/// pool thread itself. Here the pool threads send answers down one channel instead, whose
/// receiving task is woken once per batch: a channel only wakes its receiver when it waits, so
/// answers sent while the event loop is busy cost no system call. That task, running on the
/// event loop, completes each request's oneshot (a local wake-up).
#[derive(Default)]
pub(crate) struct Answers {
    tx: std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedSender<Delivery>>>,
}

impl Answers {
    /// The channel into the current runtime's delivery task, started on first use (and again
    /// if the runtime it ran on is gone). Call it on the event loop.
    pub(crate) fn sender(&self) -> tokio::sync::mpsc::UnboundedSender<Delivery> {
        let mut tx = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = tx.as_ref().filter(|t| !t.is_closed()) {
            return t.clone();
        }
        let (t, mut rx) = tokio::sync::mpsc::unbounded_channel::<Delivery>();
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(64);
            while rx.recv_many(&mut batch, 256).await > 0 {
                for (waiter, resp) in batch.drain(..) {
                    // Nobody waiting: the answer is dropped here; a streamed body hands its
                    // close() to the pool, never running Python on this thread.
                    let _ = waiter.send(resp);
                }
            }
        });
        *tx = Some(t.clone());
        t
    }
}
