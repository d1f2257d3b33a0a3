//! An answer that leaves before its handler returns, for a handler that runs on the connection's
//! own thread ([`Wait::Block`](crate::Wait::Block)).
//!
//! A WSGI app that streams through the legacy `write()` callable pushes its body while it runs;
//! gunicorn sends each piece at once. A handler that runs on another thread than the connection's
//! (a pool, a gevent hub) can hand its response back early through the channel the driver waits
//! on. One that runs on the driver's own thread cannot: the driver is inside the call. So the
//! blocking driver lends a [`Responder`] for the duration of the call ([`lend`]): the handler
//! gives it the response ([`Responder::answer`]: its head, and a body stream that returns
//! `Pending` while it has nothing new) and asks it to write what the stream has ready
//! ([`Responder::flush`], blocking while the client is slow). Once the handler returns, the
//! driver serves the rest of that stream as it serves any other, and ignores the response the
//! call returned.
//!
//! The loan is thread-local and scoped: it is only reachable from the lending thread, inside
//! [`lend`], and [`with`] takes it out while it is used, so there is never a second `&mut` to it.
//! A handler that never asks costs the driver two thread-local writes per request.

use std::cell::Cell;
use std::io;
use std::ptr::NonNull;

use crate::response::Response;

/// The connection's writing side, lent by a blocking driver while it runs a handler.
pub trait Responder {
    /// Sends `resp`'s head now (and what its body stream has ready); the driver pulls the rest of
    /// the stream. Called at most once per request.
    fn answer(&mut self, resp: Response) -> io::Result<()>;

    /// Writes what the answered body stream has ready, until it returns `Pending`; blocks while
    /// the client is slow. An error is the connection's: it is closed once the handler returns.
    fn flush(&mut self) -> io::Result<()>;
}

type Lent = NonNull<dyn Responder + 'static>;

thread_local! {
    static LENT: Cell<Option<Lent>> = const { Cell::new(None) };
}

/// Runs `f` with `responder` reachable through [`with`] on this thread.
pub fn lend<R>(responder: &mut dyn Responder, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<Lent>);
    impl Drop for Restore {
        fn drop(&mut self) {
            LENT.with(|l| l.set(self.0));
        }
    }
    let ptr: NonNull<dyn Responder + '_> = NonNull::from(responder);
    // SAFETY: only the lifetime is erased. The pointer is reachable only through `with` on this
    // thread, and `Restore` removes it before `lend` returns (or unwinds), while `responder` is
    // still mutably borrowed by this call.
    let ptr: Lent = unsafe { std::mem::transmute::<NonNull<dyn Responder + '_>, Lent>(ptr) };
    let _restore = Restore(LENT.with(|l| l.replace(Some(ptr))));
    f()
}

/// Whether a responder is lent on this thread.
pub fn is_lent() -> bool {
    LENT.with(|l| l.get().is_some())
}

/// Runs `f` with this thread's lent responder; `None` when none is lent (or it is in use).
pub fn with<R>(f: impl FnOnce(&mut dyn Responder) -> R) -> Option<R> {
    struct PutBack(Lent);
    impl Drop for PutBack {
        fn drop(&mut self) {
            LENT.with(|l| l.set(Some(self.0)));
        }
    }
    let ptr = LENT.with(|l| l.take())?;
    let back = PutBack(ptr);
    // SAFETY: lent by `lend` on this thread, whose borrow lasts until `lend` returns, which is
    // after this call (it is inside `lend`'s `f`); taken out of the cell meanwhile, so this is
    // the only reference made from it.
    let r = f(unsafe { &mut *back.0.as_ptr() });
    drop(back);
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Counting(usize);

    impl Responder for Counting {
        fn answer(&mut self, _: Response) -> io::Result<()> {
            self.0 += 1;
            Ok(())
        }
        fn flush(&mut self) -> io::Result<()> {
            self.0 += 10;
            // Not reachable while in use.
            assert!(with(|_| ()).is_none());
            Ok(())
        }
    }

    #[test]
    fn lent_only_inside_lend() {
        assert!(!is_lent());
        let mut c = Counting(0);
        lend(&mut c, || {
            assert!(is_lent());
            with(|r| r.answer(Response::new(200))).unwrap().unwrap();
            with(|r| r.flush()).unwrap().unwrap();
            // Not lent to another thread.
            std::thread::scope(|s| {
                s.spawn(|| assert!(!is_lent()));
            });
        });
        assert!(!is_lent());
        assert_eq!(c.0, 11);
    }
}
