//! The groups' next deadlines on one core, earliest first, and the alarm that wakes the coordinator's
//! timer task when a deadline earlier than the one it sleeps until appears.
//!
//! The coordinator sleeps until the earliest deadline ([`Deadlines::earliest`]), fires the groups that
//! are due ([`Deadlines::take_due`], then `Group::tick`) and files each group's next deadline again. An
//! idle core sleeps: nothing polls. The entry of a group may be earlier than its real next deadline (a
//! lower bound, see [`Deadlines::lower`]); waking then finds nothing due in the group and files the exact
//! deadline. It must never be later, or a timer would fire late.
//!
//! Owned by the core that owns the groups (a field of its `GroupCoordinator`). Pure bookkeeping: the
//! clock and the sleep stay with the coordinator.

use std::collections::{BTreeSet, HashMap};
use std::task::{Context, Poll, Waker};

#[derive(Default)]
pub struct Deadlines {
    /// (deadline, group) of every group with an armed timer.
    queue: BTreeSet<(i64, String)>,
    /// Each filed group's deadline in `queue`.
    by_group: HashMap<String, i64>,
    /// The deadline the timer task sleeps until; `None` while it is awake.
    sleeping_until: Option<i64>,
    rung: bool,
    waker: Option<Waker>,
}

impl Deadlines {
    /// Files the group's next deadline exactly (`None`: no timer armed).
    pub fn set(&mut self, group: &str, at: Option<i64>) {
        if let Some(old) = self.by_group.remove(group) {
            self.queue.remove(&(old, group.to_string()));
        }
        if let Some(at) = at {
            self.file(group, at);
        }
    }

    /// Files `at` for the group unless an earlier deadline is filed: an operation that armed one timer
    /// at `at` and moved no other timer earlier.
    pub fn lower(&mut self, group: &str, at: i64) {
        match self.by_group.get(group) {
            Some(&filed) if filed <= at => {}
            _ => self.set(group, Some(at)),
        }
    }

    fn file(&mut self, group: &str, at: i64) {
        self.by_group.insert(group.to_string(), at);
        self.queue.insert((at, group.to_string()));
        if self.sleeping_until.is_some_and(|t| at < t) {
            self.rung = true;
            if let Some(w) = self.waker.take() {
                w.wake();
            }
        }
    }

    /// Removes and returns the groups whose deadline is at or before `now`, earliest first.
    pub fn take_due(&mut self, now: i64) -> Vec<String> {
        let mut due = Vec::new();
        while let Some((at, _)) = self.queue.first() {
            if *at > now {
                break;
            }
            let (_, group) = self.queue.pop_first().expect("just seen");
            self.by_group.remove(&group);
            due.push(group);
        }
        due
    }

    /// The earliest filed deadline.
    pub fn earliest(&self) -> Option<i64> {
        self.queue.first().map(|(at, _)| *at)
    }

    /// The timer task goes to sleep until `at`: an earlier deadline filed meanwhile rings the alarm.
    pub fn sleep_until(&mut self, at: i64) {
        self.sleeping_until = Some(at);
        self.rung = false;
    }

    /// The timer task woke up.
    pub fn awake(&mut self) {
        self.sleeping_until = None;
        self.rung = false;
        self.waker = None;
    }

    /// Ready once an earlier deadline was filed since [`Deadlines::sleep_until`].
    pub fn poll_alarm(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.rung {
            Poll::Ready(())
        } else {
            self.waker = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    #[cfg(test)]
    fn filed(&self) -> usize {
        assert_eq!(self.queue.len(), self.by_group.len());
        self.queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn due_groups_come_out_earliest_first() {
        let mut d = Deadlines::default();
        d.set("b", Some(20));
        d.set("a", Some(10));
        d.set("c", Some(30));
        d.set("c", None);
        d.set("b", Some(15));
        assert_eq!(d.earliest(), Some(10));
        assert_eq!(d.take_due(15), vec!["a".to_string(), "b".to_string()]);
        assert_eq!(d.take_due(100), Vec::<String>::new());
        assert_eq!(d.filed(), 0);
    }

    #[test]
    fn lower_only_moves_a_deadline_earlier() {
        let mut d = Deadlines::default();
        d.lower("g", 50);
        d.lower("g", 70);
        assert_eq!(d.earliest(), Some(50));
        d.lower("g", 40);
        assert_eq!(d.earliest(), Some(40));
        assert_eq!(d.filed(), 1);
    }

    #[test]
    fn an_earlier_deadline_rings_the_sleeping_task() {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let mut d = Deadlines::default();
        d.set("a", Some(100));
        d.sleep_until(100);
        assert!(d.poll_alarm(&mut cx).is_pending());
        d.set("b", Some(150));
        assert_eq!(count.0.load(Ordering::SeqCst), 0, "later: no wake-up");
        d.set("c", Some(90));
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert!(d.poll_alarm(&mut cx).is_ready());
        d.awake();
        d.set("d", Some(1));
        assert!(d.poll_alarm(&mut cx).is_pending(), "awake: nothing to ring");
    }
}
