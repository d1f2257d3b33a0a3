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
        let mut q = self.lock();
        loop {
            if let Some(item) = q.items.pop_front() {
                return Some(item);
            }
            if q.closed {
                return None;
            }
            q.sleeping += 1;
            q = self.ready.wait(q).unwrap_or_else(|e| e.into_inner());
            q.sleeping -= 1;
            // A spurious wake-up may take another's signal: then one more notify is sent later,
            // never one too few.
            q.signaled = q.signaled.saturating_sub(1);
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
    fn try_pop_never_waits() {
        let q = WorkQueue::<u8>::default();
        assert_eq!(q.try_pop(), None);
        q.push(1).unwrap();
        assert_eq!(q.try_pop(), Some(1));
        assert_eq!(q.try_pop(), None);
    }
}
