//! Single-threaded synchronisation helpers for code running inside one shard's executor.
//!
//! Runs on: any shard. Nothing here is `Send`; cross-shard communication goes through
//! `router`, never through these types.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// Wakes every waiter when something happened (new data appended, shutdown requested).
///
/// A waiter captures the generation when it is created and completes once the generation
/// has moved on, so a notification between "check" and "wait" is never lost.
#[derive(Default)]
pub struct Notify {
    generation: Cell<u64>,
    waiters: RefCell<Vec<Waker>>,
}

impl Notify {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn notify_all(&self) {
        self.generation.set(self.generation.get().wrapping_add(1));
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        for waker in waiters {
            waker.wake();
        }
    }

    /// A future that completes at the next `notify_all` after this call.
    pub fn notified(&self) -> Notified<'_> {
        Notified {
            notify: self,
            generation: self.generation.get(),
        }
    }

    pub fn generation(&self) -> u64 {
        self.generation.get()
    }
}

pub struct Notified<'a> {
    notify: &'a Notify,
    generation: u64,
}

impl Future for Notified<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.notify.generation.get() != self.generation {
            return Poll::Ready(());
        }
        let mut waiters = self.notify.waiters.borrow_mut();
        // Bounded by the number of live waiters: each waiter re-registers only when polled,
        // and `notify_all` drains the list. Deduplicate the common re-poll case.
        if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
            waiters.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

/// A one-shot, single-threaded value slot: the receiving half of a cross-shard call.
pub struct OneshotSender<T> {
    slot: Rc<Slot<T>>,
}

pub struct OneshotReceiver<T> {
    slot: Rc<Slot<T>>,
}

struct Slot<T> {
    value: RefCell<Option<T>>,
    closed: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

pub fn oneshot<T>() -> (OneshotSender<T>, OneshotReceiver<T>) {
    let slot = Rc::new(Slot {
        value: RefCell::new(None),
        closed: Cell::new(false),
        waker: RefCell::new(None),
    });
    (
        OneshotSender { slot: slot.clone() },
        OneshotReceiver { slot },
    )
}

impl<T> OneshotSender<T> {
    pub fn send(self, value: T) {
        *self.slot.value.borrow_mut() = Some(value);
        // Drop runs next and wakes the receiver.
    }
}

impl<T> Drop for OneshotSender<T> {
    fn drop(&mut self) {
        self.slot.closed.set(true);
        if let Some(waker) = self.slot.waker.borrow_mut().take() {
            waker.wake();
        }
    }
}

impl<T> Future for OneshotReceiver<T> {
    /// `None` when the sender was dropped without sending.
    type Output = Option<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        if let Some(value) = self.slot.value.borrow_mut().take() {
            return Poll::Ready(Some(value));
        }
        if self.slot.closed.get() {
            return Poll::Ready(None);
        }
        *self.slot.waker.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future;

    // A notification sent after `notified()` was created but before it was polled still
    // completes it: the generation check closes the check-then-wait race of long-poll fetch.
    #[test]
    fn notify_is_not_lost_between_check_and_wait() {
        let notify = Notify::new();
        let waiter = notify.notified();
        notify.notify_all();
        future::block_on(waiter);
        let mut pending = Box::pin(notify.notified());
        assert!(future::block_on(future::poll_once(&mut pending)).is_none());
    }

    // A oneshot delivers its value once; a dropped sender resolves the receiver with None.
    #[test]
    fn oneshot_delivers_or_reports_drop() {
        let (tx, rx) = oneshot();
        tx.send(7u32);
        assert_eq!(future::block_on(rx), Some(7));
        let (tx, rx) = oneshot::<u32>();
        drop(tx);
        assert_eq!(future::block_on(rx), None);
    }
}
