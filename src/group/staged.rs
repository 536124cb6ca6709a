//! Offset writes that are in the log but not yet known durable, and how they become visible.
//!
//! The problem: requests of one connection run concurrently (pipelined), and the wait for a write to be
//! durable wakes its waiters in no particular order. If each OffsetCommit stored its offset in memory
//! when its own wait ended, 50 pipelined commits could leave the 37th visible although the log (and the
//! state after a restart) ends with the 50th.
//!
//! The rule, Kafka's (its coordinator applies pending offset commits only once their append completes,
//! and never lets an older record replace the value of a newer one): the in-memory offsets of a group are
//! always the replay of a durable prefix of its `__consumer_offsets` partition. Concretely:
//!
//! 1. On the group's core, a mutation is validated, appended to the log and staged here in one
//!    synchronous step (no await in between), so log order = staging order = the order the requests
//!    reached that core, which is the order of each connection (see `Shard::send_task`).
//! 2. Staged writes are keyed by their record's log offset. Nothing staged is visible.
//! 3. When any waiter learns that the log is durable up to offset `n`, every staged write below `n` (of
//!    any request: durability is a prefix) is applied, in log-offset order ([`Staged::take_durable`] and
//!    [`apply`]). Applying twice is impossible (they leave the stage), and an older write is never
//!    applied after a newer one for the same key: whoever settles first settles the older ones too.
//! 4. A write whose wait fails (I/O error, disk full, shutdown) is discarded from the stage and never
//!    applied, so a value that did not become durable is never visible; its request gets an error.
//! 5. A read (OffsetFetch) takes its answer when it arrives, from the applied offsets with the staged
//!    writes laid over them ([`Staged::overlay`]): exactly the mutations that arrived before it, none
//!    that came later. It is sent only once those staged writes are durable (if they fail, the read
//!    answers from the durable state instead). Kafka serves one request of a connection at a time, so
//!    there too a fetch sent after a commit sees it, and one sent before a commit does not.
//! 6. DeleteGroups marks the group `Dead` at once; a `Dead` group is one whose deletion is on its way.
//!    Requests after it treat the group as gone, and one that creates the group (a commit, a join)
//!    replaces it with a new group that keeps the applied offsets until the staged tombstones remove
//!    them, so if the deletion fails nothing was lost.
//!
//! Everything here is plain data: the coordinator does the appends and the waiting.

use std::collections::{BTreeMap, HashMap};

use super::records::OffsetValue;
use super::state::{Group, GroupState};

/// One record a mutation wrote, as it will change the group once durable.
#[derive(Clone, Debug, PartialEq)]
pub enum Write {
    /// A committed offset (`Some`) or an offset tombstone (`None`).
    Offset {
        topic: String,
        partition: i32,
        value: Option<OffsetValue>,
    },
    /// The group's tombstone (DeleteGroups, or retention of an empty group without offsets).
    Group,
}

/// The staged writes of one core's groups, by group and log offset.
#[derive(Default, Debug)]
pub struct Staged {
    by_group: HashMap<String, BTreeMap<i64, Write>>,
}

impl Staged {
    /// Stages `writes`, whose records were appended at `first_offset`, `first_offset + 1`, ...
    pub fn stage(&mut self, group: &str, first_offset: i64, writes: Vec<Write>) {
        if writes.is_empty() {
            return;
        }
        let staged = self.by_group.entry(group.to_string()).or_default();
        for (offset, w) in (first_offset..).zip(writes) {
            staged.insert(offset, w);
        }
    }

    /// The log offset of the group's last staged write.
    pub fn last(&self, group: &str) -> Option<i64> {
        self.by_group
            .get(group)
            .and_then(|s| s.keys().next_back().copied())
    }

    /// Whether the group has writes not applied yet.
    pub fn has(&self, group: &str) -> bool {
        self.by_group.contains_key(group)
    }

    /// Removes and returns, in log order, the group's staged writes below `durable_end` (the log is
    /// durable below it).
    pub fn take_durable(&mut self, group: &str, durable_end: i64) -> Vec<Write> {
        let Some(staged) = self.by_group.get_mut(group) else {
            return Vec::new();
        };
        let later = staged.split_off(&durable_end);
        let durable = std::mem::replace(staged, later);
        if staged.is_empty() {
            self.by_group.remove(group);
        }
        durable.into_values().collect()
    }

    /// Drops the writes at `first..=last` (their wait failed): they are never applied.
    pub fn discard(&mut self, group: &str, first: i64, last: i64) {
        let Some(staged) = self.by_group.get_mut(group) else {
            return;
        };
        let keys: Vec<i64> = staged.range(first..=last).map(|(k, _)| *k).collect();
        for k in keys {
            staged.remove(&k);
        }
        if staged.is_empty() {
            self.by_group.remove(group);
        }
    }

    /// Lays the group's staged offset writes over `offsets` (the applied ones), in log order: the
    /// offsets as they will be once everything staged is durable.
    pub fn overlay(&self, group: &str, offsets: &mut BTreeMap<(String, i32), OffsetValue>) {
        for w in self
            .by_group
            .get(group)
            .into_iter()
            .flat_map(|s| s.values())
        {
            if let Write::Offset {
                topic,
                partition,
                value,
            } = w
            {
                let key = (topic.clone(), *partition);
                match value {
                    Some(v) => {
                        offsets.insert(key, v.clone());
                    }
                    None => {
                        offsets.remove(&key);
                    }
                }
            }
        }
    }

    /// The (topic, partition) of every staged offset write of the group (DeleteGroups writes a
    /// tombstone for each, or a commit still on its way would outlive the group in the log).
    pub fn offset_keys(&self, group: &str) -> Vec<(String, i32)> {
        self.by_group
            .get(group)
            .into_iter()
            .flat_map(|s| s.values())
            .filter_map(|w| match w {
                Write::Offset {
                    topic, partition, ..
                } => Some((topic.clone(), *partition)),
                Write::Group => None,
            })
            .collect()
    }
}

/// Applies durable writes of `group_id`, in log order, to the groups of a core.
///
/// An offset creates the group if needed (as replaying the log does). The group tombstone removes a
/// group that is deleted (`Dead`) or still empty with no offsets; a group that came back to life since
/// the tombstone was written (a member joined, a newer commit was applied) stays, as it would after a
/// replay of the log (its later records recreate it).
pub fn apply(groups: &mut HashMap<String, Group>, group_id: &str, writes: Vec<Write>, now: i64) {
    for w in writes {
        match w {
            Write::Offset {
                topic,
                partition,
                value: Some(v),
            } => {
                groups
                    .entry(group_id.to_string())
                    .or_insert_with(|| Group::new(group_id, now))
                    .offsets
                    .insert((topic, partition), v);
            }
            Write::Offset {
                topic,
                partition,
                value: None,
            } => {
                if let Some(g) = groups.get_mut(group_id) {
                    g.offsets.remove(&(topic, partition));
                }
            }
            Write::Group => {
                let gone = groups.get(group_id).is_some_and(|g| {
                    g.state() == GroupState::Dead
                        || (g.state() == GroupState::Empty && g.is_empty() && g.offsets.is_empty())
                });
                if gone {
                    groups.remove(group_id);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(offset: i64) -> Write {
        Write::Offset {
            topic: "t".into(),
            partition: 0,
            value: Some(OffsetValue {
                offset,
                leader_epoch: -1,
                metadata: String::new(),
                commit_timestamp_ms: 0,
            }),
        }
    }

    fn visible(groups: &HashMap<String, Group>) -> Option<i64> {
        groups
            .get("g")
            .and_then(|g| g.offsets.get(&("t".to_string(), 0)))
            .map(|v| v.offset)
    }

    #[test]
    fn waiters_finishing_in_any_order_leave_the_last_write_visible() {
        let mut staged = Staged::default();
        let mut groups = HashMap::new();
        // 50 commits appended at log offsets 100..150, one record each.
        for i in 0..50 {
            staged.stage("g", 100 + i, vec![commit(i + 1)]);
        }
        // The waiter of the 50th commit wakes first: everything below it is durable too.
        apply(&mut groups, "g", staged.take_durable("g", 150), 0);
        assert_eq!(visible(&groups), Some(50));
        // The waiter of the 37th wakes later: nothing is left to apply, nothing goes backwards.
        apply(&mut groups, "g", staged.take_durable("g", 137), 0);
        assert_eq!(visible(&groups), Some(50));
        assert!(!staged.has("g"));
    }

    #[test]
    fn an_older_settle_applies_only_the_prefix() {
        let mut staged = Staged::default();
        let mut groups = HashMap::new();
        for i in 0..3 {
            staged.stage("g", 10 + i, vec![commit(i + 1)]);
        }
        apply(&mut groups, "g", staged.take_durable("g", 12), 0);
        assert_eq!(visible(&groups), Some(2));
        assert_eq!(staged.last("g"), Some(12));
        apply(&mut groups, "g", staged.take_durable("g", 13), 0);
        assert_eq!(visible(&groups), Some(3));
    }

    #[test]
    fn a_failed_write_is_never_applied() {
        let mut staged = Staged::default();
        let mut groups = HashMap::new();
        staged.stage("g", 0, vec![commit(1)]);
        apply(&mut groups, "g", staged.take_durable("g", 1), 0);
        staged.stage("g", 1, vec![commit(2)]);
        staged.discard("g", 1, 1);
        apply(&mut groups, "g", staged.take_durable("g", 5), 0);
        assert_eq!(visible(&groups), Some(1));
        assert!(!staged.has("g"));
    }

    #[test]
    fn tombstones_apply_in_log_order() {
        let mut staged = Staged::default();
        let mut groups = HashMap::new();
        let tombstone = Write::Offset {
            topic: "t".into(),
            partition: 0,
            value: None,
        };
        // commit, delete, commit: the last commit wins.
        staged.stage("g", 0, vec![commit(1)]);
        staged.stage("g", 1, vec![tombstone.clone()]);
        staged.stage("g", 2, vec![commit(3)]);
        assert_eq!(staged.offset_keys("g").len(), 3);
        let mut view = BTreeMap::new();
        staged.overlay("g", &mut view);
        assert_eq!(view.get(&("t".to_string(), 0)).map(|v| v.offset), Some(3));
        apply(&mut groups, "g", staged.take_durable("g", 3), 0);
        assert_eq!(visible(&groups), Some(3));
        // commit then delete: gone.
        staged.stage("g", 3, vec![commit(4), tombstone]);
        apply(&mut groups, "g", staged.take_durable("g", 5), 0);
        assert_eq!(visible(&groups), None);
    }

    #[test]
    fn the_group_tombstone_removes_a_deleted_group_only() {
        let mut groups = HashMap::new();
        let mut g = Group::new("g", 0);
        g.offsets.insert(
            ("t".into(), 0),
            OffsetValue {
                offset: 1,
                leader_epoch: -1,
                metadata: String::new(),
                commit_timestamp_ms: 0,
            },
        );
        groups.insert("g".to_string(), g);
        // Empty but with an offset: not removed by a retention tombstone.
        apply(&mut groups, "g", vec![Write::Group], 0);
        assert!(groups.contains_key("g"));
        // Deleted: removed, offsets with it.
        if let Some(g) = groups.get_mut("g") {
            assert!(g.delete(0).is_ok());
        }
        apply(&mut groups, "g", vec![Write::Group], 0);
        assert!(!groups.contains_key("g"));
    }
}
