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

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;

use super::records::{GroupValue, MemberValue, OffsetValue};
use super::GroupConfig;
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
    /// The member is removed when no heartbeat arrives by this time (unless it awaits a join).
    session_deadline_ms: i64,
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
    /// PreparingRebalance: join is forced at this time; CompletingRebalance: the sync timeout.
    rebalance_deadline_ms: i64,
    /// While set, the first rebalance of an empty group waits for more members
    /// (`group.initial.rebalance.delay.ms`).
    initial_delay_until_ms: Option<i64>,
    initial_delay_started_ms: i64,
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
            rebalance_deadline_ms: 0,
            initial_delay_until_ms: None,
            initial_delay_started_ms: 0,
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
                self.update_member(&id, p, now);
                self.try_complete_join(now, &mut fx);
                (Reply::Wait(id), fx)
            }
            GroupState::CompletingRebalance | GroupState::Stable
                if same_protocols && !(self.state == GroupState::Stable && is_leader) =>
            {
                // A resend (e.g. the response was lost): answer with the current generation.
                self.members
                    .get_mut(&id)
                    .expect("validated")
                    .session_deadline_ms = now + p.session_timeout_ms as i64;
                (Reply::Now(self.join_result(&id, false)), fx)
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                self.update_member(&id, p, now);
                self.prepare_rebalance(now, &mut fx);
                self.try_complete_join(now, &mut fx);
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
            session_deadline_ms: now + p.session_timeout_ms as i64,
        };
        self.members.insert(id.clone(), member);
        if self.leader.is_none() {
            self.leader = Some(id);
        }
        match self.state {
            GroupState::Empty => {
                self.prepare_rebalance(now, fx);
                if cfg.initial_rebalance_delay_ms > 0 {
                    self.initial_delay_started_ms = now;
                    self.initial_delay_until_ms = Some(
                        now + cfg
                            .initial_rebalance_delay_ms
                            .min(p.rebalance_timeout_ms.max(0) as i64),
                    );
                }
            }
            GroupState::PreparingRebalance => {
                if self.initial_delay_until_ms.is_some() {
                    // Each new member extends the initial delay, up to the rebalance timeout.
                    let cap = self.initial_delay_started_ms + self.max_rebalance_timeout_ms();
                    self.initial_delay_until_ms =
                        Some((now + cfg.initial_rebalance_delay_ms).min(cap));
                }
            }
            GroupState::CompletingRebalance | GroupState::Stable => self.prepare_rebalance(now, fx),
            GroupState::Dead => {}
        }
        self.try_complete_join(now, fx);
    }

    fn update_member(&mut self, id: &str, p: JoinParams, now: i64) {
        let m = self.members.get_mut(id).expect("member exists");
        m.protocols = p.protocols;
        m.rebalance_timeout_ms = p.rebalance_timeout_ms;
        m.session_timeout_ms = p.session_timeout_ms;
        m.client_id = p.client_id;
        m.client_host = p.client_host;
        m.awaiting_join = true;
        m.session_deadline_ms = now + p.session_timeout_ms as i64;
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
        member.session_deadline_ms = now + p.session_timeout_ms as i64;
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
                self.members
                    .get_mut(&new_id)
                    .expect("just inserted")
                    .rebalance_timeout_ms = p.rebalance_timeout_ms;
                self.members
                    .get_mut(&new_id)
                    .expect("just inserted")
                    .session_timeout_ms = p.session_timeout_ms;
                // The stored member id changes: persist before answering.
                fx.push(Effect::Persist);
                fx.push(Effect::Join {
                    member_id: new_id.clone(),
                    result: self.join_result(&new_id, is_leader),
                });
                (Reply::Wait(new_id), fx)
            }
            GroupState::PreparingRebalance => {
                self.update_member(&new_id, p, now);
                self.try_complete_join(now, &mut fx);
                (Reply::Wait(new_id), fx)
            }
            _ => {
                self.update_member(&new_id, p, now);
                self.prepare_rebalance(now, &mut fx);
                self.try_complete_join(now, &mut fx);
                (Reply::Wait(new_id), fx)
            }
        }
    }

    fn max_rebalance_timeout_ms(&self) -> i64 {
        self.members
            .values()
            .map(|m| m.rebalance_timeout_ms.max(0) as i64)
            .max()
            .unwrap_or(0)
    }

    fn prepare_rebalance(&mut self, now: i64, fx: &mut Vec<Effect>) {
        if self.state == GroupState::CompletingRebalance {
            // The assignment being collected is void: members waiting in SyncGroup must rejoin.
            for m in self.members.values_mut() {
                if m.awaiting_sync {
                    m.awaiting_sync = false;
                    fx.push(Effect::Sync {
                        member_id: m.member_id.clone(),
                        result: SyncResult::error(errors::REBALANCE_IN_PROGRESS),
                    });
                }
                m.assignment = Bytes::new();
            }
        }
        self.initial_delay_until_ms = None;
        self.rebalance_deadline_ms = now + self.max_rebalance_timeout_ms();
        self.set_state(GroupState::PreparingRebalance, now);
    }

    /// Completes the join phase when every member has rejoined and no new member id is outstanding.
    fn try_complete_join(&mut self, now: i64, fx: &mut Vec<Effect>) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        if self.initial_delay_until_ms.is_some_and(|t| now < t) {
            return;
        }
        if self.members.values().all(|m| m.awaiting_join) && self.pending.is_empty() {
            self.complete_join(now, fx);
        }
    }

    /// Ends the join phase: members that did not rejoin are removed, the generation advances.
    fn complete_join(&mut self, now: i64, fx: &mut Vec<Effect>) {
        self.initial_delay_until_ms = None;
        let gone: Vec<String> = self
            .members
            .values()
            .filter(|m| !m.awaiting_join)
            .map(|m| m.member_id.clone())
            .collect();
        for id in gone {
            self.drop_member(&id, fx);
        }
        self.pending.clear();
        self.generation += 1;
        if self.members.is_empty() {
            self.protocol_name = None;
            self.leader = None;
            self.set_state(GroupState::Empty, now);
            fx.push(Effect::Persist);
            return;
        }
        self.protocol_name = self.select_protocol();
        if self
            .leader
            .as_ref()
            .is_none_or(|l| !self.members.contains_key(l))
        {
            self.leader = self.members.keys().next().cloned();
        }
        self.set_state(GroupState::CompletingRebalance, now);
        self.rebalance_deadline_ms = now + self.max_rebalance_timeout_ms();
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let result = self.join_result(&id, false);
            let m = self.members.get_mut(&id).expect("listed");
            m.awaiting_join = false;
            m.session_deadline_ms = now + m.session_timeout_ms as i64;
            fx.push(Effect::Join {
                member_id: id,
                result,
            });
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
    }

    /// Removes a member (leave or session expiry) and rebalances the rest.
    fn remove_member(&mut self, id: &str, now: i64, fx: &mut Vec<Effect>) {
        self.drop_member(id, fx);
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(now, fx);
                self.try_complete_join(now, fx);
            }
            GroupState::PreparingRebalance => self.try_complete_join(now, fx),
            GroupState::Empty | GroupState::Dead => {}
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
                m.session_deadline_ms = now + m.session_timeout_ms as i64;
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
                            m.awaiting_sync = false;
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
                let m = self.members.get_mut(&id).expect("validated");
                m.session_deadline_ms = now + m.session_timeout_ms as i64;
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
        let m = self.members.get_mut(member_id).expect("validated");
        m.session_deadline_ms = now + m.session_timeout_ms as i64;
        if self.state == GroupState::PreparingRebalance {
            errors::REBALANCE_IN_PROGRESS
        } else {
            errors::NONE
        }
    }

    /// Removes the named members; one error code per input, in order.
    pub fn leave(&mut self, who: &[LeaveParams], now: i64) -> (Vec<i16>, Vec<Effect>) {
        let mut fx = Vec::new();
        let mut codes = Vec::with_capacity(who.len());
        for l in who {
            if self.state == GroupState::Dead {
                codes.push(errors::COORDINATOR_NOT_AVAILABLE);
                continue;
            }
            let code = match &l.instance_id {
                Some(instance) => match self.static_members.get(instance).cloned() {
                    None => errors::UNKNOWN_MEMBER_ID,
                    Some(current) if !l.member_id.is_empty() && current != l.member_id => {
                        errors::FENCED_INSTANCE_ID
                    }
                    Some(current) => {
                        self.remove_member(&current, now, &mut fx);
                        errors::NONE
                    }
                },
                None if self.pending.remove(&l.member_id).is_some() => {
                    self.try_complete_join(now, &mut fx);
                    errors::NONE
                }
                None if self.members.contains_key(&l.member_id) => {
                    self.remove_member(&l.member_id, now, &mut fx);
                    errors::NONE
                }
                None => errors::UNKNOWN_MEMBER_ID,
            };
            codes.push(code);
        }
        (codes, fx)
    }

    /// Advances time: expires sessions, pending member ids, the initial delay and rebalance timeouts.
    pub fn tick(&mut self, now: i64) -> Vec<Effect> {
        let mut fx = Vec::new();
        let before = self.pending.len();
        self.pending.retain(|_, deadline| *deadline > now);
        if self.pending.len() != before {
            self.try_complete_join(now, &mut fx);
        }
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| !m.awaiting_join && m.session_deadline_ms <= now)
            .map(|m| m.member_id.clone())
            .collect();
        for id in expired {
            self.remove_member(&id, now, &mut fx);
        }
        match self.state {
            GroupState::PreparingRebalance => {
                if self.initial_delay_until_ms.is_some_and(|t| now >= t) {
                    self.initial_delay_until_ms = None;
                    self.try_complete_join(now, &mut fx);
                }
                if self.state == GroupState::PreparingRebalance
                    && self.initial_delay_until_ms.is_none()
                    && now >= self.rebalance_deadline_ms
                {
                    self.complete_join(now, &mut fx);
                }
            }
            GroupState::CompletingRebalance if now >= self.rebalance_deadline_ms => {
                // The leader never sent the assignment: drop who did not sync and start over.
                let gone: Vec<String> = self
                    .members
                    .values()
                    .filter(|m| !m.awaiting_sync)
                    .map(|m| m.member_id.clone())
                    .collect();
                for id in gone {
                    self.drop_member(&id, &mut fx);
                }
                self.prepare_rebalance(now, &mut fx);
                for m in self.members.values_mut() {
                    m.awaiting_join = false;
                }
                self.try_complete_join(now, &mut fx);
            }
            _ => {}
        }
        fx
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
        if let Some(m) = self.members.get_mut(member_id) {
            m.session_deadline_ms = now + m.session_timeout_ms as i64;
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
                    session_deadline_ms: now + m.session_timeout_ms as i64,
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
        let (b, fx) = join_new(&mut g, 1000, &c);
        assert!(fx.is_empty());
        assert!(g.tick(3500).is_empty(), "extended by the second member");
        let fx = g.tick(4000);
        let joins = join_results(&fx);
        assert_eq!(joins.len(), 2);
        assert!(joins.iter().all(|(_, r)| r.generation == 1));
        let leader = joins.iter().find(|(_, r)| !r.members.is_empty()).unwrap();
        assert_eq!(leader.1.members.len(), 2);
        assert!([&a, &b].contains(&&leader.0));
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
