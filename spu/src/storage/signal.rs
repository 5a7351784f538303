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
///
/// A waiter holds one slot however often it is polled, and frees it when dropped: long-lived
/// tasks wait on a signal again and again (a timer raced against a stop signal every tick, a
/// long poll re-polled whenever another partition moves), and one waker clone per poll or
/// per abandoned wait would pile up until the signal fires (never, for a stop signal) and
/// overflow the task's reference count (glommio panics at 32,767).
#[derive(Default)]
pub(crate) struct Signal {
    generation: Cell<u64>,
    /// The waiters of the current generation; a slot is `None` once its waiter is gone.
    waiters: RefCell<Vec<Option<Waker>>>,
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
        for waker in waiters.into_iter().flatten() {
            waker.wake();
        }
    }

    /// Completes when the generation differs from `seen`.
    pub(crate) fn changed(&self, seen: u64) -> Changed<'_> {
        Changed { signal: self, seen, slot: None }
    }

    /// Waiters registered now (tests).
    #[cfg(test)]
    fn waiter_count(&self) -> usize {
        self.waiters.borrow().iter().flatten().count()
    }
}

pub(crate) struct Changed<'a> {
    signal: &'a Signal,
    seen: u64,
    /// Its slot in the waiters, valid while the generation is `seen` (only [`Signal::notify`]
    /// empties the waiters, and it moves the generation).
    slot: Option<usize>,
}

impl Future for Changed<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.signal.generation.get() != this.seen {
            this.slot = None;
            return Poll::Ready(());
        }
        let mut waiters = this.signal.waiters.borrow_mut();
        match this.slot {
            Some(slot) => match &mut waiters[slot] {
                Some(waker) if waker.will_wake(context.waker()) => {}
                entry => *entry = Some(context.waker().clone()),
            },
            None => {
                waiters.push(Some(context.waker().clone()));
                this.slot = Some(waiters.len() - 1);
            }
        }
        Poll::Pending
    }
}

impl Drop for Changed<'_> {
    fn drop(&mut self) {
        let Some(slot) = self.slot else { return };
        if self.signal.generation.get() != self.seen {
            return;
        }
        let mut waiters = self.signal.waiters.borrow_mut();
        waiters[slot] = None;
        while waiters.last().is_some_and(Option::is_none) {
            waiters.pop();
        }
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
    fn a_waiter_holds_one_waker_however_often_polled_and_none_once_dropped() {
        let signal = Signal::default();
        let counter = std::sync::Arc::new(CountingWaker(AtomicU32::new(0)));
        let waker = Waker::from(counter.clone());
        let mut context = Context::from_waker(&waker);
        let seen = signal.generation();
        let mut first = Box::pin(signal.changed(seen));
        let mut second = Box::pin(signal.changed(seen));
        for _ in 0..1_000 {
            assert!(first.as_mut().poll(&mut context).is_pending());
        }
        assert!(second.as_mut().poll(&mut context).is_pending());
        assert_eq!(signal.waiter_count(), 2);
        // The waker itself, `counter`, and one clone per waiter.
        assert_eq!(std::sync::Arc::strong_count(&counter), 4);
        drop(first);
        assert_eq!(signal.waiter_count(), 1);
        // An abandoned wait, as in a timer raced against a stop signal every tick.
        for _ in 0..1_000 {
            let mut abandoned = Box::pin(signal.changed(seen));
            assert!(abandoned.as_mut().poll(&mut context).is_pending());
        }
        assert_eq!(signal.waiter_count(), 1);
        assert_eq!(std::sync::Arc::strong_count(&counter), 3);
        signal.notify();
        assert_eq!(counter.0.load(Ordering::Relaxed), 1);
        assert!(second.as_mut().poll(&mut context).is_ready());
        drop(second);
        assert_eq!(std::sync::Arc::strong_count(&counter), 2);
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
