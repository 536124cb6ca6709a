//! The controller's decisions, free of IO: what ZooKeeper holds goes in ([`Model`]), the znode writes
//! that bring it to the wanted state come out ([`Action`]). The session (`session.rs`) reads the model,
//! runs [`plan`] after every change it sees and writes the actions, each fenced by the controller epoch;
//! the writes come back as changes, so planning repeats until nothing is left to do.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use uuid::Uuid;

use super::layout::{self, PartitionState, Znode};
use crate::metadata::{BrokerMeta, ClusterMeta, PartitionMeta, TopicMeta};

/// One topic as ZooKeeper holds it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TopicZ {
    pub id: Option<Uuid>,
    pub replicas: Vec<Vec<i32>>,
    pub states: BTreeMap<i32, PartitionState>,
}

/// Everything the cluster keeps in ZooKeeper that a broker or the controller acts on.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Model {
    pub cluster_id: Option<String>,
    pub controller: Option<i32>,
    pub brokers: BTreeMap<i32, BrokerMeta>,
    pub topics: BTreeMap<String, TopicZ>,
    pub deleting: BTreeSet<String>,
    pub topic_configs: BTreeMap<String, BTreeMap<String, String>>,
    pub broker_configs: BTreeMap<String, BTreeMap<String, String>>,
}

impl Model {
    /// Builds the model from znode contents by path (paths the model does not use are ignored).
    pub fn from_znodes<'a>(znodes: impl IntoIterator<Item = (&'a String, &'a Vec<u8>)>) -> Model {
        let mut m = Model::default();
        let mut states = Vec::new();
        for (path, data) in znodes {
            match Znode::parse(path) {
                Some(Znode::Broker(id)) => {
                    if let Some(b) = layout::parse_broker(id, data) {
                        m.brokers.insert(id, b);
                    }
                }
                Some(Znode::Topic(t)) => {
                    if let Some((id, replicas)) = layout::parse_topic(data) {
                        let e = m.topics.entry(t).or_default();
                        e.id = id;
                        e.replicas = replicas;
                    }
                }
                Some(Znode::State(t, p)) => {
                    if let Some(s) = layout::parse_partition_state(data) {
                        states.push((t, p, s));
                    }
                }
                Some(Znode::TopicConfig(t)) => {
                    m.topic_configs.insert(t, layout::parse_config(data));
                }
                Some(Znode::BrokerConfig(b)) => {
                    m.broker_configs.insert(b, layout::parse_config(data));
                }
                Some(Znode::DeleteTopic(t)) => {
                    m.deleting.insert(t);
                }
                Some(Znode::Controller) => m.controller = layout::parse_controller(data),
                Some(Znode::ClusterId) => m.cluster_id = layout::parse_cluster_id(data),
                Some(Znode::ControllerEpoch) | None => {}
            }
        }
        for (t, p, s) in states {
            if let Some(topic) = m.topics.get_mut(&t) {
                topic.states.insert(p, s);
            }
        }
        m
    }

    /// The broker's metadata snapshot for this model. Topics being deleted and topics without an id yet
    /// are left out; `previous` supplies what ZooKeeper does not hold.
    pub fn to_meta(&self, previous: &ClusterMeta) -> ClusterMeta {
        let mut meta = previous.clone();
        if let Some(id) = &self.cluster_id {
            meta.cluster_id = id.clone();
        }
        meta.controller_id = self.controller;
        meta.brokers = self.brokers.clone();
        meta.topics = self
            .topics
            .iter()
            .filter(|(name, _)| !self.deleting.contains(*name))
            .filter_map(|(name, t)| {
                let id = t.id?;
                let assignment = t
                    .replicas
                    .iter()
                    .enumerate()
                    .map(|(p, replicas)| match t.states.get(&(p as i32)) {
                        Some(s) => PartitionMeta {
                            replicas: replicas.clone(),
                            leader: s.leader,
                            leader_epoch: s.leader_epoch,
                            isr: s.isr.clone(),
                        },
                        None => PartitionMeta {
                            replicas: replicas.clone(),
                            leader: -1,
                            leader_epoch: 0,
                            isr: Vec::new(),
                        },
                    })
                    .collect::<Vec<_>>();
                let topic = TopicMeta {
                    name: name.clone(),
                    id,
                    partitions: assignment.len() as i32,
                    configs: self.topic_configs.get(name).cloned().unwrap_or_default(),
                    leader_epoch: 0,
                    internal: name.starts_with("__"),
                    assignment,
                };
                Some((name.clone(), Arc::new(topic)))
            })
            .collect();
        meta.broker_configs = self
            .broker_configs
            .iter()
            .filter_map(|(entity, c)| Some((entity.parse::<i32>().ok()?, c.clone())))
            .collect();
        let mut defaults = ClusterMeta::new_cluster().default_broker_configs;
        if let Some(c) = self.broker_configs.get(layout::DEFAULT_BROKER_ENTITY) {
            defaults.extend(c.clone());
        }
        meta.default_broker_configs = defaults;
        meta
    }
}

/// A znode write the controller wants.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Create (no state yet) or replace a partition's state.
    WriteState {
        topic: String,
        partition: i32,
        state: PartitionState,
        create: bool,
    },
    /// Give a topic written without an id (by an older tool) one, as Kafka 2.8+ controllers do.
    SetTopicId {
        topic: String,
        id: Uuid,
        replicas: Vec<Vec<i32>>,
    },
    /// Remove a topic marked for deletion: its states, assignment, config and the marker.
    DeleteTopic { topic: String, partitions: i32 },
}

/// The controller's actions for `model`: new partitions get a leader from their live replicas, a dead
/// leader is replaced by a live in-sync replica (or none: `leader` -1, the ISR kept, as Kafka's clean
/// election leaves it), a leaderless partition whose in-sync replica came back gets it as leader.
pub fn plan(model: &Model, controller_epoch: i32, mut new_id: impl FnMut() -> Uuid) -> Vec<Action> {
    let live = |b: &i32| model.brokers.contains_key(b);
    let mut actions = Vec::new();
    for topic in &model.deleting {
        let partitions = model
            .topics
            .get(topic)
            .map_or(0, |t| t.replicas.len() as i32);
        actions.push(Action::DeleteTopic {
            topic: topic.clone(),
            partitions,
        });
    }
    for (name, t) in &model.topics {
        if model.deleting.contains(name) {
            continue;
        }
        if t.id.is_none() {
            actions.push(Action::SetTopicId {
                topic: name.clone(),
                id: new_id(),
                replicas: t.replicas.clone(),
            });
        }
        for (p, replicas) in t.replicas.iter().enumerate() {
            let p = p as i32;
            let wanted = match t.states.get(&p) {
                None => replicas.iter().copied().find(live).map(|leader| {
                    (
                        PartitionState {
                            leader,
                            leader_epoch: 0,
                            isr: replicas.iter().copied().filter(live).collect(),
                            controller_epoch,
                        },
                        true,
                    )
                }),
                Some(s) if s.leader >= 0 && !live(&s.leader) => {
                    let next = s.isr.iter().copied().find(|b| *b != s.leader && live(b));
                    let state = match next {
                        Some(leader) => PartitionState {
                            leader,
                            leader_epoch: s.leader_epoch + 1,
                            isr: s.isr.iter().copied().filter(live).collect(),
                            controller_epoch,
                        },
                        None => PartitionState {
                            leader: -1,
                            leader_epoch: s.leader_epoch + 1,
                            isr: s.isr.clone(),
                            controller_epoch,
                        },
                    };
                    Some((state, false))
                }
                Some(s) if s.leader < 0 => s.isr.iter().copied().find(live).map(|leader| {
                    (
                        PartitionState {
                            leader,
                            leader_epoch: s.leader_epoch + 1,
                            isr: s.isr.iter().copied().filter(live).collect(),
                            controller_epoch,
                        },
                        false,
                    )
                }),
                Some(_) => None,
            };
            if let Some((state, create)) = wanted {
                actions.push(Action::WriteState {
                    topic: name.clone(),
                    partition: p,
                    state,
                    create,
                });
            }
        }
    }
    actions
}

/// Replicas for partitions `first..first + count` of a topic over `brokers`, as Kafka's
/// `AdminUtils.assignReplicasToBrokers` spreads them: brokers in rack-alternating order, each partition's
/// leader the next broker from a starting index, followers the brokers after it.
pub fn assign(
    brokers: &BTreeMap<i32, BrokerMeta>,
    first: i32,
    count: i32,
    replication_factor: usize,
    start: usize,
) -> Vec<Vec<i32>> {
    let order = rack_alternating(brokers);
    let n = order.len();
    if n == 0 {
        return Vec::new();
    }
    let rf = replication_factor.clamp(1, n);
    (first..first + count)
        .map(|p| {
            let lead = (start + p as usize) % n;
            // Followers are the next brokers in rack-alternating order: on other racks where possible.
            let r: Vec<i32> = (0..rf).map(|j| order[(lead + j) % n]).collect();
            r
        })
        .collect()
}

/// Brokers ordered so that consecutive ones are on different racks where racks allow (brokers without
/// a rack keep id order).
fn rack_alternating(brokers: &BTreeMap<i32, BrokerMeta>) -> Vec<i32> {
    let mut by_rack: BTreeMap<Option<&str>, Vec<i32>> = BTreeMap::new();
    for b in brokers.values() {
        by_rack.entry(b.rack.as_deref()).or_default().push(b.id);
    }
    if by_rack.len() <= 1 {
        return brokers.keys().copied().collect();
    }
    let mut out = Vec::with_capacity(brokers.len());
    let mut round = 0;
    while out.len() < brokers.len() {
        for ids in by_rack.values() {
            if let Some(id) = ids.get(round) {
                out.push(*id);
            }
        }
        round += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brokers(ids: &[(i32, Option<&str>)]) -> BTreeMap<i32, BrokerMeta> {
        ids.iter()
            .map(|(id, rack)| {
                (
                    *id,
                    BrokerMeta {
                        id: *id,
                        host: "h".into(),
                        port: 1,
                        rack: rack.map(str::to_string),
                    },
                )
            })
            .collect()
    }

    fn model(live: &[i32], replicas: Vec<Vec<i32>>) -> Model {
        let mut m = Model {
            brokers: brokers(&live.iter().map(|b| (*b, None)).collect::<Vec<_>>()),
            ..Model::default()
        };
        m.topics.insert(
            "t".into(),
            TopicZ {
                id: Some(Uuid::new_v4()),
                replicas,
                states: BTreeMap::new(),
            },
        );
        m
    }

    fn apply(m: &mut Model, actions: &[Action]) {
        for a in actions {
            if let Action::WriteState {
                topic,
                partition,
                state,
                ..
            } = a
            {
                m.topics
                    .get_mut(topic)
                    .unwrap()
                    .states
                    .insert(*partition, state.clone());
            }
        }
    }

    #[test]
    fn new_partitions_get_live_leaders_and_planning_converges() {
        let mut m = model(&[1, 2], vec![vec![1], vec![2], vec![3]]);
        let a = plan(&m, 1, Uuid::new_v4);
        assert_eq!(
            a.len(),
            2,
            "partition 2's only replica is not live: no state yet"
        );
        apply(&mut m, &a);
        assert!(plan(&m, 1, Uuid::new_v4).is_empty());
        assert_eq!(m.topics["t"].states[&1].leader, 2);
    }

    #[test]
    fn dead_leader_goes_offline_and_comes_back_with_a_new_epoch() {
        let mut m = model(&[1, 2], vec![vec![1], vec![2]]);
        let actions = plan(&m, 1, Uuid::new_v4);
        apply(&mut m, &actions);
        m.brokers.remove(&2);
        let a = plan(&m, 2, Uuid::new_v4);
        apply(&mut m, &a);
        let s = &m.topics["t"].states[&1];
        assert_eq!((s.leader, s.leader_epoch, s.isr.clone()), (-1, 1, vec![2]));
        assert!(plan(&m, 2, Uuid::new_v4).is_empty());
        m.brokers = brokers(&[(1, None), (2, None)]);
        let actions = plan(&m, 2, Uuid::new_v4);
        apply(&mut m, &actions);
        let s = &m.topics["t"].states[&1];
        assert_eq!((s.leader, s.leader_epoch, s.controller_epoch), (2, 2, 2));
    }

    #[test]
    fn deletion_and_missing_ids() {
        let mut m = model(&[1], vec![vec![1]]);
        m.topics.get_mut("t").unwrap().id = None;
        assert!(matches!(
            plan(&m, 1, Uuid::new_v4)[0],
            Action::SetTopicId { .. }
        ));
        m.deleting.insert("t".into());
        assert_eq!(
            plan(&m, 1, Uuid::new_v4),
            vec![Action::DeleteTopic {
                topic: "t".into(),
                partitions: 1
            }]
        );
        assert!(m.to_meta(&ClusterMeta::default()).topics.is_empty());
    }

    #[test]
    fn assignment_spreads_over_brokers_and_racks() {
        let b = brokers(&[(1, None), (2, None), (3, None)]);
        let a = assign(&b, 0, 12, 1, 1);
        for id in 1..=3 {
            assert_eq!(a.iter().filter(|r| r[0] == id).count(), 4);
        }
        let b = brokers(&[
            (1, Some("a")),
            (2, Some("a")),
            (3, Some("b")),
            (4, Some("b")),
        ]);
        for r in assign(&b, 0, 8, 2, 0) {
            assert_eq!(r.len(), 2);
            assert_ne!(b[&r[0]].rack, b[&r[1]].rack, "{r:?}");
        }
        assert!(assign(&BTreeMap::new(), 0, 3, 1, 0).is_empty());
    }
}
