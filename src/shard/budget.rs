//! The response budget of one core: memory of Fetch answers being built or written.

use std::rc::Rc;

use glommio::sync::Semaphore;

use crate::limits;

/// Bytes of responses being built or written on one core: a Fetch charges what it may read before it
/// reads (and reads no more than it got), shrinks the charge to what it read, and the charge is
/// released once the answer is written.
/// While it is spent, this core's connections read no new requests (backpressure), so the memory of
/// answers in flight stays bounded whatever the clients ask for.
///
/// Owned by its core (a thread-local of that core: [`response_budget`]).
pub struct ResponseBudget {
    sem: Semaphore,
    max: u64,
}

thread_local! {
    static RESPONSE_BUDGET: Rc<ResponseBudget> = Rc::new(ResponseBudget {
        sem: Semaphore::new(limits::RESPONSE_BYTES_CORE_MAX),
        max: limits::RESPONSE_BYTES_CORE_MAX,
    });
}

/// This core's response budget.
pub fn response_budget() -> Rc<ResponseBudget> {
    RESPONSE_BUDGET.with(Rc::clone)
}

impl ResponseBudget {
    /// Charges what is free of `bytes`, without waiting: a Fetch then plans its answer within what it
    /// got (its first batch is still returned whole: a consumer always progresses). Never waiting here
    /// means pipelined requests cannot deadlock on each other's charges.
    pub fn take_up_to(self: &Rc<Self>, bytes: usize) -> Charge {
        let units = (bytes as u64).min(self.sem.available());
        let units = match self.sem.try_acquire(units) {
            Ok(true) => units,
            _ => 0,
        };
        Charge {
            budget: self.clone(),
            units,
        }
    }

    /// Bytes charged now.
    pub fn in_use(&self) -> u64 {
        self.max - self.sem.available()
    }

    /// Waits until some of the budget is free.
    pub async fn wait_room(&self) {
        if self.sem.available() == 0 && self.sem.acquire(1).await.is_ok() {
            self.sem.signal(1);
        }
    }
}

/// A charge to a core's [`ResponseBudget`], released on drop.
pub struct Charge {
    budget: Rc<ResponseBudget>,
    units: u64,
}

impl Charge {
    /// Bytes charged.
    pub fn bytes(&self) -> usize {
        self.units as usize
    }

    /// Lowers the charge to `bytes` (what the answer really holds), releasing the rest now.
    pub fn shrink_to(&mut self, bytes: usize) {
        let keep = (bytes as u64).min(self.units);
        self.budget.sem.signal(self.units - keep);
        self.units = keep;
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.sem.signal(self.units);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_budget_charges_what_is_free_and_releases_on_shrink_and_drop() {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .spawn(|| async {
                let budget = response_budget();
                let max = limits::RESPONSE_BYTES_CORE_MAX as usize;
                let mut a = budget.take_up_to(max - 10);
                assert_eq!(a.bytes(), max - 10);
                // Only what is free is charged; a request never waits here.
                let b = budget.take_up_to(100);
                assert_eq!(b.bytes(), 10);
                assert_eq!(budget.in_use(), max as u64);
                a.shrink_to(1000);
                assert_eq!(budget.in_use(), 1010);
                drop(b);
                drop(a);
                assert_eq!(budget.in_use(), 0);
            })
            .expect("executor starts")
            .join()
            .expect("test body completes");
    }
}
