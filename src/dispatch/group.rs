//! Consumer-group APIs: FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup, OffsetCommit,
//! OffsetFetch, ListGroups, DescribeGroups, DeleteGroups, OffsetDelete.
//!
//! Each handler decodes the request into plain values, finds the group's `__consumer_offsets` partition
//! and hops to the core that owns it (`invoke_on(owner, ...)`), where [`crate::group::coordinator`]
//! holds the group. This broker is the coordinator of every group.

use std::rc::Rc;

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use crate::group::coordinator::{self, CommitIdentity, CommitPartition, FetchedOffset};
use crate::group::state::{JoinParams, LeaveParams, SyncParams};
use crate::group::{coordinator_partition, OFFSETS_TOPIC};
use crate::protocol::acl::{self, ResourceType};
use crate::protocol::errors;
use crate::shard::Shard;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// The group's partition and the core that owns it.
fn locate(shard: &Rc<Shard>, group_id: &str) -> Result<(usize, i32), i16> {
    let topic = shard
        .topic(OFFSETS_TOPIC)
        .ok_or(errors::COORDINATOR_NOT_AVAILABLE)?;
    let partition = coordinator_partition(group_id, topic.partitions);
    // Cluster mode: the coordinator is the broker leading the group's partition.
    if topic.leader(partition, shard.config.node_id) != shard.config.node_id {
        return Err(errors::NOT_COORDINATOR);
    }
    Ok((shard.owner_of(&topic, partition), partition))
}

pub async fn handle_find_coordinator(
    shard: &Rc<Shard>,
    _header: &RequestHeader,
    req: FindCoordinatorRequest,
    version: i16,
) -> Option<FindCoordinatorResponse> {
    let keys: Vec<StrBytes> = if version >= 4 {
        req.coordinator_keys.clone()
    } else {
        vec![req.key.clone()]
    };
    let topic = match req.key_type {
        0 => super::internal_topics::ensure_offsets_topic(shard).await,
        1 => super::internal_topics::ensure_txn_topic(shard).await,
        // Share groups (2) have no coordinator yet.
        _ => Err(errors::COORDINATOR_NOT_AVAILABLE),
    };
    let self_id = shard.config.node_id;
    let meta = shard.meta();
    let coordinators: Vec<Coordinator> = keys
        .into_iter()
        .map(|key| {
            let mut c = Coordinator::default();
            // The coordinator is the leader of the key's partition of the internal topic: this broker,
            // or in cluster mode whichever broker ZooKeeper names.
            let found = topic.as_ref().map_err(|e| *e).and_then(|t| {
                let partition = if req.key_type == 0 {
                    coordinator_partition(key.as_str(), t.partitions)
                } else {
                    crate::txn::partition_for(shard, key.as_str())
                };
                match t.leader(partition, self_id) {
                    l if l == self_id => Ok((
                        self_id,
                        shard.config.advertised.host.clone(),
                        shard.config.advertised.port as i32,
                    )),
                    l => meta
                        .brokers
                        .get(&l)
                        .map(|b| (b.id, b.host.clone(), b.port))
                        .ok_or(errors::COORDINATOR_NOT_AVAILABLE),
                }
            });
            c.key = key;
            match found {
                Ok((id, host, port)) => {
                    c.node_id = BrokerId(id);
                    c.host = s(&host);
                    c.port = port;
                }
                Err(code) => {
                    c.error_code = code;
                    c.node_id = BrokerId(-1);
                    c.port = -1;
                    c.error_message = Some(s("The coordinator is not available."));
                }
            }
            c
        })
        .collect();
    let mut resp = FindCoordinatorResponse::default();
    if version >= 4 {
        resp.coordinators = coordinators;
    } else {
        let c = coordinators.into_iter().next().unwrap_or_default();
        resp.error_code = c.error_code;
        resp.node_id = c.node_id;
        resp.host = c.host;
        resp.port = c.port;
        if version >= 1 {
            resp.error_message = c.error_message;
        }
    }
    Some(resp)
}

pub async fn handle_join_group(
    shard: &Rc<Shard>,
    header: &RequestHeader,
    req: JoinGroupRequest,
    version: i16,
) -> Option<JoinGroupResponse> {
    let group_id = req.group_id.0.to_string();
    let p = JoinParams {
        member_id: req.member_id.to_string(),
        instance_id: req.group_instance_id.as_ref().map(|s| s.to_string()),
        client_id: header
            .client_id
            .as_ref()
            .map(|s| s.to_string())
            .unwrap_or_default(),
        // The peer address is not known to handlers; Kafka shows "/<ip>". One broker on loopback here.
        client_host: "/127.0.0.1".to_string(),
        session_timeout_ms: req.session_timeout_ms,
        rebalance_timeout_ms: if version >= 1 {
            req.rebalance_timeout_ms
        } else {
            req.session_timeout_ms
        },
        protocol_type: req.protocol_type.to_string(),
        protocols: req
            .protocols
            .iter()
            .map(|p| (p.name.to_string(), p.metadata.clone()))
            .collect(),
        require_known_member_id: version >= 4,
        supports_skip_assignment: version >= 9,
    };
    let result = if group_id.is_empty() {
        crate::group::state::JoinResult::error(errors::INVALID_GROUP_ID, &p.member_id)
    } else {
        match locate(shard, &group_id) {
            Err(code) => crate::group::state::JoinResult::error(code, &p.member_id),
            Ok((owner, partition)) => {
                shard
                    .invoke_on(owner, move |s| coordinator::join(s, partition, group_id, p))
                    .await
            }
        }
    };
    let mut resp = JoinGroupResponse::default();
    resp.error_code = result.error;
    resp.generation_id = result.generation;
    if version >= 7 {
        resp.protocol_type = result.protocol_type.as_deref().map(s);
    }
    resp.protocol_name = match (version >= 7, result.protocol_name.as_deref()) {
        (_, Some(n)) => Some(s(n)),
        (true, None) => None,
        (false, None) => Some(StrBytes::default()),
    };
    resp.leader = s(&result.leader);
    if version >= 9 {
        resp.skip_assignment = result.skip_assignment;
    }
    resp.member_id = s(&result.member_id);
    resp.members = result
        .members
        .into_iter()
        .map(|(id, instance, metadata)| {
            let mut m = JoinGroupResponseMember::default();
            m.member_id = s(&id);
            if version >= 5 {
                m.group_instance_id = instance.as_deref().map(s);
            }
            m.metadata = metadata;
            m
        })
        .collect();
    Some(resp)
}

pub async fn handle_sync_group(
    shard: &Rc<Shard>,
    _header: &RequestHeader,
    req: SyncGroupRequest,
    version: i16,
) -> Option<SyncGroupResponse> {
    let group_id = req.group_id.0.to_string();
    let p = SyncParams {
        member_id: req.member_id.to_string(),
        instance_id: req.group_instance_id.as_ref().map(|s| s.to_string()),
        generation: req.generation_id,
        protocol_type: req.protocol_type.as_ref().map(|s| s.to_string()),
        protocol_name: req.protocol_name.as_ref().map(|s| s.to_string()),
        assignments: req
            .assignments
            .iter()
            .map(|a| (a.member_id.to_string(), a.assignment.clone()))
            .collect(),
    };
    let result = match locate(shard, &group_id) {
        Err(code) => crate::group::state::SyncResult::error(code),
        Ok((owner, partition)) => {
            shard
                .invoke_on(owner, move |s| coordinator::sync(s, partition, group_id, p))
                .await
        }
    };
    let mut resp = SyncGroupResponse::default();
    resp.error_code = result.error;
    if version >= 5 {
        resp.protocol_type = result.protocol_type.as_deref().map(s);
        resp.protocol_name = result.protocol_name.as_deref().map(s);
    }
    resp.assignment = result.assignment;
    Some(resp)
}

pub async fn handle_heartbeat(
    shard: &Rc<Shard>,
    _header: &RequestHeader,
    req: HeartbeatRequest,
    _version: i16,
) -> Option<HeartbeatResponse> {
    let group_id = req.group_id.0.to_string();
    let member_id = req.member_id.to_string();
    let instance_id = req.group_instance_id.as_ref().map(|s| s.to_string());
    let generation = req.generation_id;
    let code = match locate(shard, &group_id) {
        Err(code) => code,
        Ok((owner, partition)) => {
            shard
                .invoke_on(owner, move |s| {
                    coordinator::heartbeat(
                        s,
                        partition,
                        group_id,
                        member_id,
                        instance_id,
                        generation,
                    )
                })
                .await
        }
    };
    let mut resp = HeartbeatResponse::default();
    resp.error_code = code;
    Some(resp)
}

pub async fn handle_leave_group(
    shard: &Rc<Shard>,
    _header: &RequestHeader,
    req: LeaveGroupRequest,
    version: i16,
) -> Option<LeaveGroupResponse> {
    let group_id = req.group_id.0.to_string();
    let who: Vec<LeaveParams> = if version >= 3 {
        req.members
            .iter()
            .map(|m| LeaveParams {
                member_id: m.member_id.to_string(),
                instance_id: m.group_instance_id.as_ref().map(|s| s.to_string()),
            })
            .collect()
    } else {
        vec![LeaveParams {
            member_id: req.member_id.to_string(),
            instance_id: None,
        }]
    };
    let asked = who.clone();
    let outcome = match locate(shard, &group_id) {
        Err(code) => Err(code),
        Ok((owner, partition)) => {
            shard
                .invoke_on(owner, move |s| {
                    coordinator::leave(s, partition, group_id, who)
                })
                .await
        }
    };
    let mut resp = LeaveGroupResponse::default();
    match outcome {
        Err(code) => resp.error_code = code,
        Ok(codes) => {
            if version >= 3 {
                resp.members = asked
                    .iter()
                    .zip(codes)
                    .map(|(l, code)| {
                        let mut m = MemberResponse::default();
                        m.member_id = s(&l.member_id);
                        m.group_instance_id = l.instance_id.as_deref().map(s);
                        m.error_code = code;
                        m
                    })
                    .collect();
            } else {
                resp.error_code = codes.first().copied().unwrap_or(errors::NONE);
            }
        }
    }
    Some(resp)
}

/// How Kafka's `OffsetCommitResponse.Builder` tells the topics of an answer apart: by name up to v9
/// (`TopicNameBuilder`), by id from v10 (`TopicIdBuilder`).
#[derive(Clone, PartialEq, Eq, Hash)]
enum CommitTopicKey {
    Name(TopicName),
    Id(uuid::Uuid),
}

/// An OffsetCommit answer assembled as Kafka 4.4's `OffsetCommitResponse.Builder` assembles it: the
/// partitions refused before the coordinator is asked come first, one entry per topic; the coordinator's
/// answer is then merged in (appended to the entry of its topic, or added after them). When nothing was
/// refused, the coordinator's answer is the whole answer, one entry per request topic.
struct CommitAnswer {
    by_id: bool,
    topics: Vec<OffsetCommitResponseTopic>,
    index: std::collections::HashMap<CommitTopicKey, usize>,
}

impl CommitAnswer {
    fn new(version: i16) -> Self {
        CommitAnswer {
            by_id: version >= 10,
            topics: Vec::new(),
            index: std::collections::HashMap::new(),
        }
    }

    fn key(&self, t: &OffsetCommitResponseTopic) -> CommitTopicKey {
        if self.by_id {
            CommitTopicKey::Id(t.topic_id)
        } else {
            CommitTopicKey::Name(t.name.clone())
        }
    }

    fn add(&mut self, topic: OffsetCommitResponseTopic) {
        let key = self.key(&topic);
        match self.index.get(&key) {
            Some(&i) => self.topics[i].partitions.extend(topic.partitions),
            None => {
                self.index.insert(key, self.topics.len());
                self.topics.push(topic);
            }
        }
    }

    /// Kafka's `addPartition`: one refused partition of a topic.
    fn refuse(&mut self, name: &TopicName, id: uuid::Uuid, partition: i32, code: i16) {
        let mut t = OffsetCommitResponseTopic::default();
        t.name = name.clone();
        t.topic_id = id;
        let mut p = OffsetCommitResponsePartition::default();
        p.partition_index = partition;
        p.error_code = code;
        t.partitions.push(p);
        self.add(t);
    }

    /// Kafka's `merge`: the coordinator's answer, one entry per topic sent to it.
    fn merge(mut self, answered: Vec<OffsetCommitResponseTopic>) -> Vec<OffsetCommitResponseTopic> {
        if self.topics.is_empty() {
            return answered;
        }
        for t in answered {
            self.add(t);
        }
        self.topics
    }
}

/// OffsetCommit as Kafka 4.4's `KafkaApis.handleOffsetCommitRequest` serves it. Up to v9 topics are named,
/// from v10 they are identified by id (KIP-848): an unknown id is answered UNKNOWN_TOPIC_ID, an unknown
/// name or a partition the topic does not have UNKNOWN_TOPIC_OR_PARTITION, before the coordinator is
/// asked; if nothing is left for it, it is not asked at all. An empty group id is a group like any other
/// (Kafka refuses only a null one).
pub async fn handle_offset_commit(
    shard: &Rc<Shard>,
    _header: &RequestHeader,
    req: OffsetCommitRequest,
    version: i16,
) -> Option<OffsetCommitResponse> {
    let group_id = req.group_id.0.to_string();
    let mut answer = CommitAnswer::new(version);
    // What the coordinator is asked: per request topic, its partitions that exist.
    let mut known: Vec<(String, Vec<CommitPartition>)> = Vec::new();
    let mut known_topics: Vec<(TopicName, uuid::Uuid)> = Vec::new();
    let meta = shard.meta();
    for t in &req.topics {
        let topic = if version >= 10 {
            meta.topic_by_id(&t.topic_id)
        } else {
            meta.topics.get(t.name.0.as_str())
        };
        let Some(topic) = topic else {
            let code = if version >= 10 {
                errors::UNKNOWN_TOPIC_ID
            } else {
                errors::UNKNOWN_TOPIC_OR_PARTITION
            };
            for p in &t.partitions {
                answer.refuse(&t.name, t.topic_id, p.partition_index, code);
            }
            continue;
        };
        let name = TopicName(s(&topic.name));
        let mut parts = Vec::new();
        for p in &t.partitions {
            if p.partition_index < 0 || p.partition_index >= topic.partitions {
                answer.refuse(
                    &name,
                    topic.id,
                    p.partition_index,
                    errors::UNKNOWN_TOPIC_OR_PARTITION,
                );
                continue;
            }
            parts.push(CommitPartition {
                partition: p.partition_index,
                offset: p.committed_offset,
                leader_epoch: if version >= 6 {
                    p.committed_leader_epoch
                } else {
                    -1
                },
                metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
            });
        }
        if !parts.is_empty() {
            known.push((topic.name.clone(), parts));
            known_topics.push((name, topic.id));
        }
    }
    drop(meta);
    let mut resp = OffsetCommitResponse::default();
    if known.is_empty() {
        resp.topics = answer.topics;
        return Some(resp);
    }
    let who = CommitIdentity {
        generation: req.generation_id_or_member_epoch,
        member_id: req.member_id.to_string(),
        instance_id: req.group_instance_id.as_ref().map(|s| s.to_string()),
        version,
    };
    let partitions: Vec<Vec<i32>> = known
        .iter()
        .map(|(_, ps)| ps.iter().map(|p| p.partition).collect())
        .collect();
    let codes: Vec<Vec<i16>> = match locate(shard, &group_id) {
        Err(code) => partitions.iter().map(|ps| vec![code; ps.len()]).collect(),
        Ok((owner, partition)) => {
            shard
                .invoke_on(owner, move |s| {
                    coordinator::commit(s, partition, group_id, who, known)
                })
                .await
        }
    };
    let answered = known_topics
        .into_iter()
        .zip(partitions)
        .zip(codes)
        .map(|(((name, id), ps), codes)| {
            let mut t = OffsetCommitResponseTopic::default();
            t.name = name;
            t.topic_id = id;
            t.partitions = ps
                .into_iter()
                .zip(codes)
                .map(|(index, code)| {
                    let mut p = OffsetCommitResponsePartition::default();
                    p.partition_index = index;
                    p.error_code = code;
                    p
                })
                .collect();
            t
        })
        .collect();
    resp.topics = answer.merge(answered);
    Some(resp)
}

type FetchOutcome = Result<Vec<(String, Vec<FetchedOffset>)>, i16>;

async fn fetch_group(
    shard: &Rc<Shard>,
    group_id: String,
    topics: Option<Vec<(String, Vec<i32>)>>,
    require_stable: bool,
) -> FetchOutcome {
    let (owner, partition) = locate(shard, &group_id)?;
    shard
        .invoke_on(owner, move |s| {
            coordinator::fetch_offsets(s, partition, group_id, topics, require_stable)
        })
        .await
}

pub async fn handle_offset_fetch(
    shard: &Rc<Shard>,
    _header: &RequestHeader,
    req: OffsetFetchRequest,
    version: i16,
) -> Option<OffsetFetchResponse> {
    let mut resp = OffsetFetchResponse::default();
    let epoch = |e: i32| if version >= 5 { e } else { -1 };
    if version <= 7 {
        let topics = req.topics.as_ref().map(|ts| {
            ts.iter()
                .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
                .collect()
        });
        match fetch_group(
            shard,
            req.group_id.0.to_string(),
            topics,
            req.require_stable,
        )
        .await
        {
            Err(code) => {
                if version >= 2 {
                    resp.error_code = code;
                }
                // v0-1 carry errors per partition only.
                for t in req.topics.iter().flatten() {
                    let mut tr = OffsetFetchResponseTopic::default();
                    tr.name = t.name.clone();
                    for p in &t.partition_indexes {
                        let mut pr = OffsetFetchResponsePartition::default();
                        pr.partition_index = *p;
                        pr.committed_offset = -1;
                        pr.error_code = code;
                        tr.partitions.push(pr);
                    }
                    resp.topics.push(tr);
                }
            }
            Ok(found) => {
                for (name, parts) in found {
                    let mut tr = OffsetFetchResponseTopic::default();
                    tr.name = TopicName(s(&name));
                    for (p, offset, leader_epoch, metadata, error) in parts {
                        let mut pr = OffsetFetchResponsePartition::default();
                        pr.partition_index = p;
                        pr.error_code = error;
                        pr.committed_offset = offset;
                        pr.committed_leader_epoch = epoch(leader_epoch);
                        pr.metadata = Some(s(&metadata));
                        tr.partitions.push(pr);
                    }
                    resp.topics.push(tr);
                }
            }
        }
        return Some(resp);
    }
    // v8+: many groups. Up to v9 topics are named and go to the coordinator as they are; from v10 they are
    // identified by id (KIP-848), as Kafka 4.4's `KafkaApis.fetchOffsetsForGroup` serves them: an unknown
    // id is answered UNKNOWN_TOPIC_ID for each of its partitions, after the coordinator's answer for the
    // known ones (one entry per request topic); asked for every topic, the answer leaves out the topics
    // that no longer exist (they have no id). A group error answers the group without topics.
    let by_id = version >= 10;
    let meta = shard.meta();
    let mut plans = Vec::with_capacity(req.groups.len());
    for g in &req.groups {
        let mut unknown = Vec::new();
        let topics = g.topics.as_ref().map(|ts| {
            let mut named = Vec::with_capacity(ts.len());
            for t in ts {
                if !by_id {
                    named.push((
                        t.name.0.to_string(),
                        t.partition_indexes.clone(),
                        t.topic_id,
                    ));
                    continue;
                }
                match meta.topic_by_id(&t.topic_id) {
                    Some(m) => named.push((m.name.clone(), t.partition_indexes.clone(), m.id)),
                    None => {
                        let mut tr = OffsetFetchResponseTopics::default();
                        tr.topic_id = t.topic_id;
                        tr.partitions = t
                            .partition_indexes
                            .iter()
                            .map(|&p| {
                                let mut pr = OffsetFetchResponsePartitions::default();
                                pr.partition_index = p;
                                pr.committed_offset = -1;
                                pr.error_code = errors::UNKNOWN_TOPIC_ID;
                                pr
                            })
                            .collect();
                        unknown.push(tr);
                    }
                }
            }
            named
        });
        plans.push((topics, unknown));
    }
    // Every group's read starts now, in request order (join_all polls them in order), so each sees the
    // mutations that arrived before this request and none that came after it.
    let reads = req.groups.iter().zip(&plans).map(|(g, (topics, _))| {
        let topics = topics.as_ref().map(|ts| {
            ts.iter()
                .map(|(n, ps, _)| (n.clone(), ps.clone()))
                .collect()
        });
        fetch_group(shard, g.group_id.0.to_string(), topics, req.require_stable)
    });
    let outcomes = futures::future::join_all(reads).await;
    let meta = shard.meta();
    for ((g, (topics, unknown)), outcome) in req.groups.iter().zip(plans).zip(outcomes) {
        let mut gr = OffsetFetchResponseGroup::default();
        gr.group_id = g.group_id.clone();
        match outcome {
            Err(code) => gr.error_code = code,
            Ok(found) => {
                // The coordinator answers the named topics one for one, in order; asked for all topics,
                // it answers those it holds offsets for.
                let ids: Vec<Option<uuid::Uuid>> = match &topics {
                    Some(ts) => ts.iter().map(|(_, _, id)| Some(*id)).collect(),
                    None => found
                        .iter()
                        .map(|(name, _)| meta.topics.get(name).map(|m| m.id))
                        .collect(),
                };
                for ((name, parts), id) in found.into_iter().zip(ids) {
                    let mut tr = OffsetFetchResponseTopics::default();
                    if by_id {
                        let Some(id) = id else { continue };
                        tr.topic_id = id;
                    }
                    tr.name = TopicName(s(&name));
                    for (p, offset, leader_epoch, metadata, error) in parts {
                        let mut pr = OffsetFetchResponsePartitions::default();
                        pr.partition_index = p;
                        pr.error_code = error;
                        pr.committed_offset = offset;
                        pr.committed_leader_epoch = leader_epoch;
                        pr.metadata = Some(s(&metadata));
                        tr.partitions.push(pr);
                    }
                    gr.topics.push(tr);
                }
                gr.topics.extend(unknown);
            }
        }
        resp.groups.push(gr);
    }
    Some(resp)
}

pub async fn handle_list_groups(
    shard: &Rc<Shard>,
    _header: &RequestHeader,
    req: ListGroupsRequest,
    version: i16,
) -> Option<ListGroupsResponse> {
    let states: Vec<String> = req
        .states_filter
        .iter()
        .map(|s| s.to_string().to_lowercase())
        .collect();
    let types: Vec<String> = req
        .types_filter
        .iter()
        .map(|s| s.to_string().to_lowercase())
        .collect();
    let mut resp = ListGroupsResponse::default();
    // Every classic group is of type "classic"; a filter without it matches nothing.
    if !types.is_empty() && !types.iter().any(|t| t == "classic") {
        return Some(resp);
    }
    let lists = (0..shard.cores)
        .map(|core| shard.invoke_on(core, |s| async move { coordinator::list(&s) }));
    for list in futures::future::join_all(lists).await {
        for (id, protocol_type, state) in list {
            if !states.is_empty() && !states.contains(&state.to_lowercase()) {
                continue;
            }
            let mut g = ListedGroup::default();
            g.group_id = GroupId(s(&id));
            g.protocol_type = s(&protocol_type);
            if version >= 4 {
                g.group_state = s(state);
            }
            if version >= 5 {
                g.group_type = s("classic");
            }
            resp.groups.push(g);
        }
    }
    Some(resp)
}

pub async fn handle_describe_groups(
    shard: &Rc<Shard>,
    _header: &RequestHeader,
    req: DescribeGroupsRequest,
    version: i16,
) -> Option<DescribeGroupsResponse> {
    let mut resp = DescribeGroupsResponse::default();
    for gid in req.groups {
        let group_id = gid.0.to_string();
        let d = match locate(shard, &group_id) {
            Err(code) => coordinator::GroupDescription {
                error: code,
                state: "Dead",
                protocol_type: String::new(),
                protocol: String::new(),
                members: Vec::new(),
            },
            Ok((owner, partition)) => {
                let id = group_id.clone();
                shard
                    .invoke_on(owner, move |s| coordinator::describe(s, partition, id))
                    .await
            }
        };
        let mut g = DescribedGroup::default();
        g.group_id = gid;
        g.error_code = d.error;
        if d.error == errors::GROUP_ID_NOT_FOUND && version < 6 {
            // Before v6 an unknown group is described as Dead without error.
            g.error_code = errors::NONE;
        } else if d.error != errors::NONE && version >= 6 {
            g.error_message = Some(s(&format!("Group {group_id} not found.")));
        }
        g.group_state = s(d.state);
        g.protocol_type = s(&d.protocol_type);
        g.protocol_data = s(&d.protocol);
        g.members = d
            .members
            .into_iter()
            .map(|m| {
                let mut dm = DescribedGroupMember::default();
                dm.member_id = s(&m.member_id);
                if version >= 4 {
                    dm.group_instance_id = m.instance_id.as_deref().map(s);
                }
                dm.client_id = s(&m.client_id);
                dm.client_host = s(&m.client_host);
                dm.member_metadata = m.metadata;
                dm.member_assignment = m.assignment;
                dm
            })
            .collect();
        // Kafka reports the operations of groups it describes without error (before v6 that includes
        // unknown groups, described as Dead).
        if version >= 3 && g.error_code == errors::NONE {
            g.authorized_operations =
                acl::field(req.include_authorized_operations, ResourceType::Group);
        }
        resp.groups.push(g);
    }
    Some(resp)
}

pub async fn handle_delete_groups(
    shard: &Rc<Shard>,
    _header: &RequestHeader,
    req: DeleteGroupsRequest,
    _version: i16,
) -> Option<DeleteGroupsResponse> {
    // Each group once, in the order Kafka 4.4 answers them (an artefact of its hash maps).
    let groups = crate::group::hash_order::delete_groups_order(
        &req.groups_names
            .iter()
            .map(|g| g.0.to_string())
            .collect::<Vec<_>>(),
        shard.config.group.offsets_topic_partitions,
    );
    // Every deletion starts now (join_all polls them in order): a request after this one sees all of them.
    let deletions = groups.iter().map(|group_id| {
        let group_id = group_id.clone();
        async move {
            match locate(shard, &group_id) {
                Err(code) => code,
                Ok((owner, partition)) => {
                    shard
                        .invoke_on(owner, move |s| coordinator::delete(s, partition, group_id))
                        .await
                }
            }
        }
    });
    let codes = futures::future::join_all(deletions).await;
    let mut resp = DeleteGroupsResponse::default();
    for (group_id, code) in groups.into_iter().zip(codes) {
        let mut r = DeletableGroupResult::default();
        r.group_id = GroupId(s(&group_id));
        r.error_code = code;
        // v3's ErrorMessage stays null: Kafka 4.4 sets it only from a Kafka Streams topology plugin or
        // from an exception whose message differs from its error's default one. GROUP_ID_NOT_FOUND and
        // NON_EMPTY_GROUP are plain codes, and NOT_COORDINATOR / COORDINATOR_LOAD_IN_PROGRESS are thrown
        // with their default messages (`CoordinatorRuntime`), so Kafka answers null for all of them.
        resp.results.push(r);
    }
    Some(resp)
}

pub async fn handle_offset_delete(
    shard: &Rc<Shard>,
    _header: &RequestHeader,
    req: OffsetDeleteRequest,
    _version: i16,
) -> Option<OffsetDeleteResponse> {
    let group_id = req.group_id.0.to_string();
    let topics: Vec<(String, Vec<i32>)> = req
        .topics
        .iter()
        .map(|t| {
            (
                t.name.0.to_string(),
                t.partitions.iter().map(|p| p.partition_index).collect(),
            )
        })
        .collect();
    let outcome = match locate(shard, &group_id) {
        Err(code) => Err(code),
        Ok((owner, partition)) => {
            shard
                .invoke_on(owner, move |s| {
                    coordinator::delete_offsets(s, partition, group_id, topics)
                })
                .await
        }
    };
    let mut resp = OffsetDeleteResponse::default();
    match outcome {
        Err(code) => resp.error_code = code,
        Ok(answers) => {
            for (name, parts) in answers {
                let mut tr = OffsetDeleteResponseTopic::default();
                tr.name = TopicName(s(&name));
                for (p, code) in parts {
                    let mut pr = OffsetDeleteResponsePartition::default();
                    pr.partition_index = p;
                    pr.error_code = code;
                    tr.partitions.push(pr);
                }
                resp.topics.push(tr);
            }
        }
    }
    Some(resp)
}
