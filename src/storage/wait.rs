//! Waiting for a condition on a log's state: a set of wakers woken all at once whenever the state moves,
//! and a cancel-safe future that re-checks its condition on every wake.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use super::{Shared, State};

/// Wakers of the tasks waiting on one log.
///
/// Owned by the core that owns the partition.
#[derive(Default)]
pub(crate) struct Waiters {
    next_key: u64,
    wakers: HashMap<u64, Waker>,
}

impl Waiters {
    fn register(&mut self, key: Option<u64>, waker: &Waker) -> u64 {
        let key = key.unwrap_or_else(|| {
            self.next_key += 1;
            self.next_key
        });
        self.wakers.insert(key, waker.clone());
        key
    }

    fn remove(&mut self, key: u64) {
        self.wakers.remove(&key);
    }

    /// Wakes every waiter; each re-checks its condition and registers again if needed.
    pub(crate) fn wake_all(&mut self) {
        for (_, w) in self.wakers.drain() {
            w.wake();
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.wakers.len()
    }
}

/// Resolves with the first `Some` the condition returns. Dropping it unregisters its waker.
pub(crate) struct WaitUntil<F> {
    shared: Rc<Shared>,
    cond: F,
    key: Option<u64>,
}

impl<F> WaitUntil<F> {
    pub(crate) fn new(shared: Rc<Shared>, cond: F) -> Self {
        WaitUntil {
            shared,
            cond,
            key: None,
        }
    }
}

impl<F, R> Future for WaitUntil<F>
where
    F: Fn(&State) -> Option<R> + Unpin,
{
    type Output = R;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<R> {
        let this = &mut *self;
        let mut st = this.shared.state.borrow_mut();
        if let Some(r) = (this.cond)(&st) {
            if let Some(k) = this.key.take() {
                st.waiters.remove(k);
            }
            return Poll::Ready(r);
        }
        this.key = Some(st.waiters.register(this.key, cx.waker()));
        Poll::Pending
    }
}

impl<F> Drop for WaitUntil<F> {
    fn drop(&mut self) {
        if let Some(k) = self.key.take() {
            if let Ok(mut st) = self.shared.state.try_borrow_mut() {
                st.waiters.remove(k);
            }
        }
    }
}
