//! The classic group protocol as a pure state machine (Kafka's `ClassicGroup` and the classic half of
//! its `GroupMetadataManager`).
//!
//! A [`Group`] is owned by the core that coordinates it. Every operation takes the current time and
//! returns what must happen: an answer now ([`Reply::Now`]), or that the request waits ([`Reply::Wait`])
//! until an [`Effect`] returned by a later operation (or by [`Group::tick`]) answers it. Effects also ask
//! the caller to persist the group. Nothing here sleeps, reads a clock or does I/O, so every timeout path
//! is tested by passing times.
//!
//! States: `Empty` (no members; offsets may still exist) -> `PreparingRebalance` (waiting for members to
//! (re)join) -> `CompletingRebalance` (joined; waiting for the leader's assignment) -> `Stable`. `Dead`
//! once deleted. The protocol is opaque: the group only picks a protocol every member supports and
//! relays metadata and assignments, so eager and cooperative assignors both work.
//!
//! Timers are Kafka's classic-group timers, armed and disarmed at the same moments: one heartbeat timer
//! per member (the session timeout; a member awaiting its JoinGroup or SyncGroup answer satisfies it,
//! a member new to the join phase has the longer new-member join timeout instead), one per member id
//! handed out with MEMBER_ID_REQUIRED, the join timer (the rebalance timeout of the join phase, or the
//! steps of the initial rebalance delay) and the sync timer (members that have not sent SyncGroup a
//! rebalance timeout after the join phase ended are removed, even once the group is Stable).
//! [`Group::next_deadline`] tells the caller when to call [`Group::tick`], which fires every timer due
//! by then (deadline `<= now`), earliest first. The boundary is Kafka's: its timers expire when the
//! clock reaches the deadline and queue the expiry, so a heartbeat handled after that finds the member
//! gone, and one handled before it (even in the same millisecond) saves the member.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;

use super::records::{GroupValue, MemberValue, OffsetValue};
use super::GroupConfig;
use crate::limits;
use crate::protocol::errors;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// The name Kafka's DescribeGroups and ListGroups use.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// One member of the group.
#[derive(Clone, Debug)]
pub struct Member {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    /// Protocols in the member's order of preference, with their metadata.
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    awaiting_join: bool,
    awaiting_sync: bool,
    /// Joined during the current join phase (Kafka's `isNew`): its heartbeat timer is the new-member join
    /// timeout, and awaiting its JoinGroup answer does not satisfy it.
    is_new: bool,
    /// Has not sent SyncGroup since the last join phase ended (Kafka's pending-sync members).
    pending_sync: bool,
    /// The heartbeat timer: at this time the member is removed unless it satisfies it. `None`: disarmed
    /// (it fired while the member awaited an answer; the answer re-arms it).
    session_deadline_ms: Option<i64>,
}

impl Member {
    /// Kafka's `hasSatisfiedHeartbeat`: a member waiting for its JoinGroup or SyncGroup answer needs no
    /// heartbeat, unless it is new to this join phase.
    fn satisfies_heartbeat(&self) -> bool {
        !self.is_new && (self.awaiting_join || self.awaiting_sync)
    }

    fn restart_session(&mut self, now: i64) {
        self.session_deadline_ms = Some(now + self.session_timeout_ms as i64);
    }
}

impl Member {
    fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(n, _)| n == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }
}

/// A JoinGroup request, decoded.
#[derive(Clone, Debug, Default)]
pub struct JoinParams {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// v4+: a new dynamic member first gets MEMBER_ID_REQUIRED with its id (KIP-394).
    pub require_known_member_id: bool,
    /// v9+: a rejoining static leader can be told to keep its assignment (`skip_assignment`).
    pub supports_skip_assignment: bool,
}

/// A JoinGroup answer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct JoinResult {
    pub error: i16,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    pub skip_assignment: bool,
    /// Only for the leader: every member with its metadata for the chosen protocol.
    pub members: Vec<(String, Option<String>, Bytes)>,
}

impl JoinResult {
    pub fn error(error: i16, member_id: &str) -> Self {
        JoinResult {
            error,
            generation: -1,
            member_id: member_id.to_string(),
            ..Default::default()
        }
    }
}

/// A SyncGroup request, decoded.
#[derive(Clone, Debug, Default)]
pub struct SyncParams {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignments: Vec<(String, Bytes)>,
}

/// A SyncGroup answer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SyncResult {
    pub error: i16,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncResult {
    pub fn error(error: i16) -> Self {
        SyncResult {
            error,
            ..Default::default()
        }
    }
}

/// The answer to a request: now, or later through an [`Effect`] for the same member id.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply<T> {
    Now(T),
    /// The request of this member id waits.
    Wait(String),
}

/// Something the caller must do after an operation, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Answer the waiting JoinGroup of `member_id`.
    Join {
        member_id: String,
        result: JoinResult,
    },
    /// Answer the waiting SyncGroup of `member_id`.
    Sync {
        member_id: String,
        result: SyncResult,
    },
    /// Write the group metadata record ([`Group::to_record`]) and wait until it is durable before carrying
    /// out the effects after this one.
    Persist,
}

/// The join timer. When it fires the join phase ends, except during the initial rebalance of an empty
/// group (`group.initial.rebalance.delay.ms`): there it fires after `delay_ms`, and while members keep
/// joining and `remaining_ms` of the members' rebalance timeout is left, it is re-armed for another step
/// (Kafka's `tryCompleteInitialRebalanceElseSchedule`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct JoinTimer {
    at_ms: i64,
    initial: Option<InitialDelay>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct InitialDelay {
    delay_ms: i64,
    remaining_ms: i64,
    /// `group.initial.rebalance.delay.ms`.
    configured_ms: i64,
}

/// A timer that is due.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Timer {
    Pending(String),
    Session(String),
    Join,
    Sync,
}

/// One member to remove in a LeaveGroup.
#[derive(Clone, Debug, Default)]
pub struct LeaveParams {
    pub member_id: String,
    pub instance_id: Option<String>,
}

/// A committed offset kept in memory.
pub type OffsetEntry = OffsetValue;

/// One group. Owned by the core that owns the group's `__consumer_offsets` partition.
#[derive(Clone, Debug)]
pub struct Group {
    pub id: String,
    state: GroupState,
    generation: i32,
    protocol_type: Option<String>,
    protocol_name: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// group.instance.id -> member id of static members.
    static_members: HashMap<String, String>,
    /// Member ids handed out with MEMBER_ID_REQUIRED that have not joined yet, with their expiry.
    pending: HashMap<String, i64>,
    /// The join timer (PreparingRebalance only).
    join_timer: Option<JoinTimer>,
    /// The sync timer: members still pending sync at this time are removed.
    sync_deadline_ms: Option<i64>,
    /// A member joined during the initial rebalance since its timer was armed: the delay is extended.
    /// Like Kafka, only an extension clears it.
    new_member_added: bool,
    /// When the state last changed (DescribeGroups, retention of empty groups).
    pub state_timestamp_ms: i64,
    /// Committed offsets by (topic, partition).
    pub offsets: BTreeMap<(String, i32), OffsetEntry>,
}

impl Group {
    pub fn new(id: &str, now: i64) -> Group {
        Group {
            id: id.to_string(),
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol_name: None,
            leader: None,
            members: BTreeMap::new(),
            static_members: HashMap::new(),
            pending: HashMap::new(),
            join_timer: None,
            sync_deadline_ms: None,
            new_member_added: false,
            state_timestamp_ms: now,
            offsets: BTreeMap::new(),
        }
    }

    pub fn state(&self) -> GroupState {
        self.state
    }
    pub fn generation(&self) -> i32 {
        self.generation
    }
    pub fn protocol_type(&self) -> Option<&str> {
        self.protocol_type.as_deref()
    }
    pub fn protocol_name(&self) -> Option<&str> {
        self.protocol_name.as_deref()
    }
    pub fn leader(&self) -> Option<&str> {
        self.leader.as_deref()
    }
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }
    pub fn member(&self, id: &str) -> Option<&Member> {
        self.members.get(id)
    }
    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && self.pending.is_empty()
    }

    fn set_state(&mut self, state: GroupState, now: i64) {
        self.state = state;
        self.state_timestamp_ms = now;
    }

    /// The member's metadata for the chosen protocol (DescribeGroups, the stored subscription).
    pub fn member_metadata(&self, m: &Member) -> Bytes {
        match &self.protocol_name {
            Some(p) => m.metadata_for(p),
            None => Bytes::new(),
        }
    }

    // ------------------------------------------------------------ protocol selection

    /// Protocols every member (and, if given, the joining one) supports.
    fn candidates(&self, joining: Option<(&str, &[(String, Bytes)])>) -> Vec<String> {
        let mut sets: Vec<Vec<&str>> = self
            .members
            .values()
            .filter(|m| joining.is_none_or(|(id, _)| id != m.member_id))
            .map(|m| m.protocols.iter().map(|(n, _)| n.as_str()).collect())
            .collect();
        if let Some((_, protos)) = joining {
            sets.push(protos.iter().map(|(n, _)| n.as_str()).collect());
        }
        let Some(first) = sets.first() else {
            return Vec::new();
        };
        first
            .iter()
            .filter(|p| sets.iter().all(|s| s.contains(p)))
            .map(|p| p.to_string())
            .collect()
    }

    fn supports(&self, p: &JoinParams) -> bool {
        if p.protocol_type.is_empty() || p.protocols.is_empty() {
            return false;
        }
        if self.members.is_empty() {
            return true;
        }
        self.protocol_type.as_deref() == Some(p.protocol_type.as_str())
            && !self
                .candidates(Some((p.member_id.as_str(), &p.protocols)))
                .is_empty()
    }

    /// Every member votes for its most preferred candidate; the most votes wins (ties: first candidate).
    fn select_protocol(&self) -> Option<String> {
        let candidates = self.candidates(None);
        let mut votes: Vec<(String, usize)> = candidates.iter().map(|c| (c.clone(), 0)).collect();
        for m in self.members.values() {
            if let Some((name, _)) = m.protocols.iter().find(|(n, _)| candidates.contains(n)) {
                if let Some(v) = votes.iter_mut().find(|(c, _)| c == name) {
                    v.1 += 1;
                }
            }
        }
        let max = votes.iter().map(|(_, n)| *n).max()?;
        votes.into_iter().find(|(_, n)| *n == max).map(|(c, _)| c)
    }

    // ------------------------------------------------------------ join

    pub fn join(
        &mut self,
        p: JoinParams,
        now: i64,
        cfg: &GroupConfig,
    ) -> (Reply<JoinResult>, Vec<Effect>) {
        let mut fx = Vec::new();
        let err = |code: i16, id: &str| (Reply::Now(JoinResult::error(code, id)), Vec::new());
        if self.state == GroupState::Dead {
            return err(errors::COORDINATOR_NOT_AVAILABLE, &p.member_id);
        }
        if p.session_timeout_ms < cfg.min_session_timeout_ms
            || p.session_timeout_ms > cfg.max_session_timeout_ms
        {
            return err(errors::INVALID_SESSION_TIMEOUT, &p.member_id);
        }
        if !self.supports(&p) {
            return err(errors::INCONSISTENT_GROUP_PROTOCOL, &p.member_id);
        }
        let full = self.members.len() + self.pending.len() >= cfg.max_size;

        if p.member_id.is_empty() {
            if let Some(instance) = p.instance_id.clone() {
                if let Some(old) = self.static_members.get(&instance).cloned() {
                    return self.replace_static_member(&old, p, now);
                }
                if full {
                    return err(errors::GROUP_MAX_SIZE_REACHED, "");
                }
                let id = format!("{instance}-{}", uuid::Uuid::new_v4());
                self.add_member(id.clone(), p, now, cfg, &mut fx);
                return (Reply::Wait(id), fx);
            }
            if full {
                return err(errors::GROUP_MAX_SIZE_REACHED, "");
            }
            let id = format!("{}-{}", p.client_id, uuid::Uuid::new_v4());
            if p.require_known_member_id {
                self.pending
                    .insert(id.clone(), now + p.session_timeout_ms as i64);
                return err(errors::MEMBER_ID_REQUIRED, &id);
            }
            self.add_member(id.clone(), p, now, cfg, &mut fx);
            return (Reply::Wait(id), fx);
        }

        let id = p.member_id.clone();
        if self.pending.remove(&id).is_some() {
            if self.members.len() >= cfg.max_size {
                return err(errors::GROUP_MAX_SIZE_REACHED, &id);
            }
            self.add_member(id.clone(), p, now, cfg, &mut fx);
            return (Reply::Wait(id), fx);
        }
        if let Err(code) = self.validate_member(&id, p.instance_id.as_deref()) {
            return err(code, &id);
        }
        let member = &self.members[&id];
        let same_protocols = member.protocols == p.protocols;
        let is_leader = self.leader.as_deref() == Some(id.as_str());
        match self.state {
            GroupState::PreparingRebalance => {
                self.update_member(&id, p);
                self.maybe_complete_join_phase(now, &mut fx);
                (Reply::Wait(id), fx)
            }
            GroupState::CompletingRebalance | GroupState::Stable
                if same_protocols && !(self.state == GroupState::Stable && is_leader) =>
            {
                // A resend (e.g. the response was lost): answer with the current generation. Like
                // Kafka, this does not count as a heartbeat.
                (Reply::Now(self.join_result(&id, false)), fx)
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                self.update_member(&id, p);
                self.prepare_rebalance(now, &mut fx);
                (Reply::Wait(id), fx)
            }
            GroupState::Empty | GroupState::Dead => err(errors::UNKNOWN_MEMBER_ID, &id),
        }
    }

    /// UNKNOWN_MEMBER_ID / FENCED_INSTANCE_ID checks of a request naming `member_id`.
    fn validate_member(&self, member_id: &str, instance_id: Option<&str>) -> Result<(), i16> {
        if let Some(instance) = instance_id {
            match self.static_members.get(instance) {
                Some(current) if current != member_id => return Err(errors::FENCED_INSTANCE_ID),
                None if self.members.contains_key(member_id) => {
                    return Err(errors::FENCED_INSTANCE_ID)
                }
                _ => {}
            }
        }
        match self.members.get(member_id) {
            None => Err(errors::UNKNOWN_MEMBER_ID),
            Some(m) if m.instance_id.is_some() && m.instance_id.as_deref() != instance_id => {
                Err(errors::FENCED_INSTANCE_ID)
            }
            Some(_) => Ok(()),
        }
    }

    fn join_result(&self, member_id: &str, skip_assignment: bool) -> JoinResult {
        let is_leader = self.leader.as_deref() == Some(member_id);
        let protocol = self.protocol_name.clone().unwrap_or_default();
        JoinResult {
            error: errors::NONE,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            member_id: member_id.to_string(),
            skip_assignment,
            members: if is_leader {
                self.members
                    .values()
                    .map(|m| {
                        (
                            m.member_id.clone(),
                            m.instance_id.clone(),
                            m.metadata_for(&protocol),
                        )
                    })
                    .collect()
            } else {
                Vec::new()
            },
        }
    }

    fn add_member(
        &mut self,
        id: String,
        p: JoinParams,
        now: i64,
        cfg: &GroupConfig,
        fx: &mut Vec<Effect>,
    ) {
        if self.members.is_empty() {
            self.protocol_type = Some(p.protocol_type.clone());
        }
        if let Some(instance) = &p.instance_id {
            self.static_members.insert(instance.clone(), id.clone());
        }
        if self.in_initial_rebalance() {
            self.new_member_added = true;
        }
        let member = Member {
            member_id: id.clone(),
            instance_id: p.instance_id.clone(),
            client_id: p.client_id,
            client_host: p.client_host,
            rebalance_timeout_ms: p.rebalance_timeout_ms,
            session_timeout_ms: p.session_timeout_ms,
            protocols: p.protocols,
            assignment: Bytes::new(),
            awaiting_join: true,
            awaiting_sync: false,
            is_new: true,
            pending_sync: false,
            // Its client cannot heartbeat before its JoinGroup is answered (Kafka's new-member join
            // timeout replaces the session timeout until then).
            session_deadline_ms: Some(now + limits::GROUP_NEW_MEMBER_JOIN_TIMEOUT_MS),
        };
        self.members.insert(id.clone(), member);
        if self.leader.is_none() {
            self.leader = Some(id);
        }
        if self.state == GroupState::Empty {
            self.start_initial_rebalance(now, cfg.initial_rebalance_delay_ms, fx);
        } else {
            self.prepare_rebalance_or_complete_join(now, fx);
        }
    }

    /// A rejoin of a known member. Like Kafka, it does not restart the member's heartbeat timer: a member
    /// awaiting its JoinGroup answer satisfies it, and the end of the join phase restarts it.
    fn update_member(&mut self, id: &str, p: JoinParams) {
        let m = self.members.get_mut(id).expect("member exists");
        m.protocols = p.protocols;
        m.rebalance_timeout_ms = p.rebalance_timeout_ms;
        m.session_timeout_ms = p.session_timeout_ms;
        m.client_id = p.client_id;
        m.client_host = p.client_host;
        m.awaiting_join = true;
    }

    /// KIP-345: a static member rejoined with an empty member id. It takes over its old member id's place
    /// (the old id is fenced); a stable group with unchanged protocols does not rebalance.
    fn replace_static_member(
        &mut self,
        old_id: &str,
        p: JoinParams,
        now: i64,
    ) -> (Reply<JoinResult>, Vec<Effect>) {
        let mut fx = Vec::new();
        let instance = p.instance_id.clone().expect("static member");
        let mut member = self.members.remove(old_id).expect("static member exists");
        if member.awaiting_join {
            fx.push(Effect::Join {
                member_id: old_id.to_string(),
                result: JoinResult::error(errors::FENCED_INSTANCE_ID, old_id),
            });
        }
        if member.awaiting_sync {
            fx.push(Effect::Sync {
                member_id: old_id.to_string(),
                result: SyncResult::error(errors::FENCED_INSTANCE_ID),
            });
        }
        let new_id = format!("{instance}-{}", uuid::Uuid::new_v4());
        let old_protocols = std::mem::replace(&mut member.protocols, p.protocols.clone());
        member.member_id = new_id.clone();
        member.client_id = p.client_id.clone();
        member.client_host = p.client_host.clone();
        member.awaiting_join = false;
        member.awaiting_sync = false;
        // Kafka restarts the heartbeat timer of the new member id with the session timeout the member
        // had before this request.
        member.restart_session(now);
        self.members.insert(new_id.clone(), member);
        self.static_members.insert(instance, new_id.clone());
        if self.leader.as_deref() == Some(old_id) {
            self.leader = Some(new_id.clone());
        }
        // Kafka rebalances a stable group only if the chosen protocol would change (the metadata of a
        // restarted consumer differs anyway: it no longer owns partitions), or if the member is the
        // leader and its client cannot be told to skip the assignment.
        let is_leader = self.leader.as_deref() == Some(new_id.as_str());
        let keep = self.select_protocol() == self.protocol_name
            && (!is_leader || p.supports_skip_assignment);
        if !keep {
            self.members
                .get_mut(&new_id)
                .expect("just inserted")
                .protocols = old_protocols;
        }
        match self.state {
            GroupState::Stable if keep => {
                let m = self.members.get_mut(&new_id).expect("just inserted");
                m.rebalance_timeout_ms = p.rebalance_timeout_ms;
                m.session_timeout_ms = p.session_timeout_ms;
                // The stored member id changes: persist before answering.
                fx.push(Effect::Persist);
                fx.push(Effect::Join {
                    member_id: new_id.clone(),
                    result: self.join_result(&new_id, is_leader),
                });
                (Reply::Wait(new_id), fx)
            }
            GroupState::PreparingRebalance => {
                self.update_member(&new_id, p);
                self.maybe_complete_join_phase(now, &mut fx);
                (Reply::Wait(new_id), fx)
            }
            _ => {
                self.update_member(&new_id, p);
                self.prepare_rebalance_or_complete_join(now, &mut fx);
                (Reply::Wait(new_id), fx)
            }
        }
    }

    /// Kafka's `rebalanceTimeoutMs` of the group: the largest of its members'.
    fn max_rebalance_timeout_ms(&self) -> i64 {
        self.members
            .values()
            .map(|m| m.rebalance_timeout_ms.max(0) as i64)
            .max()
            .unwrap_or(0)
    }

    /// The group is in the initial rebalance of an empty group (its join timer steps through the delay).
    fn in_initial_rebalance(&self) -> bool {
        self.state == GroupState::PreparingRebalance
            && self.join_timer.is_some_and(|t| t.initial.is_some())
    }

    /// Every member awaits its JoinGroup answer and no member id handed out is outstanding.
    fn all_joined(&self) -> bool {
        self.members.values().all(|m| m.awaiting_join) && self.pending.is_empty()
    }

    /// Kafka's `maybePrepareRebalanceOrCompleteJoin`.
    fn prepare_rebalance_or_complete_join(&mut self, now: i64, fx: &mut Vec<Effect>) {
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => self.prepare_rebalance(now, fx),
            _ => self.maybe_complete_join_phase(now, fx),
        }
    }

    /// The first rebalance of an empty group waits `delay_ms` for more members, longer while they keep
    /// coming (see [`JoinTimer`]).
    fn start_initial_rebalance(&mut self, now: i64, delay_ms: i64, fx: &mut Vec<Effect>) {
        assert_eq!(self.state, GroupState::Empty);
        self.sync_deadline_ms = None;
        let delay_ms = delay_ms.max(0);
        self.join_timer = Some(JoinTimer {
            at_ms: now + delay_ms,
            initial: Some(InitialDelay {
                delay_ms,
                remaining_ms: (self.max_rebalance_timeout_ms() - delay_ms).max(0),
                configured_ms: delay_ms,
            }),
        });
        self.set_state(GroupState::PreparingRebalance, now);
        if delay_ms == 0 {
            // A timer of no time fires at once.
            self.fire_join_timer(now, fx);
        }
    }

    /// Starts a rebalance of a group that has members: the assignment being collected is void, and the
    /// join phase ends when everyone rejoined or at the join timer.
    fn prepare_rebalance(&mut self, now: i64, fx: &mut Vec<Effect>) {
        assert!(matches!(
            self.state,
            GroupState::Stable | GroupState::CompletingRebalance
        ));
        if self.state == GroupState::CompletingRebalance {
            // Members waiting in SyncGroup must rejoin; their answer restarts their heartbeat timer.
            for m in self.members.values_mut() {
                if m.awaiting_sync {
                    m.awaiting_sync = false;
                    m.restart_session(now);
                    fx.push(Effect::Sync {
                        member_id: m.member_id.clone(),
                        result: SyncResult::error(errors::REBALANCE_IN_PROGRESS),
                    });
                }
                m.assignment = Bytes::new();
            }
        }
        self.sync_deadline_ms = None;
        for m in self.members.values_mut() {
            m.pending_sync = false;
        }
        self.set_state(GroupState::PreparingRebalance, now);
        if self.all_joined() {
            self.complete_join(now, fx);
        } else {
            self.join_timer = Some(JoinTimer {
                at_ms: now + self.max_rebalance_timeout_ms(),
                initial: None,
            });
        }
    }

    /// Ends the join phase early once every member has rejoined (never the initial rebalance: only its
    /// timer ends it).
    fn maybe_complete_join_phase(&mut self, now: i64, fx: &mut Vec<Effect>) {
        if self.state == GroupState::PreparingRebalance
            && !self.in_initial_rebalance()
            && self.all_joined()
        {
            self.complete_join(now, fx);
        }
    }

    /// Ends the join phase: dynamic members that did not rejoin are removed (static ones stay: they may
    /// be restarting), the generation advances and every member is expected to sync within the
    /// rebalance timeout. If no member rejoined, the phase waits another rebalance timeout.
    fn complete_join(&mut self, now: i64, fx: &mut Vec<Effect>) {
        self.join_timer = None;
        let gone: Vec<String> = self
            .members
            .values()
            .filter(|m| !m.awaiting_join && m.instance_id.is_none())
            .map(|m| m.member_id.clone())
            .collect();
        for id in gone {
            self.drop_member(&id, fx);
        }
        if !self.elect_joined_leader() && !self.members.is_empty() {
            self.join_timer = Some(JoinTimer {
                at_ms: now + self.max_rebalance_timeout_ms(),
                initial: None,
            });
            return;
        }
        self.generation += 1;
        if self.members.is_empty() {
            self.protocol_name = None;
            self.set_state(GroupState::Empty, now);
            fx.push(Effect::Persist);
            return;
        }
        self.protocol_name = self.select_protocol();
        self.set_state(GroupState::CompletingRebalance, now);
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let result = self.join_result(&id, false);
            let m = self.members.get_mut(&id).expect("listed");
            let answer = std::mem::replace(&mut m.awaiting_join, false);
            m.is_new = false;
            m.pending_sync = true;
            m.restart_session(now);
            if answer {
                fx.push(Effect::Join {
                    member_id: id,
                    result,
                });
            }
        }
        self.sync_deadline_ms = Some(now + self.max_rebalance_timeout_ms());
    }

    /// Kafka's `maybeElectNewJoinedLeader`: keeps the leader if it rejoined, else makes a member that
    /// rejoined the leader. False if nobody rejoined (or there is no leader).
    fn elect_joined_leader(&mut self) -> bool {
        let Some(leader) = self.leader.as_deref() else {
            return false;
        };
        if self.members.get(leader).is_some_and(|m| m.awaiting_join) {
            return true;
        }
        match self.members.values().find(|m| m.awaiting_join) {
            Some(m) => {
                self.leader = Some(m.member_id.clone());
                true
            }
            None => false,
        }
    }

    /// Removes a member without triggering a rebalance; answers its waiting requests.
    fn drop_member(&mut self, id: &str, fx: &mut Vec<Effect>) {
        let Some(m) = self.members.remove(id) else {
            return;
        };
        if let Some(instance) = &m.instance_id {
            if self.static_members.get(instance).map(String::as_str) == Some(id) {
                self.static_members.remove(instance);
            }
        }
        if m.awaiting_join {
            fx.push(Effect::Join {
                member_id: id.to_string(),
                result: JoinResult::error(errors::UNKNOWN_MEMBER_ID, id),
            });
        }
        if m.awaiting_sync {
            fx.push(Effect::Sync {
                member_id: id.to_string(),
                result: SyncResult::error(errors::UNKNOWN_MEMBER_ID),
            });
        }
        if self.leader.as_deref() == Some(id) {
            self.leader = self.members.keys().next().cloned();
        }
        if self.sync_deadline_ms.is_some() && !self.members.values().any(|m| m.pending_sync) {
            self.sync_deadline_ms = None;
        }
    }

    // ------------------------------------------------------------ sync, heartbeat, leave

    pub fn sync(&mut self, p: SyncParams, now: i64) -> (Reply<SyncResult>, Vec<Effect>) {
        let mut fx = Vec::new();
        let err = |code: i16| (Reply::Now(SyncResult::error(code)), Vec::new());
        if self.state == GroupState::Dead {
            return err(errors::COORDINATOR_NOT_AVAILABLE);
        }
        if let Err(code) = self.validate_member(&p.member_id, p.instance_id.as_deref()) {
            return err(code);
        }
        if p.generation != self.generation {
            return err(errors::ILLEGAL_GENERATION);
        }
        if p.protocol_type
            .as_ref()
            .is_some_and(|t| Some(t) != self.protocol_type.as_ref())
            || p.protocol_name
                .as_ref()
                .is_some_and(|n| Some(n) != self.protocol_name.as_ref())
        {
            return err(errors::INCONSISTENT_GROUP_PROTOCOL);
        }
        let id = p.member_id.clone();
        match self.state {
            GroupState::Empty | GroupState::Dead => err(errors::UNKNOWN_MEMBER_ID),
            GroupState::PreparingRebalance => err(errors::REBALANCE_IN_PROGRESS),
            GroupState::CompletingRebalance => {
                let m = self.members.get_mut(&id).expect("validated");
                m.awaiting_sync = true;
                self.synced(&id);
                if self.leader.as_deref() == Some(id.as_str()) {
                    let mut given: HashMap<String, Bytes> = p.assignments.into_iter().collect();
                    for m in self.members.values_mut() {
                        m.assignment = given.remove(&m.member_id).unwrap_or_default();
                    }
                    self.set_state(GroupState::Stable, now);
                    fx.push(Effect::Persist);
                    let (ptype, pname) = (self.protocol_type.clone(), self.protocol_name.clone());
                    for m in self.members.values_mut() {
                        if m.awaiting_sync {
                            // The answer restarts the member's heartbeat timer.
                            m.awaiting_sync = false;
                            m.restart_session(now);
                            fx.push(Effect::Sync {
                                member_id: m.member_id.clone(),
                                result: SyncResult {
                                    error: errors::NONE,
                                    protocol_type: ptype.clone(),
                                    protocol_name: pname.clone(),
                                    assignment: m.assignment.clone(),
                                },
                            });
                        }
                    }
                }
                (Reply::Wait(id), fx)
            }
            GroupState::Stable => {
                self.synced(&id);
                let m = &self.members[&id];
                (
                    Reply::Now(SyncResult {
                        error: errors::NONE,
                        protocol_type: self.protocol_type.clone(),
                        protocol_name: self.protocol_name.clone(),
                        assignment: m.assignment.clone(),
                    }),
                    fx,
                )
            }
        }
    }

    /// The member sent SyncGroup: it is no longer pending sync; the sync timer stops once nobody is.
    fn synced(&mut self, id: &str) {
        if let Some(m) = self.members.get_mut(id) {
            m.pending_sync = false;
        }
        if !self.members.values().any(|m| m.pending_sync) {
            self.sync_deadline_ms = None;
        }
    }

    pub fn heartbeat(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now: i64,
    ) -> i16 {
        match self.state {
            GroupState::Dead => return errors::COORDINATOR_NOT_AVAILABLE,
            GroupState::Empty => return errors::UNKNOWN_MEMBER_ID,
            _ => {}
        }
        if let Err(code) = self.validate_member(member_id, instance_id) {
            return code;
        }
        if generation != self.generation {
            return errors::ILLEGAL_GENERATION;
        }
        self.members
            .get_mut(member_id)
            .expect("validated")
            .restart_session(now);
        if self.state == GroupState::PreparingRebalance {
            errors::REBALANCE_IN_PROGRESS
        } else {
            errors::NONE
        }
    }

    /// Removes the named members; one error code per input, in order. The group then rebalances (or
    /// ends its join phase) once, as Kafka does after a LeaveGroup.
    pub fn leave(&mut self, who: &[LeaveParams], now: i64) -> (Vec<i16>, Vec<Effect>) {
        let mut fx = Vec::new();
        if self.state == GroupState::Dead {
            return (vec![errors::COORDINATOR_NOT_AVAILABLE; who.len()], fx);
        }
        let mut codes = Vec::with_capacity(who.len());
        for l in who {
            let code = match &l.instance_id {
                Some(instance) => match self.static_members.get(instance).cloned() {
                    None => errors::UNKNOWN_MEMBER_ID,
                    Some(current) if !l.member_id.is_empty() && current != l.member_id => {
                        errors::FENCED_INSTANCE_ID
                    }
                    Some(current) => {
                        self.drop_member(&current, &mut fx);
                        errors::NONE
                    }
                },
                None if self.pending.remove(&l.member_id).is_some() => errors::NONE,
                None if self.members.contains_key(&l.member_id) => {
                    self.drop_member(&l.member_id, &mut fx);
                    errors::NONE
                }
                None => errors::UNKNOWN_MEMBER_ID,
            };
            codes.push(code);
        }
        if codes.contains(&errors::NONE) {
            self.prepare_rebalance_or_complete_join(now, &mut fx);
        }
        (codes, fx)
    }

    // ------------------------------------------------------------ timers

    /// The earliest armed timer: (deadline, timer).
    fn earliest_timer(&self) -> Option<(i64, Timer)> {
        let pending = self
            .pending
            .iter()
            .map(|(id, &at)| (at, Timer::Pending(id.clone())));
        let sessions = self
            .members
            .values()
            .filter_map(|m| Some((m.session_deadline_ms?, Timer::Session(m.member_id.clone()))));
        let join = self.join_timer.map(|t| (t.at_ms, Timer::Join));
        let sync = self.sync_deadline_ms.map(|at| (at, Timer::Sync));
        pending
            .chain(sessions)
            .chain(join)
            .chain(sync)
            .min_by_key(|(at, _)| *at)
    }

    /// The heartbeat timer of one member (what a heartbeat or an offset commit of it arms).
    pub fn member_deadline(&self, member_id: &str) -> Option<i64> {
        self.members.get(member_id)?.session_deadline_ms
    }

    /// When [`Group::tick`] has something to do next; `None` while no timer is armed.
    pub fn next_deadline(&self) -> Option<i64> {
        self.earliest_timer().map(|(at, _)| at)
    }

    /// Fires every timer due by `now` (deadline `<= now`), earliest first. A timer that a firing re-arms
    /// for `now` or earlier waits for the next call, so that one call does bounded work.
    pub fn tick(&mut self, now: i64) -> Vec<Effect> {
        let mut fx = Vec::new();
        let mut budget = self.members.len() + self.pending.len() + 2;
        while budget > 0 {
            let Some((at, timer)) = self.earliest_timer() else {
                break;
            };
            if at > now {
                break;
            }
            budget -= 1;
            match timer {
                Timer::Pending(id) => self.fire_pending(&id, now, &mut fx),
                Timer::Session(id) => self.fire_session(&id, now, &mut fx),
                Timer::Join => self.fire_join_timer(now, &mut fx),
                Timer::Sync => self.fire_sync_timer(now, &mut fx),
            }
        }
        fx
    }

    /// A member id handed out with MEMBER_ID_REQUIRED was not used in time.
    fn fire_pending(&mut self, id: &str, now: i64, fx: &mut Vec<Effect>) {
        self.pending.remove(id);
        if self.state == GroupState::PreparingRebalance && self.all_joined() {
            self.complete_join(now, fx);
        }
    }

    /// Kafka's `expireClassicGroupMemberHeartbeat`.
    fn fire_session(&mut self, id: &str, now: i64, fx: &mut Vec<Effect>) {
        let m = self.members.get_mut(id).expect("timer of a member");
        m.session_deadline_ms = None;
        if m.satisfies_heartbeat() {
            return;
        }
        self.drop_member(id, fx);
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => self.prepare_rebalance(now, fx),
            GroupState::PreparingRebalance if self.all_joined() => self.complete_join(now, fx),
            _ => {}
        }
    }

    fn fire_join_timer(&mut self, now: i64, fx: &mut Vec<Effect>) {
        let Some(timer) = self.join_timer.take() else {
            return;
        };
        match timer.initial {
            Some(d) if self.new_member_added && d.remaining_ms != 0 => {
                // Members are still arriving: wait one more step.
                self.new_member_added = false;
                let delay_ms = d.configured_ms.min(d.remaining_ms);
                self.join_timer = Some(JoinTimer {
                    at_ms: now + delay_ms,
                    initial: Some(InitialDelay {
                        delay_ms,
                        remaining_ms: (d.remaining_ms - d.delay_ms).max(0),
                        configured_ms: d.configured_ms,
                    }),
                });
            }
            _ => self.complete_join(now, fx),
        }
    }

    /// Kafka's `expirePendingSync`: members that have not sent SyncGroup since the join phase ended are
    /// removed, and the group rebalances.
    fn fire_sync_timer(&mut self, now: i64, fx: &mut Vec<Effect>) {
        self.sync_deadline_ms = None;
        if !matches!(
            self.state,
            GroupState::CompletingRebalance | GroupState::Stable
        ) {
            return;
        }
        let late: Vec<String> = self
            .members
            .values()
            .filter(|m| m.pending_sync)
            .map(|m| m.member_id.clone())
            .collect();
        if late.is_empty() {
            return;
        }
        for id in late {
            self.drop_member(&id, fx);
        }
        self.prepare_rebalance(now, fx);
    }

    // ------------------------------------------------------------ offsets

    /// May this request commit offsets? Kafka's `ClassicGroup.validateOffsetCommit`.
    pub fn validate_offset_commit(
        &mut self,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        now: i64,
    ) -> i16 {
        if self.state == GroupState::Dead {
            return errors::COORDINATOR_NOT_AVAILABLE;
        }
        if generation < 0 && self.state == GroupState::Empty {
            return errors::NONE; // admin client or a consumer without group management
        }
        if generation >= 0 || !member_id.is_empty() || instance_id.is_some() {
            if let Err(code) = self.validate_member(member_id, instance_id) {
                return code;
            }
            if generation != self.generation {
                return errors::ILLEGAL_GENERATION;
            }
        } else if self.state != GroupState::Empty {
            return errors::UNKNOWN_MEMBER_ID;
        }
        if self.state == GroupState::CompletingRebalance {
            return errors::REBALANCE_IN_PROGRESS;
        }
        // A commit of a member counts as a heartbeat (Kafka: in Stable and PreparingRebalance, the
        // states that get here with a member).
        if let Some(m) = self.members.get_mut(member_id) {
            m.restart_session(now);
        }
        errors::NONE
    }

    /// Offsets of an empty group whose retention has passed (Kafka: `offsets.retention.minutes` after
    /// the later of the commit and the group becoming empty).
    pub fn expired_offsets(&self, now: i64, retention_ms: i64) -> Vec<(String, i32)> {
        if self.state != GroupState::Empty || retention_ms < 0 {
            return Vec::new();
        }
        self.offsets
            .iter()
            .filter(|(_, o)| {
                o.commit_timestamp_ms.max(self.state_timestamp_ms) + retention_ms <= now
            })
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Topics the members subscribe to, from the consumer protocol metadata (OffsetDelete refuses to
    /// delete offsets of those). `None` if the group does not use the consumer protocol.
    pub fn subscribed_topics(&self) -> Option<Vec<String>> {
        if self.protocol_type.as_deref() != Some("consumer") {
            return None;
        }
        let mut topics = Vec::new();
        for m in self.members.values() {
            topics.extend(parse_subscription_topics(&self.member_metadata(m)));
        }
        Some(topics)
    }

    // ------------------------------------------------------------ persistence

    /// The group metadata record value for the current state.
    pub fn to_record(&self, now: i64) -> GroupValue {
        let stable = matches!(self.state, GroupState::Stable);
        GroupValue {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation,
            protocol: self.protocol_name.clone(),
            leader: self.leader.clone(),
            current_state_timestamp_ms: now,
            members: if stable {
                self.members
                    .values()
                    .map(|m| MemberValue {
                        member_id: m.member_id.clone(),
                        instance_id: m.instance_id.clone(),
                        client_id: m.client_id.clone(),
                        client_host: m.client_host.clone(),
                        rebalance_timeout_ms: m.rebalance_timeout_ms,
                        session_timeout_ms: m.session_timeout_ms,
                        subscription: self.member_metadata(m),
                        assignment: m.assignment.clone(),
                    })
                    .collect()
            } else {
                Vec::new()
            },
        }
    }

    /// Rebuilds a group from its last stored record (at load). A group with members is Stable and its
    /// members must heartbeat within their session timeout from `now`.
    pub fn restore(&mut self, v: GroupValue, now: i64) {
        self.generation = v.generation;
        self.protocol_type = (!v.protocol_type.is_empty()).then_some(v.protocol_type);
        self.protocol_name = v.protocol.clone();
        self.leader = v.leader;
        self.members.clear();
        self.static_members.clear();
        self.pending.clear();
        self.join_timer = None;
        self.sync_deadline_ms = None;
        for m in v.members {
            if let Some(instance) = &m.instance_id {
                self.static_members
                    .insert(instance.clone(), m.member_id.clone());
            }
            let protocols = match &v.protocol {
                Some(p) => vec![(p.clone(), m.subscription)],
                None => Vec::new(),
            };
            self.members.insert(
                m.member_id.clone(),
                Member {
                    member_id: m.member_id,
                    instance_id: m.instance_id,
                    client_id: m.client_id,
                    client_host: m.client_host,
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    session_timeout_ms: m.session_timeout_ms,
                    protocols,
                    assignment: m.assignment,
                    awaiting_join: false,
                    awaiting_sync: false,
                    is_new: false,
                    pending_sync: false,
                    session_deadline_ms: Some(now + m.session_timeout_ms as i64),
                },
            );
        }
        let state = if self.members.is_empty() {
            GroupState::Empty
        } else {
            GroupState::Stable
        };
        self.state = state;
        self.state_timestamp_ms = if v.current_state_timestamp_ms > 0 {
            v.current_state_timestamp_ms
        } else {
            now
        };
    }

    /// Marks the group deleted (DeleteGroups). Only an empty group may be deleted. Its offsets stay
    /// until the deletion is durable (the coordinator then drops the group; see `group::staged`).
    pub fn delete(&mut self, now: i64) -> Result<(), i16> {
        match self.state {
            GroupState::Empty => {
                self.set_state(GroupState::Dead, now);
                Ok(())
            }
            GroupState::Dead => Err(errors::GROUP_ID_NOT_FOUND),
            _ => Err(errors::NON_EMPTY_GROUP),
        }
    }

    /// Takes back a [`Group::delete`] whose records did not become durable: the group is `Empty` again,
    /// with the state time it had.
    pub fn undo_delete(&mut self, state_timestamp_ms: i64) {
        if self.state == GroupState::Dead {
            self.state = GroupState::Empty;
            self.state_timestamp_ms = state_timestamp_ms;
        }
    }
}

/// Topic names of a `ConsumerProtocolSubscription` (any version): i16 version, then an array of
/// strings. Garbage yields what could be read.
pub fn parse_subscription_topics(b: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    if b.len() < 6 {
        return out;
    }
    let version = i16::from_be_bytes([b[0], b[1]]);
    if version < 0 {
        return out;
    }
    let count = i32::from_be_bytes([b[2], b[3], b[4], b[5]]);
    let mut pos = 6;
    for _ in 0..count.max(0) {
        let Some(len) = b.get(pos..pos + 2) else {
            break;
        };
        let len = i16::from_be_bytes([len[0], len[1]]).max(0) as usize;
        let Some(s) = b.get(pos + 2..pos + 2 + len) else {
            break;
        };
        out.push(String::from_utf8_lossy(s).into_owned());
        pos += 2 + len;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SESSION: i32 = 10_000;
    const REBALANCE: i32 = 60_000;

    fn cfg(delay: i64) -> GroupConfig {
        GroupConfig {
            initial_rebalance_delay_ms: delay,
            ..GroupConfig::default()
        }
    }

    fn params(member: &str, protocols: &[&str]) -> JoinParams {
        JoinParams {
            member_id: member.into(),
            instance_id: None,
            client_id: "client".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout_ms: SESSION,
            rebalance_timeout_ms: REBALANCE,
            protocol_type: "consumer".into(),
            protocols: protocols
                .iter()
                .map(|p| (p.to_string(), Bytes::from(format!("meta-{p}"))))
                .collect(),
            require_known_member_id: true,
            supports_skip_assignment: true,
        }
    }

    fn join_results(fx: &[Effect]) -> Vec<(String, JoinResult)> {
        fx.iter()
            .filter_map(|e| match e {
                Effect::Join { member_id, result } => Some((member_id.clone(), result.clone())),
                _ => None,
            })
            .collect()
    }

    fn sync_results(fx: &[Effect]) -> Vec<(String, SyncResult)> {
        fx.iter()
            .filter_map(|e| match e {
                Effect::Sync { member_id, result } => Some((member_id.clone(), result.clone())),
                _ => None,
            })
            .collect()
    }

    /// First join with MEMBER_ID_REQUIRED, then the real join. Returns the member id and the effects.
    fn join_new(g: &mut Group, now: i64, c: &GroupConfig) -> (String, Vec<Effect>) {
        let (r, fx) = g.join(params("", &["range"]), now, c);
        assert!(fx.is_empty());
        let Reply::Now(r) = r else {
            panic!("first join answers at once")
        };
        assert_eq!(r.error, errors::MEMBER_ID_REQUIRED);
        let (r, fx) = g.join(params(&r.member_id, &["range"]), now, c);
        let Reply::Wait(id) = r else {
            panic!("second join waits")
        };
        (id, fx)
    }

    /// Leader syncs with an assignment naming every member; returns the sync effects.
    fn leader_sync(g: &mut Group, leader: &str, now: i64) -> Vec<Effect> {
        let assignments = g
            .members()
            .map(|m| {
                (
                    m.member_id.clone(),
                    Bytes::from(format!("a-{}", m.member_id)),
                )
            })
            .collect();
        let (r, fx) = g.sync(
            SyncParams {
                member_id: leader.into(),
                generation: g.generation(),
                assignments,
                ..Default::default()
            },
            now,
        );
        assert_eq!(r, Reply::Wait(leader.to_string()));
        fx
    }

    /// Builds a Stable group of `n` members at time 0 (no initial delay).
    fn stable_group(n: usize) -> (Group, Vec<String>) {
        let c = cfg(0);
        let mut g = Group::new("g", 0);
        let mut ids = Vec::new();
        // Join everyone while the group is rebalancing: the first join completes immediately (one
        // member), so add the others before syncing; they trigger a second rebalance.
        for _ in 0..n {
            let (id, _) = join_new(&mut g, 0, &c);
            ids.push(id);
        }
        // All members must rejoin after the group went to CompletingRebalance with only some.
        for id in &ids {
            let _ = g.join(params(id, &["range"]), 0, &c);
        }
        assert_eq!(g.state(), GroupState::CompletingRebalance);
        let leader = g.leader().unwrap().to_string();
        leader_sync(&mut g, &leader, 0);
        assert_eq!(g.state(), GroupState::Stable);
        (g, ids)
    }

    #[test]
    fn single_member_join_sync_heartbeat() {
        let c = cfg(0);
        let mut g = Group::new("g", 0);
        let (id, fx) = join_new(&mut g, 0, &c);
        let joins = join_results(&fx);
        assert_eq!(joins.len(), 1);
        let (who, r) = &joins[0];
        assert_eq!(who, &id);
        assert_eq!(r.generation, 1);
        assert_eq!(r.leader, id);
        assert_eq!(r.protocol_name.as_deref(), Some("range"));
        assert_eq!(r.members.len(), 1);
        assert_eq!(g.state(), GroupState::CompletingRebalance);
        let fx = leader_sync(&mut g, &id, 1);
        assert_eq!(fx[0], Effect::Persist);
        let syncs = sync_results(&fx);
        assert_eq!(syncs[0].1.assignment, Bytes::from(format!("a-{id}")));
        assert_eq!(g.state(), GroupState::Stable);
        assert_eq!(g.heartbeat(&id, None, 1, 2), errors::NONE);
        assert_eq!(g.heartbeat(&id, None, 0, 2), errors::ILLEGAL_GENERATION);
        assert_eq!(g.heartbeat("nobody", None, 1, 2), errors::UNKNOWN_MEMBER_ID);
    }

    #[test]
    fn initial_delay_waits_for_more_members() {
        let c = cfg(3000);
        let mut g = Group::new("g", 0);
        let (a, fx) = join_new(&mut g, 0, &c);
        assert!(fx.is_empty(), "the initial delay holds the join");
        assert_eq!(g.next_deadline(), Some(3000));
        let (b, fx) = join_new(&mut g, 1000, &c);
        assert!(fx.is_empty());
        // Kafka steps: the timer fires at 3000, sees that a member joined meanwhile and waits one more
        // delay (not 3000 after the last join).
        assert!(g.tick(3000).is_empty(), "extended by the second member");
        assert_eq!(g.next_deadline(), Some(6000));
        assert!(g.tick(5999).is_empty());
        let fx = g.tick(6000);
        let joins = join_results(&fx);
        assert_eq!(joins.len(), 2);
        assert!(joins.iter().all(|(_, r)| r.generation == 1));
        let leader = joins.iter().find(|(_, r)| !r.members.is_empty()).unwrap();
        assert_eq!(leader.1.members.len(), 2);
        assert!([&a, &b].contains(&&leader.0));
    }

    #[test]
    fn initial_delay_steps_end_with_the_rebalance_timeout() {
        let c = cfg(3000);
        let mut g = Group::new("g", 0);
        let join = |g: &mut Group, now: i64| {
            let mut p = params("", &["range"]);
            p.rebalance_timeout_ms = 7000;
            p.require_known_member_id = false;
            let (r, fx) = g.join(p, now, &c);
            assert!(matches!(r, Reply::Wait(_)) && fx.is_empty());
        };
        join(&mut g, 0);
        join(&mut g, 1000);
        assert!(g.tick(3000).is_empty());
        join(&mut g, 4000);
        // 3000 + 3000, then only the 1000 ms left of the 7000 ms rebalance timeout.
        assert!(g.tick(6000).is_empty());
        assert_eq!(g.next_deadline(), Some(7000));
        join(&mut g, 6500);
        let fx = g.tick(7000);
        assert_eq!(
            join_results(&fx).len(),
            4,
            "no time left: the later join does not extend"
        );
        assert_eq!(g.state(), GroupState::CompletingRebalance);

        // A rebalance timeout below the delay does not shorten the first step.
        let mut g = Group::new("g", 0);
        let mut p = params("", &["range"]);
        p.rebalance_timeout_ms = 1000;
        p.require_known_member_id = false;
        let _ = g.join(p, 0, &c);
        assert_eq!(g.next_deadline(), Some(3000));
    }

    #[test]
    fn a_member_awaiting_sync_needs_no_heartbeat() {
        let c = cfg(0);
        let (mut g, ids) = stable_group(2);
        let _ = g.join(params(&ids[0], &["range", "x"]), 0, &c);
        let _ = g.join(params(&ids[1], &["range", "x"]), 0, &c);
        assert_eq!(g.state(), GroupState::CompletingRebalance);
        let leader = g.leader().unwrap().to_string();
        let follower = ids.iter().find(|i| **i != leader).unwrap().clone();
        let (r, _) = g.sync(
            SyncParams {
                member_id: follower.clone(),
                generation: g.generation(),
                ..Default::default()
            },
            100,
        );
        assert_eq!(r, Reply::Wait(follower.clone()));
        // The leader keeps heartbeating but takes longer than a session to send the assignment.
        assert_eq!(
            g.heartbeat(&leader, None, g.generation(), 9000),
            errors::NONE
        );
        assert!(
            g.tick(SESSION as i64).is_empty(),
            "the waiting follower stays"
        );
        assert!(g.member(&follower).is_some());
        let fx = leader_sync(&mut g, &leader, 15_000);
        assert_eq!(sync_results(&fx).len(), 2);
        // The answers restarted both sessions (the leader's own SyncGroup was answered too).
        assert_eq!(g.next_deadline(), Some(15_000 + SESSION as i64));
        let _ = g.tick(15_000 + SESSION as i64 - 1);
        assert!(g.member(&follower).is_some());
        let _ = g.tick(15_000 + SESSION as i64);
        assert!(g.member(&follower).is_none());
    }

    #[test]
    fn a_member_that_never_syncs_is_removed_at_the_rebalance_timeout() {
        let (mut g, ids) = stable_group(2);
        // stable_group's leader synced at 0; the follower never did: Kafka removes it a rebalance
        // timeout after the join phase ended, although the group is Stable.
        let leader = g.leader().unwrap().to_string();
        let follower = ids.iter().find(|i| **i != leader).unwrap().clone();
        assert_eq!(g.state(), GroupState::Stable);
        for t in (5000..REBALANCE as i64).step_by(5000) {
            assert_eq!(g.heartbeat(&leader, None, g.generation(), t), errors::NONE);
            assert_eq!(
                g.heartbeat(&follower, None, g.generation(), t),
                errors::NONE
            );
            assert!(g.tick(t).is_empty());
        }
        assert_eq!(g.next_deadline(), Some(REBALANCE as i64));
        let _ = g.tick(REBALANCE as i64);
        assert!(g.member(&follower).is_none());
        assert_eq!(g.state(), GroupState::PreparingRebalance);

        // Once everyone synced, the sync timer is off.
        let (mut g, ids) = stable_group(2);
        for id in &ids {
            let _ = g.sync(
                SyncParams {
                    member_id: id.clone(),
                    generation: g.generation(),
                    ..Default::default()
                },
                1,
            );
        }
        assert_eq!(g.next_deadline(), Some(SESSION as i64));
    }

    #[test]
    fn static_members_that_do_not_rejoin_stay_through_the_join_phase() {
        let c = cfg(0);
        let mut g = Group::new("g", 0);
        let mut ids = Vec::new();
        // A rebalance timeout below the session timeout: the absent member's session outlasts the
        // join phase.
        const R: i64 = 5000;
        for i in 0..2 {
            let mut p = params("", &["range"]);
            p.instance_id = Some(format!("i-{i}"));
            p.rebalance_timeout_ms = R as i32;
            let (r, _) = g.join(p, 0, &c);
            let Reply::Wait(id) = r else { panic!() };
            ids.push(id);
        }
        for id in &ids {
            let mut p = params(id, &["range"]);
            p.instance_id = g.member(id).unwrap().instance_id.clone();
            p.rebalance_timeout_ms = R as i32;
            let _ = g.join(p, 0, &c);
        }
        assert_eq!(g.state(), GroupState::CompletingRebalance);
        let gen = g.generation();
        // ids[0] rejoins; ids[1] does not.
        let mut p = params(&ids[0], &["range", "x"]);
        p.instance_id = Some("i-0".into());
        p.rebalance_timeout_ms = R as i32;
        let _ = g.join(p, 10, &c);
        let fx = g.tick(10 + R);
        let joins = join_results(&fx);
        assert_eq!(joins.len(), 1, "only the member that rejoined is answered");
        assert_eq!(joins[0].1.generation, gen + 1);
        assert_eq!(joins[0].1.members.len(), 2, "the leader assigns to both");
        assert!(g.member(&ids[1]).is_some());
        // ids[1] never syncs: the sync timer removes it, before its session would.
        assert_eq!(g.next_deadline(), Some(10 + 2 * R));
        let _ = g.tick(10 + 2 * R);
        assert!(g.member(&ids[1]).is_none());
    }

    #[test]
    fn a_heartbeat_after_the_deadline_finds_the_member_gone() {
        let (mut g, ids) = stable_group(1);
        let gen = g.generation();
        assert_eq!(g.heartbeat(&ids[0], None, gen, 500), errors::NONE);
        // The sync timer (the leader synced, so it is off) and the session: the deadline is 500 + session.
        assert_eq!(g.next_deadline(), Some(500 + SESSION as i64));
        assert!(g.tick(500 + SESSION as i64 - 1).is_empty());
        // The timer fires at its deadline, before a heartbeat of the same millisecond.
        let _ = g.tick(500 + SESSION as i64);
        assert_eq!(g.state(), GroupState::Empty);
        assert_eq!(
            g.heartbeat(&ids[0], None, gen, 500 + SESSION as i64),
            errors::UNKNOWN_MEMBER_ID
        );
        assert_eq!(g.next_deadline(), None, "an empty group has no timer");
    }

    #[test]
    fn a_zero_rebalance_timeout_cannot_spin_a_tick() {
        let c = cfg(0);
        let mut g = Group::new("g", 0);
        let mut p = params("", &["range"]);
        p.instance_id = Some("i".into());
        p.rebalance_timeout_ms = 0;
        let (r, _) = g.join(p.clone(), 0, &c);
        let Reply::Wait(id) = r else { panic!() };
        let _ = g.sync(
            SyncParams {
                member_id: id.clone(),
                instance_id: Some("i".into()),
                generation: g.generation(),
                ..Default::default()
            },
            0,
        );
        assert_eq!(g.state(), GroupState::Stable);
        // Another static member joins and leaves again: the rebalance it started waits for `i`, which
        // never rejoins; with a zero rebalance timeout the join timer re-arms for the same millisecond
        // each time it fires (as in Kafka). One tick still ends.
        let mut q = params("", &["range"]);
        q.instance_id = Some("j".into());
        q.rebalance_timeout_ms = 0;
        let _ = g.join(q, 1, &c);
        let (codes, _) = g.leave(
            &[LeaveParams {
                member_id: String::new(),
                instance_id: Some("j".into()),
            }],
            1,
        );
        assert_eq!(codes, vec![errors::NONE]);
        for t in 1..5 {
            let _ = g.tick(t);
            assert_eq!(g.next_deadline(), Some(t));
            assert_eq!(g.state(), GroupState::PreparingRebalance);
        }
        // Its session ends it.
        let _ = g.tick(SESSION as i64);
        assert_eq!(g.state(), GroupState::Empty);
    }

    #[test]
    fn three_members_and_a_leave_rebalances_the_rest() {
        let (mut g, ids) = stable_group(3);
        let gen = g.generation();
        let (codes, fx) = g.leave(
            &[LeaveParams {
                member_id: ids[1].clone(),
                instance_id: None,
            }],
            10,
        );
        assert_eq!(codes, vec![errors::NONE]);
        assert!(fx.is_empty());
        assert_eq!(g.state(), GroupState::PreparingRebalance);
        assert_eq!(
            g.heartbeat(&ids[0], None, gen, 11),
            errors::REBALANCE_IN_PROGRESS
        );
        let (r0, fx0) = g.join(params(&ids[0], &["range"]), 12, &cfg(0));
        assert_eq!(r0, Reply::Wait(ids[0].clone()));
        assert!(fx0.is_empty(), "waits for the other member");
        let (_, fx2) = g.join(params(&ids[2], &["range"]), 13, &cfg(0));
        let joins = join_results(&fx2);
        assert_eq!(joins.len(), 2);
        assert!(joins.iter().all(|(_, r)| r.generation == gen + 1));
        assert_eq!(g.members().count(), 2);
        // A sync of the old generation is fenced.
        let (r, _) = g.sync(
            SyncParams {
                member_id: ids[0].clone(),
                generation: gen,
                ..Default::default()
            },
            14,
        );
        assert_eq!(r, Reply::Now(SyncResult::error(errors::ILLEGAL_GENERATION)));
    }

    #[test]
    fn session_expiry_removes_a_silent_member() {
        let (mut g, ids) = stable_group(2);
        // ids[0] keeps heartbeating, ids[1] is silent.
        assert_eq!(
            g.heartbeat(&ids[0], None, g.generation(), 9000),
            errors::NONE
        );
        assert!(g.tick(9999).is_empty());
        let _ = g.tick(10_000);
        assert_eq!(g.members().count(), 1, "silent member expired");
        assert!(g.member(&ids[1]).is_none());
        assert_eq!(g.state(), GroupState::PreparingRebalance);
        let (_, fx) = g.join(params(&ids[0], &["range"]), 10_001, &cfg(0));
        assert_eq!(join_results(&fx).len(), 1);
        assert_eq!(g.state(), GroupState::CompletingRebalance);
    }

    #[test]
    fn rebalance_timeout_drops_members_that_do_not_rejoin() {
        let (mut g, ids) = stable_group(2);
        let gen = g.generation();
        // ids[0] changes its protocols: rebalance. ids[1] keeps heartbeating but never rejoins.
        let (_, fx) = g.join(params(&ids[0], &["range", "roundrobin"]), 100, &cfg(0));
        assert!(fx.is_empty());
        for t in (5000..=60_000).step_by(5000) {
            assert_eq!(
                g.heartbeat(&ids[1], None, gen, t),
                errors::REBALANCE_IN_PROGRESS
            );
            assert!(g.tick(t).is_empty());
        }
        assert!(g.tick(100 + REBALANCE as i64 - 1).is_empty());
        let fx = g.tick(100 + REBALANCE as i64);
        let joins = join_results(&fx);
        assert_eq!(joins.len(), 1);
        assert_eq!(joins[0].0, ids[0]);
        assert_eq!(joins[0].1.generation, gen + 1);
        assert!(g.member(&ids[1]).is_none());
    }

    #[test]
    fn pending_member_id_expires() {
        let c = cfg(0);
        let (mut g, ids) = stable_group(1);
        let (r, _) = g.join(params("", &["range"]), 0, &c);
        let Reply::Now(r) = r else { panic!() };
        assert_eq!(r.error, errors::MEMBER_ID_REQUIRED);
        assert!(g.tick(SESSION as i64 / 2).is_empty());
        assert_eq!(g.heartbeat(&ids[0], None, g.generation(), 1), errors::NONE);
        let _ = g.tick(SESSION as i64 + 1);
        // The pending id is gone: joining with it now is an unknown member.
        let (r, _) = g.join(params(&r.member_id, &["range"]), SESSION as i64 + 2, &c);
        assert_eq!(
            r,
            Reply::Now(JoinResult::error(errors::UNKNOWN_MEMBER_ID, &r_id(&r)))
        );
    }

    fn r_id(r: &Reply<JoinResult>) -> String {
        match r {
            Reply::Now(j) => j.member_id.clone(),
            Reply::Wait(id) => id.clone(),
        }
    }

    #[test]
    fn static_member_rejoins_without_rebalance() {
        let c = cfg(0);
        let mut g = Group::new("g", 0);
        let mut p = params("", &["range"]);
        p.instance_id = Some("i-1".into());
        let (r, fx) = g.join(p.clone(), 0, &c);
        let Reply::Wait(old) = r else { panic!() };
        assert_eq!(
            join_results(&fx).len(),
            1,
            "static members need no MEMBER_ID_REQUIRED"
        );
        let (r, _) = g.sync(
            SyncParams {
                member_id: old.clone(),
                instance_id: Some("i-1".into()),
                generation: g.generation(),
                assignments: vec![(old.clone(), Bytes::from(format!("a-{old}")))],
                ..Default::default()
            },
            1,
        );
        assert_eq!(r, Reply::Wait(old.clone()));
        let gen = g.generation();
        assert_eq!(g.state(), GroupState::Stable);

        // Restart: same instance id, no member id.
        let (r, fx) = g.join(p.clone(), 2, &c);
        let Reply::Wait(new) = r else { panic!() };
        assert_ne!(new, old);
        assert_eq!(g.state(), GroupState::Stable, "no rebalance");
        assert_eq!(fx[0], Effect::Persist);
        let joins = join_results(&fx);
        assert_eq!(joins[0].1.generation, gen);
        assert!(
            joins[0].1.skip_assignment,
            "the leader keeps its assignment"
        );
        // The old member id is fenced; the new one gets the old assignment.
        assert_eq!(
            g.heartbeat(&old, Some("i-1"), gen, 3),
            errors::FENCED_INSTANCE_ID
        );
        let (r, _) = g.sync(
            SyncParams {
                member_id: new.clone(),
                instance_id: Some("i-1".into()),
                generation: gen,
                ..Default::default()
            },
            3,
        );
        let Reply::Now(s) = r else { panic!() };
        assert_eq!(s.assignment, Bytes::from(format!("a-{old}")));
        // Leaving with the old member id is fenced, with the new one works.
        let (codes, _) = g.leave(
            &[LeaveParams {
                member_id: old.clone(),
                instance_id: Some("i-1".into()),
            }],
            4,
        );
        assert_eq!(codes, vec![errors::FENCED_INSTANCE_ID]);
        let (codes, fx) = g.leave(
            &[LeaveParams {
                member_id: String::new(),
                instance_id: Some("i-1".into()),
            }],
            5,
        );
        assert_eq!(codes, vec![errors::NONE]);
        assert_eq!(g.state(), GroupState::Empty);
        assert!(fx.contains(&Effect::Persist));
    }

    #[test]
    fn inconsistent_protocols_and_bad_session_timeouts_are_refused() {
        let c = cfg(0);
        let (mut g, _) = stable_group(1);
        let (r, _) = g.join(params("", &["roundrobin"]), 0, &c);
        assert_eq!(
            r,
            Reply::Now(JoinResult::error(errors::INCONSISTENT_GROUP_PROTOCOL, ""))
        );
        let mut p = params("", &["range"]);
        p.session_timeout_ms = 1;
        let (r, _) = g.join(p, 0, &c);
        assert_eq!(
            r,
            Reply::Now(JoinResult::error(errors::INVALID_SESSION_TIMEOUT, ""))
        );
    }

    #[test]
    fn group_max_size() {
        let c = GroupConfig {
            max_size: 1,
            initial_rebalance_delay_ms: 0,
            ..GroupConfig::default()
        };
        let mut g = Group::new("g", 0);
        join_new(&mut g, 0, &c);
        let (r, _) = g.join(params("", &["range"]), 0, &c);
        assert_eq!(
            r,
            Reply::Now(JoinResult::error(errors::GROUP_MAX_SIZE_REACHED, ""))
        );
    }

    #[test]
    fn cooperative_protocol_is_chosen_by_vote() {
        let c = cfg(0);
        let mut g = Group::new("g", 0);
        let (a, _) = join_new(&mut g, 0, &c);
        let _ = g.join(params(&a, &["cooperative-sticky", "range"]), 0, &c);
        let (r, _) = g.join(params("", &["cooperative-sticky", "range"]), 0, &c);
        let Reply::Now(r) = r else { panic!() };
        let (_, _) = g.join(
            params(&r.member_id, &["cooperative-sticky", "range"]),
            0,
            &c,
        );
        let (_, fx) = g.join(params(&a, &["cooperative-sticky", "range"]), 0, &c);
        let joins = join_results(&fx);
        assert_eq!(joins.len(), 2);
        assert!(joins
            .iter()
            .all(|(_, r)| r.protocol_name.as_deref() == Some("cooperative-sticky")));
    }

    #[test]
    fn rejoin_during_completing_rebalance_voids_waiting_syncs() {
        let c = cfg(0);
        let (mut g, ids) = stable_group(2);
        // Force a rebalance and complete its join phase.
        let _ = g.join(params(&ids[0], &["range", "x"]), 1, &c);
        let _ = g.join(params(&ids[1], &["range", "x"]), 1, &c);
        assert_eq!(g.state(), GroupState::CompletingRebalance);
        let follower = ids
            .iter()
            .find(|i| Some(i.as_str()) != g.leader())
            .unwrap()
            .clone();
        let (r, _) = g.sync(
            SyncParams {
                member_id: follower.clone(),
                generation: g.generation(),
                ..Default::default()
            },
            2,
        );
        assert_eq!(r, Reply::Wait(follower.clone()));
        // The leader changes protocols: the follower's waiting sync must be told to rejoin.
        let leader = g.leader().unwrap().to_string();
        let (_, fx) = g.join(params(&leader, &["x"]), 3, &c);
        let syncs = sync_results(&fx);
        assert_eq!(syncs.len(), 1);
        assert_eq!(syncs[0].0, follower);
        assert_eq!(syncs[0].1.error, errors::REBALANCE_IN_PROGRESS);
    }

    #[test]
    fn offset_commit_validation() {
        let mut g = Group::new("g", 0);
        assert_eq!(g.validate_offset_commit(-1, "", None, 0), errors::NONE);
        let (mut g2, ids) = stable_group(1);
        let gen = g2.generation();
        assert_eq!(
            g2.validate_offset_commit(gen, &ids[0], None, 0),
            errors::NONE
        );
        assert_eq!(
            g2.validate_offset_commit(gen + 1, &ids[0], None, 0),
            errors::ILLEGAL_GENERATION
        );
        assert_eq!(
            g2.validate_offset_commit(gen, "x", None, 0),
            errors::UNKNOWN_MEMBER_ID
        );
        assert_eq!(
            g2.validate_offset_commit(-1, "", None, 0),
            errors::UNKNOWN_MEMBER_ID
        );
        assert!(g.delete(1).is_ok());
        assert_eq!(g2.delete(1), Err(errors::NON_EMPTY_GROUP));
    }

    #[test]
    fn record_round_trip_restores_stable_group() {
        let (g, ids) = stable_group(2);
        let v = g.to_record(5);
        assert_eq!(v.members.len(), 2);
        let mut back = Group::new("g", 0);
        back.restore(v, 100);
        assert_eq!(back.state(), GroupState::Stable);
        assert_eq!(back.generation(), g.generation());
        let (r, _) = back.sync(
            SyncParams {
                member_id: ids[0].clone(),
                generation: g.generation(),
                ..Default::default()
            },
            101,
        );
        let Reply::Now(s) = r else { panic!() };
        assert_eq!(s.assignment, Bytes::from(format!("a-{}", ids[0])));
    }

    #[test]
    fn offsets_of_empty_groups_expire() {
        let offset = |ts| OffsetEntry {
            offset: 1,
            leader_epoch: -1,
            metadata: String::new(),
            commit_timestamp_ms: ts,
        };
        let (mut g, ids) = stable_group(1);
        g.offsets.insert(("t".into(), 0), offset(0));
        assert!(
            g.expired_offsets(1_000_000, 1000).is_empty(),
            "not while the group has members"
        );
        let _ = g.leave(
            &[LeaveParams {
                member_id: ids[0].clone(),
                instance_id: None,
            }],
            5000,
        );
        assert_eq!(g.state(), GroupState::Empty);
        g.offsets.insert(("t".into(), 1), offset(7000));
        // Retention counts from the later of the commit and the group becoming empty.
        assert!(g.expired_offsets(5999, 1000).is_empty());
        assert_eq!(g.expired_offsets(6000, 1000), vec![("t".to_string(), 0)]);
        assert_eq!(g.expired_offsets(8000, 1000).len(), 2);
    }

    #[test]
    fn subscription_topics_parse() {
        let mut b = vec![0, 1, 0, 0, 0, 2];
        for t in ["a", "bc"] {
            b.extend_from_slice(&(t.len() as i16).to_be_bytes());
            b.extend_from_slice(t.as_bytes());
        }
        b.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        assert_eq!(parse_subscription_topics(&b), vec!["a", "bc"]);
        assert!(parse_subscription_topics(&[1]).is_empty());
    }
}
