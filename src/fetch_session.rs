//! Incremental fetch sessions (KIP-227) as a pure state machine: Apache Kafka's `FetchManager`,
//! `FetchSessionCacheShard`, `FetchSession` and the session half of `FetchContext` (Kafka 4.4,
//! `server/src/main/java/org/apache/kafka/server/`).
//!
//! A consumer that fetches many partitions sends all of them once (a *full* fetch with epoch 0) and gets a
//! session id back; afterwards it sends only the partitions whose position or limit changed, plus the ones
//! to forget, and the broker answers only the partitions with news. The broker keeps, per session and
//! partition, the fetch position and limit last asked for and the high watermark and log start offset last
//! sent.
//!
//! **Ownership.** One [`FetchSessionCache`] per core, owned by that core and never shared: a connection
//! stays on the core that accepted it, so its session lives where its fetches arrive. Session ids are split
//! between the cores the way Kafka splits them between its cache shards: core `c` of `n` hands out ids in
//! `[max(1, c * r), (c + 1) * r)` with `r = i32::MAX / n`. An id shown to another core (the client
//! reconnected and landed elsewhere, or the broker restarted) is unknown there: FETCH_SESSION_ID_NOT_FOUND,
//! and the client starts over with a full fetch, as it does when Kafka evicts its session.
//!
//! **Fault model.** Everything here comes from the network: ids, epochs and partition lists are untrusted
//! and every mismatch is an error code for the client, never a crash. The cache is bounded (its share of
//! `max.incremental.fetch.session.cache.slots` sessions; a session holds at most the partitions its client
//! named, which the request size bounds). Nothing here reads a clock, draws OS randomness or does I/O:
//! times are passed in and ids come from a seeded generator, so every path is tested without a runtime.
//!
//! **A fetch in two steps**, as in Kafka: [`FetchSessionCache::new_context`] decides from the request's
//! session id and epoch what kind of fetch it is and which partitions to read (for an incremental fetch:
//! every partition of the session, in the session's order); after the read (and the long poll),
//! [`FetchSessionCache::create`] caches a full fetch's answer as a new session, and
//! [`FetchSessionCache::respond`] picks the partitions an incremental answer carries and moves those that
//! returned records to the end of the session's order, so that one busy partition cannot keep the response
//! budget from the partitions behind it.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use indexmap::IndexMap;
use uuid::Uuid;

use crate::protocol::errors;

/// The session id of a fetch without a session.
pub const INVALID_SESSION_ID: i32 = 0;
/// Epoch of a full fetch that asks for a new session (closing the one it names, if any).
pub const INITIAL_EPOCH: i32 = 0;
/// Epoch of a full fetch that closes the session it names and wants none.
pub const FINAL_EPOCH: i32 = -1;

/// The epoch after `epoch`, as Kafka's `FetchMetadata.nextEpoch`: negative stays final; after
/// `i32::MAX` comes 1 (0 means "new session").
pub fn next_epoch(epoch: i32) -> i32 {
    if epoch < 0 {
        FINAL_EPOCH
    } else if epoch == i32::MAX {
        1
    } else {
        epoch + 1
    }
}

/// The half-open range of session ids core `core` of `cores` hands out.
pub fn id_range(core: usize, cores: usize) -> (i32, i32) {
    assert!(core < cores, "core {core} of {cores}");
    let range = i32::MAX / cores as i32;
    let start = (core as i32 * range).max(1);
    (start, (core as i32 + 1) * range)
}

/// The core whose cache may hold session `session_id`, if any does.
pub fn core_of(session_id: i32, cores: usize) -> Option<usize> {
    if session_id <= INVALID_SESSION_ID {
        return None;
    }
    let core = (session_id / (i32::MAX / cores as i32)) as usize;
    (core < cores).then_some(core)
}

/// How a session names its topics: by id (Fetch v13+) or by name (v7-12). One session uses one of them.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TopicKey {
    Id(Uuid),
    Name(Arc<str>),
}

/// One partition as a session keys it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PartitionKey {
    pub topic: TopicKey,
    pub partition: i32,
}

/// What a fetch asks of one partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FetchParams {
    pub fetch_offset: i64,
    pub max_bytes: i32,
    /// The leader epoch the client believes current (Fetch v9+), -1 when not given: a stale one is
    /// FENCED_LEADER_EPOCH, a newer one UNKNOWN_LEADER_EPOCH.
    pub current_leader_epoch: i32,
}

/// One partition a fetch reads: its key, its topic's name when known, and what is asked of it.
#[derive(Clone, Debug, PartialEq)]
pub struct Wanted {
    pub key: PartitionKey,
    /// `None` for a topic id no topic has (answered UNKNOWN_TOPIC_ID).
    pub name: Option<Arc<str>>,
    pub params: FetchParams,
}

/// What reading one partition gave, as far as a session compares answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub error_code: i16,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    /// The answer carries record bytes for it.
    pub has_records: bool,
}

/// A Fetch request's session fields and partitions.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    pub version: i16,
    pub session_id: i32,
    pub epoch: i32,
    /// Followers' sessions are privileged (Kafka: `replica_id >= 0`); consumers' are not.
    pub privileged: bool,
    /// The partitions named, once each, in order of first appearance.
    pub fetch_data: &'a [Wanted],
    /// `forgotten_topics_data`.
    pub forgotten: &'a [PartitionKey],
}

/// What kind of fetch a request is, decided before anything is read.
#[derive(Debug, PartialEq)]
pub enum Context {
    /// Read and answer the request's partitions; session id 0 (epoch -1, Fetch v4-6, or an incremental
    /// fetch that forgot its last partitions).
    Sessionless,
    /// Read and answer the request's partitions, then cache them as a new session ([`create`]).
    ///
    /// [`create`]: FetchSessionCache::create
    Full {
        privileged: bool,
        uses_topic_ids: bool,
    },
    /// Read `partitions` (the session's, in its order); answer only those with news ([`respond`]).
    ///
    /// [`respond`]: FetchSessionCache::respond
    Incremental {
        session_id: i32,
        request_epoch: i32,
        partitions: Vec<Wanted>,
    },
    /// Answer this error code, session id 0, no partitions, at once.
    Error(i16),
}

/// One partition of a session.
#[derive(Clone, Debug)]
struct Cached {
    name: Option<Arc<str>>,
    params: FetchParams,
    /// Last sent; -1 after an error so that the partition is sent again once the error is gone.
    high_watermark: i64,
    /// Last sent.
    log_start_offset: i64,
}

impl Cached {
    /// Kafka's `CachedPartition.maybeUpdateResponseData(respData, true)`: whether an incremental answer
    /// must carry the partition, remembering what it carries. (Kafka also always sends a partition with a
    /// preferred read replica or a diverging epoch; Ringtide answers neither, having no replicas.)
    fn must_respond(&mut self, o: &Outcome) -> bool {
        let mut must = o.has_records;
        if self.high_watermark != o.high_watermark {
            must = true;
            self.high_watermark = o.high_watermark;
        }
        if self.log_start_offset != o.log_start_offset {
            must = true;
            self.log_start_offset = o.log_start_offset;
        }
        if o.error_code != errors::NONE {
            self.high_watermark = -1;
            must = true;
        }
        must
    }
}

/// One fetch session.
#[derive(Debug)]
struct Session {
    privileged: bool,
    uses_topic_ids: bool,
    /// The session's partitions in the order they are read.
    partitions: IndexMap<PartitionKey, Cached>,
    created_ms: i64,
    last_used_ms: i64,
    /// The epoch the next incremental fetch must carry.
    epoch: i32,
    /// The partition count at the last touch: the size the eviction order and the gauge know.
    cached_size: usize,
}

/// Eviction order: unprivileged before privileged, then fewer partitions first, then lower id.
type EvictableKey = (bool, usize, i32);

/// The sizing of one core's cache.
#[derive(Clone, Copy, Debug)]
pub struct CacheConfig {
    /// Sessions this core keeps (`max.incremental.fetch.session.cache.slots / cores`).
    pub max_sessions: usize,
    /// `MIN_INCREMENTAL_FETCH_SESSION_EVICTION_MS`.
    pub eviction_ms: i64,
    /// The ids this core hands out: `[start, end)`, see [`id_range`].
    pub ids: (i32, i32),
}

/// One core's fetch sessions (Kafka's `FetchSessionCacheShard`). Owned by that core.
#[derive(Debug)]
pub struct FetchSessionCache {
    config: CacheConfig,
    sessions: HashMap<i32, Session>,
    /// `(last used, id)`: the least recently used first.
    last_used: BTreeSet<(i64, i32)>,
    /// Sessions older than the eviction time: any new session with more partitions may evict them.
    evictable_by_all: BTreeSet<EvictableKey>,
    /// Unprivileged sessions, and privileged ones older than the eviction time: a new privileged session
    /// may evict them.
    evictable_by_privileged: BTreeSet<EvictableKey>,
    /// Sum of the sessions' `cached_size`.
    partitions: usize,
    evictions: u64,
    /// splitmix64 state for new session ids.
    rng: u64,
}

impl FetchSessionCache {
    pub fn new(config: CacheConfig, seed: u64) -> Self {
        assert!(
            0 < config.ids.0 && config.ids.0 < config.ids.1,
            "session id range {:?}",
            config.ids
        );
        FetchSessionCache {
            config,
            sessions: HashMap::new(),
            last_used: BTreeSet::new(),
            evictable_by_all: BTreeSet::new(),
            evictable_by_privileged: BTreeSet::new(),
            partitions: 0,
            evictions: 0,
            rng: seed,
        }
    }

    /// Sessions held (Kafka's `NumIncrementalFetchSessions`).
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Partitions held over all sessions (Kafka's `NumIncrementalFetchPartitionsCached`).
    pub fn partitions(&self) -> usize {
        self.partitions
    }

    /// Sessions evicted to make room since start (Kafka's `IncrementalFetchSessionEvictionsPerSec`).
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// Kafka's `FetchManager.newContext`: what kind of fetch `req` is, updating the session it continues.
    /// `resolve` names a topic id (for partitions of a session added while their topic id was unknown).
    pub fn new_context(
        &mut self,
        now_ms: i64,
        req: &Request,
        resolve: impl Fn(&Uuid) -> Option<Arc<str>>,
    ) -> Context {
        if req.epoch == INITIAL_EPOCH || req.epoch == FINAL_EPOCH {
            // A full fetch closes the session it names.
            if req.session_id != INVALID_SESSION_ID {
                self.remove(req.session_id);
            }
            return if req.epoch == FINAL_EPOCH {
                Context::Sessionless
            } else {
                Context::Full {
                    privileged: req.privileged,
                    uses_topic_ids: req.version >= 13,
                }
            };
        }
        let id = req.session_id;
        let Some(session) = self.sessions.get_mut(&id) else {
            return Context::Error(errors::FETCH_SESSION_ID_NOT_FOUND);
        };
        if session.epoch != req.epoch {
            return Context::Error(errors::INVALID_FETCH_SESSION_EPOCH);
        }
        if session.uses_topic_ids != (req.version >= 13) {
            return Context::Error(errors::FETCH_SESSION_TOPIC_ID_ERROR);
        }
        // Added partitions go to the end; changed ones keep their place.
        for w in req.fetch_data {
            match session.partitions.get_mut(&w.key) {
                Some(c) => c.params = w.params,
                None => {
                    session.partitions.insert(
                        w.key.clone(),
                        Cached {
                            name: w.name.clone(),
                            params: w.params,
                            high_watermark: -1,
                            log_start_offset: -1,
                        },
                    );
                }
            }
        }
        if !req.forgotten.is_empty() {
            let forgotten: HashSet<&PartitionKey> = req.forgotten.iter().collect();
            session.partitions.retain(|k, _| !forgotten.contains(k));
        }
        if session.partitions.is_empty() {
            // Nothing left to fetch: the session ends and the (empty) request is answered sessionless.
            self.remove(id);
            return Context::Sessionless;
        }
        session.epoch = next_epoch(session.epoch);
        let partitions = session
            .partitions
            .iter_mut()
            .map(|(key, c)| {
                if c.name.is_none() {
                    if let TopicKey::Id(topic_id) = &key.topic {
                        c.name = resolve(topic_id);
                    }
                }
                Wanted {
                    key: key.clone(),
                    name: c.name.clone(),
                    params: c.params,
                }
            })
            .collect();
        self.touch(id, now_ms);
        Context::Incremental {
            session_id: id,
            request_epoch: req.epoch,
            partitions,
        }
    }

    /// Kafka's `FullFetchContext.updateAndGenerateResponseData`: caches a full fetch's answer as a new
    /// session if there is room (or room can be made by eviction). Returns the new session's id, or
    /// [`INVALID_SESSION_ID`] when none was created (the client then fetches sessionless).
    pub fn create(
        &mut self,
        now_ms: i64,
        privileged: bool,
        uses_topic_ids: bool,
        answered: Vec<(Wanted, Outcome)>,
    ) -> i32 {
        let size = answered.len();
        if self.sessions.len() >= self.config.max_sessions
            && !self.try_evict(privileged, size, now_ms)
        {
            return INVALID_SESSION_ID;
        }
        let id = self.new_session_id();
        let partitions = answered
            .into_iter()
            .map(|(w, o)| {
                let cached = Cached {
                    name: w.name,
                    params: w.params,
                    high_watermark: o.high_watermark,
                    log_start_offset: o.log_start_offset,
                };
                (w.key, cached)
            })
            .collect();
        self.sessions.insert(
            id,
            Session {
                privileged,
                uses_topic_ids,
                partitions,
                created_ms: now_ms,
                last_used_ms: now_ms,
                epoch: next_epoch(INITIAL_EPOCH),
                cached_size: 0,
            },
        );
        self.touch(id, now_ms);
        id
    }

    /// Kafka's `IncrementalFetchContext.updateAndGenerateResponseData`: for each partition read (in read
    /// order), whether the answer carries it; the session remembers what it carries, and the partitions
    /// that returned records move to the end of its order. `Err(INVALID_FETCH_SESSION_EPOCH)` when another
    /// fetch of the session was accepted since this one (a duplicate or pipelined request).
    ///
    /// A session evicted while its fetch waited answers every partition read: the client accepts them (they
    /// are all in its session) and learns of the eviction on its next fetch.
    pub fn respond(
        &mut self,
        session_id: i32,
        request_epoch: i32,
        read: &[(&PartitionKey, Outcome)],
    ) -> Result<Vec<bool>, i16> {
        let Some(session) = self.sessions.get_mut(&session_id) else {
            return Ok(vec![true; read.len()]);
        };
        if session.epoch != next_epoch(request_epoch) {
            return Err(errors::INVALID_FETCH_SESSION_EPOCH);
        }
        let mut send = Vec::with_capacity(read.len());
        let mut moved: Vec<&PartitionKey> = Vec::new();
        for (key, o) in read {
            // A partition forgotten by a later request (while this one waited) is not sent.
            let must = session
                .partitions
                .get_mut(*key)
                .is_some_and(|c| c.must_respond(o));
            if must && o.has_records {
                moved.push(key);
            }
            send.push(must);
        }
        if !moved.is_empty() {
            // Stable: the others keep their order, the moved ones follow in read order. One pass.
            let moved_set: HashSet<&PartitionKey> = moved.iter().copied().collect();
            let old = std::mem::take(&mut session.partitions);
            let mut tail: HashMap<PartitionKey, Cached> = HashMap::with_capacity(moved.len());
            let mut order = IndexMap::with_capacity(old.len());
            for (k, c) in old {
                if moved_set.contains(&k) {
                    tail.insert(k, c);
                } else {
                    order.insert(k, c);
                }
            }
            for k in moved {
                if let Some((k, c)) = tail.remove_entry(k) {
                    order.insert(k, c);
                }
            }
            session.partitions = order;
        }
        Ok(send)
    }

    /// Removes a session (closed by its client, or evicted). Returns whether it existed.
    pub fn remove(&mut self, session_id: i32) -> bool {
        let Some(s) = self.sessions.remove(&session_id) else {
            return false;
        };
        self.last_used.remove(&(s.last_used_ms, session_id));
        let key = (s.privileged, s.cached_size, session_id);
        self.evictable_by_all.remove(&key);
        self.evictable_by_privileged.remove(&key);
        self.partitions -= s.cached_size;
        true
    }

    /// Kafka's `FetchSessionCacheShard.touch`: the session was used now; re-files it in the eviction order
    /// with its current size.
    fn touch(&mut self, session_id: i32, now_ms: i64) {
        let Some(s) = self.sessions.get_mut(&session_id) else {
            return;
        };
        self.last_used.remove(&(s.last_used_ms, session_id));
        s.last_used_ms = now_ms;
        self.last_used.insert((now_ms, session_id));
        let old = (s.privileged, s.cached_size, session_id);
        self.evictable_by_all.remove(&old);
        self.evictable_by_privileged.remove(&old);
        self.partitions -= s.cached_size;
        s.cached_size = s.partitions.len();
        self.partitions += s.cached_size;
        let key = (s.privileged, s.cached_size, session_id);
        let old_enough = now_ms - s.created_ms > self.config.eviction_ms;
        if !s.privileged || old_enough {
            self.evictable_by_privileged.insert(key);
        }
        if old_enough {
            self.evictable_by_all.insert(key);
        }
    }

    /// Kafka's `tryEvict`: a new session of `size` partitions may evict (1) the least recently used session
    /// if it is unused for longer than the eviction time, else (2) the first evictable session if the new
    /// one is worth more: privileged over unprivileged, then more partitions (a tie keeps the old one).
    fn try_evict(&mut self, privileged: bool, size: usize, now_ms: i64) -> bool {
        let Some(&(last_used_ms, stale)) = self.last_used.first() else {
            return false;
        };
        let victim = if now_ms - last_used_ms > self.config.eviction_ms {
            stale
        } else {
            let set = if privileged {
                &self.evictable_by_privileged
            } else {
                &self.evictable_by_all
            };
            match set.first() {
                Some(&first) if (privileged, size, 0) >= first => first.2,
                _ => return false,
            }
        };
        self.remove(victim);
        self.evictions += 1;
        true
    }

    /// A random id of this core's range that no session has.
    fn new_session_id(&mut self) -> i32 {
        let (start, end) = self.config.ids;
        let span = (end - start) as u64;
        loop {
            let id = start + (self.next_random() % span) as i32;
            if id != INVALID_SESSION_ID && !self.sessions.contains_key(&id) {
                return id;
            }
        }
    }

    /// splitmix64: ids must be hard to guess by accident (a reconnecting client's old id must not name a
    /// new session), not secret.
    fn next_random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVICTION_MS: i64 = 120_000;

    fn cache(max_sessions: usize) -> FetchSessionCache {
        FetchSessionCache::new(
            CacheConfig {
                max_sessions,
                eviction_ms: EVICTION_MS,
                ids: id_range(0, 1),
            },
            42,
        )
    }

    fn key(topic: &str, partition: i32) -> PartitionKey {
        PartitionKey {
            topic: TopicKey::Name(Arc::from(topic)),
            partition,
        }
    }

    fn want(topic: &str, partition: i32, fetch_offset: i64) -> Wanted {
        Wanted {
            key: key(topic, partition),
            name: Some(Arc::from(topic)),
            params: FetchParams {
                fetch_offset,
                max_bytes: 1 << 20,
                current_leader_epoch: -1,
            },
        }
    }

    fn ok(hw: i64, records: bool) -> Outcome {
        Outcome {
            error_code: errors::NONE,
            high_watermark: hw,
            log_start_offset: 0,
            has_records: records,
        }
    }

    fn req<'a>(
        session_id: i32,
        epoch: i32,
        fetch_data: &'a [Wanted],
        forgotten: &'a [PartitionKey],
    ) -> Request<'a> {
        Request {
            version: 12,
            session_id,
            epoch,
            privileged: false,
            fetch_data,
            forgotten,
        }
    }

    fn no_names(_: &Uuid) -> Option<Arc<str>> {
        None
    }

    /// A full fetch of `parts` (all at high watermark `hw`, no records) answered and cached; the new id.
    fn open(c: &mut FetchSessionCache, now: i64, parts: &[Wanted], hw: i64) -> i32 {
        let ctx = c.new_context(now, &req(0, INITIAL_EPOCH, parts, &[]), no_names);
        assert_eq!(
            ctx,
            Context::Full {
                privileged: false,
                uses_topic_ids: false
            }
        );
        c.create(
            now,
            false,
            false,
            parts.iter().map(|w| (w.clone(), ok(hw, false))).collect(),
        )
    }

    fn incremental(
        c: &mut FetchSessionCache,
        now: i64,
        id: i32,
        epoch: i32,
        changed: &[Wanted],
        forgotten: &[PartitionKey],
    ) -> Vec<Wanted> {
        match c.new_context(now, &req(id, epoch, changed, forgotten), no_names) {
            Context::Incremental {
                session_id,
                request_epoch,
                partitions,
            } => {
                assert_eq!((session_id, request_epoch), (id, epoch));
                partitions
            }
            other => panic!("expected an incremental context, got {other:?}"),
        }
    }

    fn names(parts: &[Wanted]) -> Vec<i32> {
        parts.iter().map(|w| w.key.partition).collect()
    }

    #[test]
    fn epochs_wrap_to_one_and_final_stays_final() {
        assert_eq!(next_epoch(0), 1);
        assert_eq!(next_epoch(41), 42);
        assert_eq!(next_epoch(i32::MAX), 1);
        assert_eq!(next_epoch(-1), -1);
        assert_eq!(next_epoch(-7), -1);
    }

    #[test]
    fn id_ranges_split_the_cores_and_name_their_owner() {
        assert_eq!(id_range(0, 1), (1, i32::MAX));
        let (a, b) = (id_range(0, 2), id_range(1, 2));
        assert_eq!(a.0, 1);
        assert_eq!(a.1, b.0);
        for (core, (start, end)) in [(0, a), (1, b)] {
            assert_eq!(core_of(start, 2), Some(core));
            assert_eq!(core_of(end - 1, 2), Some(core));
        }
        assert_eq!(core_of(0, 2), None);
        assert_eq!(core_of(-5, 2), None);
        // i32::MAX / 2 * 2 = i32::MAX - 1: the last id belongs to no core.
        assert_eq!(core_of(i32::MAX, 2), None);
        // Every id a cache hands out is in its range.
        let mut c = FetchSessionCache::new(
            CacheConfig {
                max_sessions: 100,
                eviction_ms: EVICTION_MS,
                ids: b,
            },
            7,
        );
        for _ in 0..50 {
            let id = c.create(0, false, false, vec![]);
            assert!(b.0 <= id && id < b.1, "{id}");
            assert_eq!(core_of(id, 2), Some(1));
        }
        assert_eq!(c.len(), 50);
    }

    #[test]
    fn sessionless_fetch_creates_nothing() {
        let mut c = cache(10);
        let parts = [want("t", 0, 0)];
        assert_eq!(
            c.new_context(0, &req(0, FINAL_EPOCH, &parts, &[]), no_names),
            Context::Sessionless
        );
        assert!(c.is_empty());
    }

    #[test]
    fn full_fetch_creates_a_session_at_epoch_one() {
        let mut c = cache(10);
        let parts = [want("t", 0, 0), want("t", 1, 0)];
        let id = open(&mut c, 0, &parts, 5);
        assert_ne!(id, INVALID_SESSION_ID);
        assert_eq!((c.len(), c.partitions()), (1, 2));
        // Epoch 1 continues it; epoch 2 is one too far.
        assert_eq!(
            c.new_context(1, &req(id, 2, &[], &[]), no_names),
            Context::Error(errors::INVALID_FETCH_SESSION_EPOCH)
        );
        let read = incremental(&mut c, 1, id, 1, &[], &[]);
        assert_eq!(read, parts.to_vec());
    }

    #[test]
    fn unknown_session_and_wrong_epoch_are_errors_that_change_nothing() {
        let mut c = cache(10);
        let id = open(&mut c, 0, &[want("t", 0, 0)], 0);
        let other = if id == 1 { 2 } else { id - 1 };
        assert_eq!(
            c.new_context(1, &req(other, 1, &[], &[]), no_names),
            Context::Error(errors::FETCH_SESSION_ID_NOT_FOUND)
        );
        // Session id 0 is never a session.
        assert_eq!(
            c.new_context(1, &req(0, 1, &[], &[]), no_names),
            Context::Error(errors::FETCH_SESSION_ID_NOT_FOUND)
        );
        for bad in [2, 3, -2, i32::MAX] {
            assert_eq!(
                c.new_context(1, &req(id, bad, &[want("t", 1, 0)], &[]), no_names),
                Context::Error(errors::INVALID_FETCH_SESSION_EPOCH),
                "epoch {bad}"
            );
        }
        // The rejected requests added nothing; epoch 1 still works.
        assert_eq!(names(&incremental(&mut c, 2, id, 1, &[], &[])), vec![0]);
        assert_eq!(names(&incremental(&mut c, 3, id, 2, &[], &[])), vec![0]);
    }

    #[test]
    fn topic_id_use_must_match_the_session() {
        let mut c = cache(10);
        let id = open(&mut c, 0, &[want("t", 0, 0)], 0);
        let mut r = req(id, 1, &[], &[]);
        r.version = 13;
        assert_eq!(
            c.new_context(1, &r, no_names),
            Context::Error(errors::FETCH_SESSION_TOPIC_ID_ERROR)
        );
        // A session created with ids refuses a names request the same way.
        let t = Uuid::from_u128(9);
        let by_id = Wanted {
            key: PartitionKey {
                topic: TopicKey::Id(t),
                partition: 0,
            },
            name: None,
            params: FetchParams {
                fetch_offset: 0,
                max_bytes: 100,
                current_leader_epoch: -1,
            },
        };
        let id2 = c.create(0, false, true, vec![(by_id, ok(0, false))]);
        assert_eq!(
            c.new_context(1, &req(id2, 1, &[], &[]), no_names),
            Context::Error(errors::FETCH_SESSION_TOPIC_ID_ERROR)
        );
        // An unknown topic id gets its name once a topic has it.
        let mut r = req(id2, 1, &[], &[]);
        r.version = 15;
        let named = |u: &Uuid| (*u == t).then(|| Arc::from("late"));
        match c.new_context(1, &r, named) {
            Context::Incremental { partitions, .. } => {
                assert_eq!(partitions[0].name.as_deref(), Some("late"))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn incremental_fetch_adds_updates_and_forgets() {
        let mut c = cache(10);
        let id = open(&mut c, 0, &[want("t", 0, 0), want("t", 1, 0)], 0);
        // Change partition 0's offset and add partition 2: changed keeps its place, new goes last.
        let read = incremental(&mut c, 1, id, 1, &[want("t", 2, 0), want("t", 0, 9)], &[]);
        assert_eq!(names(&read), vec![0, 1, 2]);
        assert_eq!(read[0].params.fetch_offset, 9);
        assert_eq!(c.partitions(), 3);
        // Forget 1 (and something the session never had).
        let read = incremental(&mut c, 2, id, 2, &[], &[key("t", 1), key("x", 0)]);
        assert_eq!(names(&read), vec![0, 2]);
        assert_eq!(c.partitions(), 2);
        // Forgetting the rest ends the session: the fetch is answered sessionless.
        assert_eq!(
            c.new_context(3, &req(id, 3, &[], &[key("t", 0), key("t", 2)]), no_names),
            Context::Sessionless
        );
        assert_eq!((c.len(), c.partitions()), (0, 0));
        assert_eq!(
            c.new_context(4, &req(id, 4, &[], &[]), no_names),
            Context::Error(errors::FETCH_SESSION_ID_NOT_FOUND)
        );
    }

    #[test]
    fn answer_carries_only_partitions_with_news() {
        let mut c = cache(10);
        let id = open(
            &mut c,
            0,
            &[want("t", 0, 0), want("t", 1, 0), want("t", 2, 0)],
            4,
        );
        let read = incremental(&mut c, 1, id, 1, &[], &[]);
        let keys: Vec<&PartitionKey> = read.iter().map(|w| &w.key).collect();
        // Nothing changed: nothing sent.
        let same = [ok(4, false); 3];
        let out: Vec<_> = keys.iter().copied().zip(same).collect();
        assert_eq!(c.respond(id, 1, &out), Ok(vec![false, false, false]));
        // Records on 0, a new high watermark on 1, a new log start on 2: all three are news.
        incremental(&mut c, 2, id, 2, &[], &[]);
        let mut moved_start = ok(4, false);
        moved_start.log_start_offset = 3;
        let out = vec![
            (keys[0], ok(4, true)),
            (keys[1], ok(5, false)),
            (keys[2], moved_start),
        ];
        assert_eq!(c.respond(id, 2, &out), Ok(vec![true, true, true]));
        // The session remembered what it sent: the same values again are not news (but records are).
        incremental(&mut c, 3, id, 3, &[], &[]);
        let out = vec![
            (keys[0], ok(4, true)),
            (keys[1], ok(5, false)),
            (keys[2], moved_start),
        ];
        assert_eq!(c.respond(id, 3, &out), Ok(vec![true, false, false]));
    }

    #[test]
    fn an_error_is_always_sent_and_resends_the_partition_once_it_clears() {
        let mut c = cache(10);
        let id = open(&mut c, 0, &[want("t", 0, 0)], 7);
        let k = key("t", 0);
        let failed = Outcome {
            error_code: errors::NOT_LEADER_OR_FOLLOWER,
            high_watermark: -1,
            log_start_offset: -1,
            has_records: false,
        };
        for epoch in 1..=2 {
            incremental(&mut c, 1, id, epoch, &[], &[]);
            assert_eq!(c.respond(id, epoch, &[(&k, failed)]), Ok(vec![true]));
        }
        // Back, at the same high watermark as before the error: sent, because the error reset it.
        incremental(&mut c, 2, id, 3, &[], &[]);
        let mut back = ok(7, false);
        back.log_start_offset = -1;
        assert_eq!(c.respond(id, 3, &[(&k, back)]), Ok(vec![true]));
        incremental(&mut c, 3, id, 4, &[], &[]);
        assert_eq!(c.respond(id, 4, &[(&k, back)]), Ok(vec![false]));
    }

    #[test]
    fn partitions_that_returned_records_move_to_the_end() {
        let mut c = cache(10);
        let parts: Vec<Wanted> = (0..5).map(|p| want("t", p, 0)).collect();
        let id = open(&mut c, 0, &parts, 0);
        let read = incremental(&mut c, 1, id, 1, &[], &[]);
        let keys: Vec<&PartitionKey> = read.iter().map(|w| &w.key).collect();
        // 1 and 3 return records (in that order); 4 only a new high watermark (stays in place).
        let out = vec![
            (keys[0], ok(0, false)),
            (keys[1], ok(2, true)),
            (keys[2], ok(0, false)),
            (keys[3], ok(2, true)),
            (keys[4], ok(2, false)),
        ];
        assert_eq!(
            c.respond(id, 1, &out),
            Ok(vec![false, true, false, true, true])
        );
        let read = incremental(&mut c, 2, id, 2, &[], &[]);
        assert_eq!(names(&read), vec![0, 2, 4, 1, 3]);
        // Read order is answer order: 0 returns records now and goes last.
        let keys: Vec<&PartitionKey> = read.iter().map(|w| &w.key).collect();
        // The same high watermarks as last sent (0 for 0 and 2, 2 for the others).
        let out: Vec<_> = keys
            .iter()
            .map(|&k| {
                let hw = if k.partition == 0 || k.partition == 2 {
                    0
                } else {
                    2
                };
                (k, ok(hw, k.partition == 0))
            })
            .collect();
        assert_eq!(
            c.respond(id, 2, &out),
            Ok(vec![true, false, false, false, false])
        );
        assert_eq!(
            names(&incremental(&mut c, 3, id, 3, &[], &[])),
            vec![2, 4, 1, 3, 0]
        );
    }

    #[test]
    fn a_second_fetch_accepted_meanwhile_makes_the_first_answer_an_epoch_error() {
        let mut c = cache(10);
        let id = open(&mut c, 0, &[want("t", 0, 0)], 0);
        let k = key("t", 0);
        incremental(&mut c, 1, id, 1, &[], &[]);
        // A pipelined second request with epoch 2 is accepted before the first one answers.
        incremental(&mut c, 1, id, 2, &[], &[]);
        assert_eq!(
            c.respond(id, 1, &[(&k, ok(1, true))]),
            Err(errors::INVALID_FETCH_SESSION_EPOCH)
        );
        assert_eq!(c.respond(id, 2, &[(&k, ok(1, true))]), Ok(vec![true]));
        // A partition forgotten while a fetch waited is left out of its answer.
        incremental(&mut c, 2, id, 3, &[want("t", 1, 0)], &[]);
        incremental(&mut c, 2, id, 4, &[], &[key("t", 1)]);
        let k1 = key("t", 1);
        assert_eq!(
            c.respond(id, 4, &[(&k, ok(5, false)), (&k1, ok(5, true))]),
            Ok(vec![true, false])
        );
        // A session gone while its fetch waited answers everything read.
        assert!(c.remove(id));
        assert_eq!(c.respond(id, 5, &[(&k, ok(5, false))]), Ok(vec![true]));
    }

    #[test]
    fn full_fetch_naming_a_session_closes_it() {
        let mut c = cache(10);
        let id = open(&mut c, 0, &[want("t", 0, 0)], 0);
        // Epoch 0 with the old id: close it, open a new one.
        assert!(matches!(
            c.new_context(1, &req(id, INITIAL_EPOCH, &[], &[]), no_names),
            Context::Full { .. }
        ));
        assert!(c.is_empty());
        let id = open(&mut c, 1, &[want("t", 0, 0)], 0);
        // Epoch -1 with the id: close it, no new one.
        assert_eq!(
            c.new_context(2, &req(id, FINAL_EPOCH, &[], &[]), no_names),
            Context::Sessionless
        );
        assert!(c.is_empty());
        assert_eq!(c.partitions(), 0);
    }

    #[test]
    fn zero_slots_means_no_sessions() {
        let mut c = cache(0);
        assert_eq!(open(&mut c, 0, &[want("t", 0, 0)], 0), INVALID_SESSION_ID);
        assert!(c.is_empty());
        assert_eq!(c.evictions(), 0);
    }

    #[test]
    fn full_cache_evicts_a_stale_session_first() {
        let mut c = cache(2);
        let a = open(&mut c, 0, &[want("t", 0, 0)], 0);
        let b = open(&mut c, 10, &[want("t", 0, 0)], 0);
        // Both recently used, same size as a newcomer: no room.
        assert_eq!(open(&mut c, 100, &[want("t", 0, 0)], 0), INVALID_SESSION_ID);
        // Exactly the eviction time is not stale; one millisecond more is. The least recently used goes.
        assert_eq!(
            open(&mut c, EVICTION_MS, &[want("t", 0, 0)], 0),
            INVALID_SESSION_ID
        );
        let n = open(&mut c, EVICTION_MS + 1, &[want("t", 0, 0)], 0);
        assert_ne!(n, INVALID_SESSION_ID);
        assert_eq!(c.evictions(), 1);
        assert_eq!(
            c.new_context(EVICTION_MS + 2, &req(a, 1, &[], &[]), no_names),
            Context::Error(errors::FETCH_SESSION_ID_NOT_FOUND)
        );
        assert!(matches!(
            c.new_context(EVICTION_MS + 2, &req(b, 1, &[], &[]), no_names),
            Context::Incremental { .. }
        ));
    }

    #[test]
    fn larger_session_evicts_a_smaller_one_only_after_the_eviction_time() {
        let mut c = cache(2);
        let small = open(&mut c, 0, &[want("t", 0, 0)], 0);
        let two: Vec<Wanted> = (0..2).map(|p| want("t", p, 0)).collect();
        let medium = open(&mut c, 0, &two, 0);
        let three: Vec<Wanted> = (0..3).map(|p| want("t", p, 0)).collect();
        // While they are young, a larger newcomer cannot evict them, even once they were used again.
        incremental(&mut c, 60_000, small, 1, &[], &[]);
        incremental(&mut c, 60_000, medium, 1, &[], &[]);
        assert_eq!(open(&mut c, 60_001, &three, 0), INVALID_SESSION_ID);
        incremental(&mut c, 120_001, small, 2, &[], &[]);
        incremental(&mut c, 120_001, medium, 2, &[], &[]);
        // Touched after the eviction time they are evictable by size: the smallest goes first.
        let big = open(&mut c, 120_002, &three, 0);
        assert_ne!(big, INVALID_SESSION_ID);
        assert_eq!(c.evictions(), 1);
        assert_eq!(
            c.new_context(120_003, &req(small, 3, &[], &[]), no_names),
            Context::Error(errors::FETCH_SESSION_ID_NOT_FOUND)
        );
        assert_eq!(c.partitions(), 2 + 3);
        // A newcomer the same size as the smallest left (2 partitions) does not evict it: ties keep the old.
        assert_eq!(open(&mut c, 120_004, &two, 0), INVALID_SESSION_ID);
    }

    #[test]
    fn privileged_sessions_evict_consumers_and_are_protected_while_young() {
        let mut c = cache(1);
        let consumer = open(
            &mut c,
            0,
            &(0..5).map(|p| want("t", p, 0)).collect::<Vec<_>>(),
            0,
        );
        // A follower's session may evict a young consumer session, even a larger one.
        let ctx = c.new_context(
            1,
            &Request {
                privileged: true,
                ..req(0, INITIAL_EPOCH, &[], &[])
            },
            no_names,
        );
        assert_eq!(
            ctx,
            Context::Full {
                privileged: true,
                uses_topic_ids: false
            }
        );
        let follower = c.create(1, true, false, vec![(want("t", 0, 0), ok(0, false))]);
        assert_ne!(follower, INVALID_SESSION_ID);
        assert_eq!(c.evictions(), 1);
        assert_eq!(
            c.new_context(2, &req(consumer, 1, &[], &[]), no_names),
            Context::Error(errors::FETCH_SESSION_ID_NOT_FOUND)
        );
        // A consumer cannot evict the young follower session, however large.
        let many: Vec<Wanted> = (0..100).map(|p| want("t", p, 0)).collect();
        assert_eq!(open(&mut c, 3, &many, 0), INVALID_SESSION_ID);
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn gauges_follow_sizes_through_touch_and_remove() {
        let mut c = cache(10);
        let a = open(&mut c, 0, &[want("t", 0, 0), want("t", 1, 0)], 0);
        let b = open(&mut c, 0, &[want("u", 0, 0)], 0);
        assert_eq!((c.len(), c.partitions()), (2, 3));
        incremental(&mut c, 1, a, 1, &[want("t", 2, 0), want("t", 3, 0)], &[]);
        assert_eq!(c.partitions(), 5);
        incremental(&mut c, 2, a, 2, &[], &[key("t", 0)]);
        assert_eq!(c.partitions(), 4);
        assert!(c.remove(b));
        assert!(!c.remove(b));
        assert_eq!((c.len(), c.partitions()), (1, 3));
        assert!(c.remove(a));
        assert_eq!((c.len(), c.partitions()), (0, 0));
        assert!(c.last_used.is_empty());
        assert!(c.evictable_by_all.is_empty() && c.evictable_by_privileged.is_empty());
    }

    /// Random operation sequences: the bookkeeping (gauges, eviction indexes) always matches the sessions,
    /// and the cache never holds more than its slots.
    #[test]
    fn random_operations_keep_the_books_straight() {
        let mut c = cache(4);
        let mut rng = 12345u64;
        let mut next = |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        let mut open_ids: Vec<(i32, i32)> = Vec::new(); // (id, next epoch)
        let mut now = 0i64;
        for _ in 0..5000 {
            now += next(20_000) as i64;
            match next(4) {
                0 => {
                    let n = next(6) as i32;
                    let parts: Vec<Wanted> = (0..n).map(|p| want("t", p, 0)).collect();
                    let id = c.create(
                        now,
                        next(5) == 0,
                        false,
                        parts.into_iter().map(|w| (w, ok(0, false))).collect(),
                    );
                    if id != INVALID_SESSION_ID {
                        open_ids.push((id, 1));
                    }
                }
                1 | 2 if !open_ids.is_empty() => {
                    let i = next(open_ids.len() as u64) as usize;
                    let (id, epoch) = open_ids[i];
                    let add = [want("t", next(8) as i32, 0)];
                    let forget = [key("t", next(8) as i32)];
                    match c.new_context(now, &req(id, epoch, &add, &forget), no_names) {
                        Context::Incremental { partitions, .. } => {
                            open_ids[i].1 = next_epoch(epoch);
                            let out: Vec<_> = partitions
                                .iter()
                                .map(|w| (&w.key, ok(next(3) as i64, next(2) == 0)))
                                .collect();
                            assert!(c.respond(id, epoch, &out).is_ok());
                        }
                        Context::Sessionless
                        | Context::Error(errors::FETCH_SESSION_ID_NOT_FOUND) => {
                            open_ids.swap_remove(i);
                        }
                        other => panic!("{other:?}"),
                    }
                }
                _ if !open_ids.is_empty() => {
                    let i = next(open_ids.len() as u64) as usize;
                    c.remove(open_ids.swap_remove(i).0);
                }
                _ => {}
            }
            assert!(c.len() <= 4);
            let sizes: usize = c.sessions.values().map(|s| s.cached_size).sum();
            assert_eq!(c.partitions(), sizes);
            assert_eq!(c.last_used.len(), c.len());
            for (id, s) in &c.sessions {
                assert_eq!(s.cached_size, s.partitions.len());
                assert!(c.last_used.contains(&(s.last_used_ms, *id)));
            }
            for (_, size, id) in c.evictable_by_all.iter().chain(&c.evictable_by_privileged) {
                assert_eq!(c.sessions[id].cached_size, *size);
            }
        }
        assert!(c.evictions() > 0);
    }
}
