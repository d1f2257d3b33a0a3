//! The work queue that hands work to a pool of threads: the gthread worker's ready connections
//! (`c10k-serve`) and the Python pool's requests (`c10k-wsgi`) both travel through it.
//!
//! It is a `VecDeque` behind a mutex, and a condition variable. A thread with nothing to do sleeps
//! at once, with no spinning or `sched_yield` first (which a channel such as crossbeam's does
//! before it blocks): the threads of a worker often share one CPU with the thread that hands them
//! work, where every yield is a context switch to a thread that has nothing to do either. A
//! sleeping thread is woken once however many pieces of work arrive before it runs, and one
//! sleeper is woken per piece of work at most: no thundering herd.
//!
//! It grows on demand: an idle queue holds no memory, whatever bound its users enforce.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// What [`WorkQueue::pop_timeout`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Popped<T> {
    Item(T),
    /// Closed and empty: no more work comes.
    Closed,
    /// Nothing came within the time given.
    Idle,
}

/// A multi-producer, multi-consumer queue of `T` with sleeping consumers. Share it with an `Arc`.
pub struct WorkQueue<T> {
    state: Mutex<State<T>>,
    ready: Condvar,
}

struct State<T> {
    items: VecDeque<T>,
    /// Threads asleep in [`WorkQueue::pop`].
    sleeping: usize,
    /// Wake-ups sent and not yet taken by a waking thread.
    signaled: usize,
    /// No more work comes: threads leave [`WorkQueue::pop`] once the queue is empty.
    closed: bool,
}

impl<T> Default for WorkQueue<T> {
    fn default() -> Self {
        WorkQueue {
            state: Mutex::new(State {
                items: VecDeque::new(),
                sleeping: 0,
                signaled: 0,
                closed: false,
            }),
            ready: Condvar::new(),
        }
    }
}

impl<T> WorkQueue<T> {
    /// A panic elsewhere while the lock was held cannot leave the queue's own fields half-changed
    /// (every change below is a single step), so a poisoned lock is used as it is.
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `item` and wakes one sleeping thread unless every sleeper is already being woken.
    /// Once the queue is closed, gives the item back.
    pub fn push(&self, item: T) -> Result<(), T> {
        let mut q = self.lock();
        if q.closed {
            return Err(item);
        }
        q.items.push_back(item);
        let wake = q.sleeping > q.signaled;
        if wake {
            q.signaled += 1;
        }
        drop(q);
        if wake {
            self.ready.notify_one();
        }
        Ok(())
    }

    /// The next item, sleeping until there is one; `None` once the queue is closed and empty.
    pub fn pop(&self) -> Option<T> {
        match self.pop_until(None) {
            Popped::Item(item) => Some(item),
            Popped::Closed | Popped::Idle => None,
        }
    }

    /// As [`pop`](Self::pop), but gives up with [`Popped::Idle`] when nothing came for `idle`:
    /// how a pool thread learns that it is no longer needed.
    pub fn pop_timeout(&self, idle: Duration) -> Popped<T> {
        self.pop_until(Instant::now().checked_add(idle))
    }

    fn pop_until(&self, deadline: Option<Instant>) -> Popped<T> {
        let mut q = self.lock();
        loop {
            if let Some(item) = q.items.pop_front() {
                return Popped::Item(item);
            }
            if q.closed {
                return Popped::Closed;
            }
            q.sleeping += 1;
            let timed_out = match deadline {
                None => {
                    q = self.ready.wait(q).unwrap_or_else(|e| e.into_inner());
                    false
                }
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    let (g, r) = self
                        .ready
                        .wait_timeout(q, left)
                        .unwrap_or_else(|e| e.into_inner());
                    q = g;
                    r.timed_out()
                }
            };
            q.sleeping -= 1;
            // A spurious wake-up may take another's signal: then one more notify is sent later,
            // never one too few. A sleeper that timed out as it was signalled takes the signal
            // too, and looks at the items once more below before it leaves.
            q.signaled = q.signaled.saturating_sub(1);
            if timed_out && q.items.is_empty() && !q.closed {
                return Popped::Idle;
            }
        }
    }

    /// A queued item, without waiting.
    pub fn try_pop(&self) -> Option<T> {
        self.lock().items.pop_front()
    }

    /// No more work comes: the items queued are still handed out, then every [`pop`](Self::pop)
    /// returns `None` and every [`push`](Self::push) gives its item back.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    /// Waits (bounded) until `n` threads sleep in `pop`.
    fn until_sleeping<T>(q: &WorkQueue<T>, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while q.lock().sleeping < n {
            assert!(Instant::now() < deadline, "{n} threads never fell asleep");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn wakes_a_sleeping_thread_and_drains_before_closing() {
        let q = Arc::new(WorkQueue::<u32>::default());
        let q2 = q.clone();
        let sleeper = std::thread::spawn(move || {
            let mut got = Vec::new();
            while let Some(n) = q2.pop() {
                got.push(n);
            }
            got
        });
        until_sleeping(&q, 1);
        assert_eq!(q.push(1), Ok(()));
        assert_eq!(q.push(2), Ok(()));
        until_sleeping(&q, 1);
        assert_eq!(q.push(3), Ok(()));
        q.close();
        assert_eq!(q.push(4), Err(4), "closed: the item comes back");
        assert_eq!(sleeper.join().unwrap(), vec![1, 2, 3]);
    }

    #[test]
    fn one_item_wakes_one_sleeper_and_each_item_is_taken_once() {
        let q = Arc::new(WorkQueue::<u32>::default());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let q = q.clone();
                std::thread::spawn(move || {
                    let mut got = Vec::new();
                    while let Some(n) = q.pop() {
                        got.push(n);
                    }
                    got
                })
            })
            .collect();
        until_sleeping(&q, 4);
        q.push(7).unwrap();
        // Only one sleeper was signalled: a second push while it has not run yet signals another
        // sleeper, never the same one twice, and never all four.
        {
            let s = q.lock();
            assert!(
                s.signaled <= 1,
                "one push signalled {} sleepers",
                s.signaled
            );
        }
        for n in 0..100 {
            q.push(n).unwrap();
        }
        q.close();
        let mut all: Vec<u32> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        all.sort_unstable();
        let mut want: Vec<u32> = (0..100).chain([7]).collect();
        want.sort_unstable();
        assert_eq!(all, want);
    }

    #[test]
    fn pop_timeout_gives_up_when_idle_and_takes_what_comes() {
        let q = Arc::new(WorkQueue::<u8>::default());
        let started = Instant::now();
        assert_eq!(q.pop_timeout(Duration::from_millis(50)), Popped::Idle);
        assert!(started.elapsed() >= Duration::from_millis(50));
        assert_eq!(q.lock().sleeping, 0);
        let q2 = q.clone();
        let waiter = std::thread::spawn(move || q2.pop_timeout(Duration::from_secs(30)));
        until_sleeping(&q, 1);
        q.push(5).unwrap();
        assert_eq!(waiter.join().unwrap(), Popped::Item(5));
        q.close();
        assert_eq!(q.pop_timeout(Duration::from_secs(30)), Popped::Closed);
    }

    #[test]
    fn try_pop_never_waits() {
        let q = WorkQueue::<u8>::default();
        assert_eq!(q.try_pop(), None);
        q.push(1).unwrap();
        assert_eq!(q.try_pop(), Some(1));
        assert_eq!(q.try_pop(), None);
    }
}
