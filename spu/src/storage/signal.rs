//! Runtime-agnostic, single-threaded wake-up primitives: a [`Signal`] tasks wait on until
//! something changes, and an [`IoGate`] that lets one task at a time do file I/O for a log.
//!
//! Both are `!Send` (they live inside one executor) and never hold a `RefCell` borrow across a
//! suspension point: a waiter registers its waker and returns `Pending`.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// A generation counter with waiters: [`Signal::changed`] completes once the generation moves
/// past the one the caller saw.
#[derive(Default)]
pub(crate) struct Signal {
    generation: Cell<u64>,
    waiters: RefCell<Vec<Waker>>,
}

impl Signal {
    /// The current generation, to pass to [`Signal::changed`].
    pub(crate) fn generation(&self) -> u64 {
        self.generation.get()
    }

    /// Bumps the generation and wakes every waiter.
    pub(crate) fn notify(&self) {
        self.generation.set(self.generation.get().wrapping_add(1));
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        for waker in waiters {
            waker.wake();
        }
    }

    /// Completes when the generation differs from `seen`.
    pub(crate) fn changed(&self, seen: u64) -> Changed<'_> {
        Changed { signal: self, seen }
    }
}

pub(crate) struct Changed<'a> {
    signal: &'a Signal,
    seen: u64,
}

impl Future for Changed<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<()> {
        if self.signal.generation.get() != self.seen {
            return Poll::Ready(());
        }
        // One waker per task: a task polled again before the signal moves (a wait over many
        // partitions' signals is polled whenever any of them fires) must not add another clone
        // each time. Unbounded clones of one task's waker overflowed glommio's task reference
        // count and killed the core (a leader holding follower fetches for 100 partitions).
        let mut waiters = self.signal.waiters.borrow_mut();
        if !waiters.iter().any(|waiter| waiter.will_wake(context.waker())) {
            waiters.push(context.waker().clone());
        }
        Poll::Pending
    }
}

/// An async mutual-exclusion gate without data: one holder at a time. Holders do the file I/O
/// of one log (write rounds, fdatasync, roll, truncate) so those never interleave.
#[derive(Default)]
pub(crate) struct IoGate {
    held: Cell<bool>,
    released: Signal,
}

impl IoGate {
    /// Waits until the gate is free and takes it.
    pub(crate) async fn acquire(self: &Rc<Self>) -> IoGuard {
        loop {
            if !self.held.get() {
                self.held.set(true);
                return IoGuard { gate: Rc::clone(self) };
            }
            let seen = self.released.generation();
            self.released.changed(seen).await;
        }
    }
}

/// Holding the [`IoGate`]; released on drop (also when the holding future is cancelled).
pub(crate) struct IoGuard {
    gate: Rc<IoGate>,
}

impl Drop for IoGuard {
    fn drop(&mut self) {
        self.gate.held.set(false);
        self.gate.released.notify();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::task::Wake;

    struct CountingWaker(AtomicU32);
    impl Wake for CountingWaker {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn signal_wakes_after_notify() {
        let signal = Signal::default();
        let counter = std::sync::Arc::new(CountingWaker(AtomicU32::new(0)));
        let waker = Waker::from(counter.clone());
        let mut context = Context::from_waker(&waker);
        let seen = signal.generation();
        let mut changed = Box::pin(signal.changed(seen));
        assert!(changed.as_mut().poll(&mut context).is_pending());
        signal.notify();
        assert_eq!(counter.0.load(Ordering::Relaxed), 1);
        assert!(changed.as_mut().poll(&mut context).is_ready());
    }

    #[test]
    fn a_task_polled_again_waits_once() {
        let signal = Signal::default();
        let counter = std::sync::Arc::new(CountingWaker(AtomicU32::new(0)));
        let waker = Waker::from(counter.clone());
        let mut context = Context::from_waker(&waker);
        let seen = signal.generation();
        let mut changed = Box::pin(signal.changed(seen));
        for _ in 0..1000 {
            assert!(changed.as_mut().poll(&mut context).is_pending());
            let mut again = Box::pin(signal.changed(seen));
            assert!(again.as_mut().poll(&mut context).is_pending());
        }
        assert_eq!(signal.waiters.borrow().len(), 1);
        signal.notify();
        assert_eq!(counter.0.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn gate_is_exclusive() {
        let gate = Rc::new(IoGate::default());
        let waker = Waker::noop();
        let mut context = Context::from_waker(waker);
        let mut first = Box::pin(gate.acquire());
        let guard = match first.as_mut().poll(&mut context) {
            Poll::Ready(guard) => guard,
            Poll::Pending => panic!("free gate must be acquired at once"),
        };
        let mut second = Box::pin(gate.acquire());
        assert!(second.as_mut().poll(&mut context).is_pending());
        drop(guard);
        assert!(second.as_mut().poll(&mut context).is_ready());
    }
}
