//! Start-up and shutdown: one pinned glommio executor per core, each with its own listener on the same
//! port, its share of the partitions, and its ends of the cross-core mesh.

use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::{LocalExecutorPoolBuilder, PoolPlacement};

use crate::config::Config;
use crate::limits;
use crate::metadata::ClusterMeta;
use crate::shard::{CrossCoreTask, Shard};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("port {port} is already in use ({host}:{port}): {source}")]
    PortInUse {
        host: String,
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("data directory {dir} is not usable: {source}; create it or point log.dirs elsewhere")]
    DataDir {
        dir: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "Failed to acquire lock on file .lock in {dir}: another broker process uses this data directory \
         (stop it, or point log.dirs at another directory)"
    )]
    DataDirLocked { dir: String },
    #[error(
        "data directory {dir} belongs to node.id {found} (its meta.properties says so), but this broker is \
         node.id {configured}: set node.id={found}, or point log.dirs at this broker's own directory"
    )]
    ForeignDataDir {
        dir: String,
        found: i32,
        configured: i32,
    },
    #[error(
        "data directory {dir} holds topics of a single broker ({topics}); cluster mode (zookeeper.connect) \
         cannot adopt them yet: start without zookeeper.connect, or point log.dirs at a new directory"
    )]
    SingleBrokerDataDir { dir: String, topics: String },
    #[error("cannot start executors: {0}")]
    Runtime(String),
}

/// Set by the signal thread on SIGTERM/SIGINT; every core polls it.
static STOP: AtomicBool = AtomicBool::new(false);

/// How often each core checks for a stop request.
/// How often each core looks at the stop flag (a few wake-ups a second keep an idle broker idle).
const STOP_POLL: Duration = Duration::from_millis(200);

pub fn run(config: Config) -> Result<(), ServerError> {
    let started = Instant::now();
    let dir = config.log_dirs.clone();
    std::fs::create_dir_all(&dir).map_err(|source| ServerError::DataDir {
        dir: dir.display().to_string(),
        source,
    })?;
    let data_dir_error = |source| ServerError::DataDir {
        dir: dir.display().to_string(),
        source,
    };
    // One broker per data directory: `<log.dirs>/.lock`, held (flock) for the life of the process, as
    // Kafka holds it. Taken before anything in the directory is read or changed.
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(".lock"))
        .map_err(data_dir_error)?;
    match lock.try_lock() {
        Ok(()) => std::mem::forget(lock),
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(ServerError::DataDirLocked {
                dir: dir.display().to_string(),
            })
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(data_dir_error(e)),
    }
    // Writable? Find out now, with a message that says what to do, rather than at the first produce.
    let probe = dir.join(".ringtide-write-check");
    std::fs::write(&probe, b"ok").map_err(data_dir_error)?;
    let _ = std::fs::remove_file(&probe);
    // Removed before anything else happens, so that a crash from here on never looks like a clean stop.
    let clean = crate::storage::take_clean_shutdown_marker(&dir).map_err(data_dir_error)?;
    let leftovers = crate::storage::remove_deleted_dirs(&dir).map_err(data_dir_error)?;
    if leftovers > 0 {
        tracing::info!(log_dir = %dir.display(), leftovers, "removed partition directories whose deletion a stop interrupted");
    }
    let recovery_points = crate::storage::checkpoint::load(&dir);
    crate::storage::checkpoint::load_file(
        &dir,
        crate::storage::checkpoint::CLEANER_OFFSET_FILE_NAME,
    );
    if clean {
        tracing::info!(log_dir = %dir.display(), recovery_points, "clean shutdown marker found: no CRC verification");
    } else {
        tracing::info!(log_dir = %dir.display(), recovery_points, "no clean shutdown marker: CRCs past each partition's recovery point are verified");
    }
    let meta = ClusterMeta::load_or_create(&dir).map_err(data_dir_error)?;
    // Recovery points and cleaner offsets of partitions that no longer exist (deleted while the broker was
    // down) leave the checkpoints instead of being carried forward.
    crate::storage::checkpoint::retain(&dir, |topic, partition| {
        meta.topics
            .get(topic)
            .is_some_and(|t| partition < t.partitions)
    });
    tracing::info!(
        ms = started.elapsed().as_millis() as u64,
        "start-up phase: data directory checked, metadata loaded"
    );
    check_meta_properties(&dir, &config, &meta)?;
    if config.zookeeper.is_some() {
        // Never delete what a single broker wrote because ZooKeeper does not know it.
        let single: Vec<&str> = meta
            .topics
            .values()
            .filter(|t| t.assignment.is_empty())
            .map(|t| t.name.as_str())
            .collect();
        if !single.is_empty() {
            return Err(ServerError::SingleBrokerDataDir {
                dir: dir.display().to_string(),
                topics: single.join(", "),
            });
        }
    }
    crate::net::check_port_free(&config.listener.host, config.listener.port).map_err(|source| {
        ServerError::PortInUse {
            host: config.listener.host.clone(),
            port: config.listener.port,
            source,
        }
    })?;

    if let Some((host, port)) = &config.admin_listener {
        if *port != 0 {
            crate::net::check_port_free(host, *port).map_err(|source| ServerError::PortInUse {
                host: host.clone(),
                port: *port,
                source,
            })?;
        }
    }

    // One thread blocks until SIGTERM or SIGINT arrives (no polling: an idle broker stays idle).
    match signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ]) {
        Ok(mut signals) => {
            std::thread::spawn(move || {
                if let Some(sig) = signals.forever().next() {
                    tracing::info!(
                        signal = sig,
                        "stop requested: draining and closing partitions"
                    );
                    STOP.store(true, Ordering::SeqCst);
                    // The clean shutdown is bounded: past the bound, exit without the clean-shutdown
                    // marker (the next start recovers fully, as after a crash).
                    std::thread::sleep(Duration::from_millis(limits::SHUTDOWN_MS_MAX));
                    tracing::error!(
                        bound_ms = limits::SHUTDOWN_MS_MAX,
                        "clean shutdown did not finish in time: exiting without the clean-shutdown marker"
                    );
                    std::process::exit(1);
                }
            });
        }
        Err(e) => tracing::warn!(error = %e, "cannot watch SIGTERM/SIGINT: stop with SIGKILL only"),
    }

    let cores = config.cores;
    let config = Arc::new(config);
    let meta = Arc::new(meta);
    let mesh = crate::shard::mesh::Mesh::<CrossCoreTask>::new(cores, limits::MESH_CHANNEL_CAPACITY);
    let barrier = Arc::new(AtomicUsize::new(0));
    tracing::info!(
        cores,
        node_id = config.node_id,
        log_dirs = %dir.display(),
        topics = meta.topics.len(),
        "starting"
    );
    let handles = LocalExecutorPoolBuilder::new(PoolPlacement::MaxSpread(cores, None))
        .name("ringtide")
        .io_memory(config.io_memory_bytes)
        .on_all_shards(move || {
            let config = config.clone();
            let meta = meta.clone();
            let mesh = mesh.clone();
            let barrier = barrier.clone();
            async move { run_shard(config, meta, mesh, barrier, started).await }
        })
        .map_err(|e| ServerError::Runtime(e.to_string()))?;
    let mut failed = None;
    for r in handles.join_all() {
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failed = Some(e),
            Err(e) => failed = Some(e.to_string()),
        }
    }
    match failed {
        None if crate::storage::close_failures() == 0 => {
            // Every partition closed: their recovery points are their log ends.
            crate::storage::checkpoint::write(&dir).map_err(data_dir_error)?;
            crate::storage::write_clean_shutdown_marker(&dir).map_err(data_dir_error)?;
            tracing::info!(log_dir = %dir.display(), "stopped cleanly: clean shutdown marker written");
            Ok(())
        }
        None => Err(ServerError::Runtime(format!(
            "{} partition(s) could not be closed cleanly; no clean shutdown marker written",
            crate::storage::close_failures()
        ))),
        Some(e) => Err(ServerError::Runtime(e)),
    }
}

/// `meta.properties` in Kafka's KRaft format records which node and cluster a data directory belongs to.
/// A directory of another node is refused; a missing file is written.
fn check_meta_properties(
    dir: &std::path::Path,
    config: &Config,
    meta: &ClusterMeta,
) -> Result<(), ServerError> {
    let path = dir.join("meta.properties");
    let io_error = |source| ServerError::DataDir {
        dir: dir.display().to_string(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let props = crate::config::parse_properties(&text);
            let node = props
                .iter()
                .find(|(k, _)| k == "node.id" || k == "broker.id")
                .and_then(|(_, v)| v.parse::<i32>().ok());
            if let Some(found) = node {
                if found != config.node_id {
                    return Err(ServerError::ForeignDataDir {
                        dir: dir.display().to_string(),
                        found,
                        configured: config.node_id,
                    });
                }
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let text = format!(
                "#\n#Written by ringtide\ncluster.id={}\nnode.id={}\nversion=1\n",
                meta.cluster_id, config.node_id
            );
            std::fs::write(&path, text).map_err(io_error)
        }
        Err(e) => Err(io_error(e)),
    }
}

/// Cluster mode: the cluster the data directory belongs to, when it holds any topic (a directory
/// without data may join any cluster).
fn expected_cluster_id(meta: &ClusterMeta) -> Option<String> {
    (!meta.topics.is_empty()).then(|| meta.cluster_id.clone())
}

/// Cluster mode: opens the ZooKeeper session on this core, registers the broker and installs the
/// cluster's metadata before any core accepts a client. A broker that cannot reach ZooKeeper within
/// `zookeeper.connection.timeout.ms` says so and exits, as Kafka does.
async fn start_cluster_session(
    shard: &Rc<Shard>,
    zk: &crate::config::ZookeeperConfig,
) -> glommio::Task<()> {
    let link = crate::cluster::session::ZkLink::new(crate::cluster::ZkConfig {
        connect: zk.connect.clone(),
        session_timeout_ms: zk.session_timeout_ms,
        connection_timeout_ms: zk.connection_timeout_ms,
        node_id: shard.config.node_id,
        rack: shard.config.rack.clone(),
        listener_name: shard.config.listener.name.clone(),
        host: shard.config.advertised.host.clone(),
        port: shard.config.advertised.port,
        expected_cluster_id: expected_cluster_id(&shard.meta()),
    });
    *shard.controller.zk.borrow_mut() = Some(link.clone());
    let (tx, rx) = futures::channel::oneshot::channel();
    let task = glommio::spawn_local(link.run(shard.clone(), tx));
    tracing::info!(zookeeper = %zk.connect, "connecting to ZooKeeper");
    match rx.await {
        Ok(Ok(())) => {
            shard.prefetch_producer_id_block();
            // The data directory now belongs to the ZooKeeper cluster: meta.properties in the form Kafka's
            // ZooKeeper-mode brokers write (once, at start-up, before any client is served).
            let dir = &shard.config.log_dirs;
            let text = format!(
                "#\n#Written by ringtide\nversion=0\nbroker.id={}\ncluster.id={}\n",
                shard.config.node_id,
                shard.meta().cluster_id
            );
            if let Err(e) = std::fs::write(dir.join("meta.properties"), text) {
                tracing::error!(error = %e, "writing meta.properties failed");
            }
            task
        }
        Ok(Err(e)) => {
            tracing::error!(zookeeper = %zk.connect, error = %e, "cannot join the cluster: ZooKeeper unreachable or refused the registration; exiting");
            std::process::exit(1);
        }
        Err(_) => {
            tracing::error!(zookeeper = %zk.connect, "the ZooKeeper session task ended before registering; exiting");
            std::process::exit(1);
        }
    }
}

async fn run_shard(
    config: Arc<Config>,
    meta: Arc<ClusterMeta>,
    mesh: Arc<crate::shard::mesh::Mesh<CrossCoreTask>>,
    barrier: Arc<AtomicUsize>,
    started: Instant,
) -> Result<(), String> {
    let (senders, receivers) = mesh
        .join()
        .await
        .map_err(|e| format!("joining the core mesh failed: {e}"))?;
    let id = senders.peer_id();
    crate::storage::prepare_executor(&config.log_dirs)
        .await
        .map_err(|e| format!("core {id}: preparing storage failed: {e}"))?;
    let shard = Shard::new(id, config.clone(), meta.clone(), senders);
    shard.serve_mesh(receivers);
    if config.zookeeper.is_some() {
        shard.set_peers(Rc::new(crate::net::peer::Peers::new(config.node_id)));
    }
    let t = Instant::now();
    shard.install_snapshot(meta).await;
    let mut cluster_session = None;
    if id == crate::cluster::CLUSTER_CORE {
        if let Some(zk) = &config.zookeeper {
            cluster_session = Some(start_cluster_session(&shard, zk).await);
        }
    }
    let r = crate::storage::take_recovery_totals();
    tracing::info!(
        core = id,
        partitions = shard.owned_partitions().len(),
        segments_from_index = r.segments_from_index,
        segments_scanned = r.segments_scanned,
        mb_scanned = r.bytes_scanned >> 20,
        batches_verified = r.batches_verified,
        ms = t.elapsed().as_millis() as u64,
        "start-up phase: partitions recovered"
    );
    // Every core has opened its partitions before any core accepts a client.
    // Wait without blocking the thread: a core that is still opening partitions may need this core to
    // run a cross-core task for it meanwhile.
    barrier.fetch_add(1, Ordering::SeqCst);
    while barrier.load(Ordering::SeqCst) < shard.cores {
        glommio::timer::sleep(Duration::from_millis(1)).await;
    }
    let listener = crate::net::bind(&config.listener.host, config.listener.port).map_err(|e| {
        format!(
            "core {id}: cannot listen on port {}: {e}",
            config.listener.port
        )
    })?;
    if id == 0 {
        tracing::info!(
            listener = %format!("{}://{}:{}", config.listener.name, config.listener.host, config.listener.port),
            advertised = %format!("{}:{}", config.advertised.host, config.advertised.port),
            cores = shard.cores,
            topics = shard.meta().topics.len(),
            partitions = shard.meta().topics.values().map(|t| t.partitions as u64).sum::<u64>(),
            ms = started.elapsed().as_millis() as u64,
            "ringtide ready"
        );
    }
    let admin = match (&config.admin_listener, id) {
        (Some((host, port)), 0) => {
            let l = crate::net::bind(host, *port).map_err(|e| {
                format!("cannot listen on admin port {port} (ringtide.admin.listener): {e}")
            })?;
            let addr = l.local_addr().map(|a| a.to_string()).unwrap_or_default();
            tracing::info!(admin = %addr, "admin listener: /metrics and /v1/status");
            Some(
                glommio::spawn_local(crate::net::admin_http::serve(shard.clone(), l, started))
                    .detach(),
            )
        }
        _ => None,
    };
    let conns = crate::net::Connections::new(&config);
    let accept = glommio::spawn_local(crate::net::accept_loop(
        shard.clone(),
        listener,
        conns.clone(),
    ))
    .detach();
    let retention = glommio::spawn_local(retention_loop(shard.clone())).detach();
    let producer_expiry = glommio::spawn_local(producer_expiry_loop(shard.clone())).detach();
    let checkpoints = glommio::spawn_local(checkpoint_loop(shard.clone())).detach();
    // The cleaner yields to everything else on the core: its own task queue with a small share.
    let cleaner_queue = glommio::executor().create_task_queue(
        glommio::Shares::Static(limits::LOG_CLEANER_TASK_SHARES),
        glommio::Latency::NotImportant,
        "log-cleaner",
    );
    let cleaner = glommio::spawn_local_into(cleaner_loop(shard.clone()), cleaner_queue)
        .expect("the cleaner's task queue was just created")
        .detach();
    inject_fault(id);

    while !STOP.load(Ordering::SeqCst) {
        glommio::timer::sleep(STOP_POLL).await;
    }
    shard.stopping.set(true);
    accept.cancel();
    if let Some(admin) = admin {
        admin.cancel();
    }
    retention.cancel();
    producer_expiry.cancel();
    checkpoints.cancel();
    cleaner.cancel();
    // Stop reading requests; let every connection answer what it has in flight (produce acks need the
    // flushers, which still run), bounded by SHUTDOWN_DRAIN_MS_MAX.
    let drain_deadline = Instant::now() + Duration::from_millis(limits::SHUTDOWN_DRAIN_MS_MAX);
    conns.stop_reading();
    let drained = conns.wait_closed(drain_deadline).await;
    // Cores close their partitions only once every core has drained: a connection on another core may
    // still be waiting for a partition of this one.
    DRAINED_CORES.fetch_add(1, Ordering::SeqCst);
    while DRAINED_CORES.load(Ordering::SeqCst) < shard.cores && Instant::now() < drain_deadline {
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
    // Writes and syncs what is pending, truncates active segments, writes their indexes.
    shard.close_all().await;
    if !drained {
        // Long polls still waiting were woken by the close; whatever is left is cut off.
        let left = conns.len();
        conns.close_all();
        conns
            .wait_closed(Instant::now() + Duration::from_secs(1))
            .await;
        tracing::warn!(
            core = id,
            connections = left,
            "connections still busy at the drain deadline were closed"
        );
    }
    if let Some(task) = cluster_session {
        // Cluster mode: end the ZooKeeper session, so that the controller sees this broker gone at once
        // (not after the session timeout) and a restart can register again without waiting.
        task.cancel().await;
        let link = shard.controller.zk.borrow_mut().take();
        if let Some(link) = link {
            link.close().await;
        }
    }
    tracing::info!(core = id, "core stopped");
    Ok(())
}

/// Cores that have finished draining their connections during shutdown.
static DRAINED_CORES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Deletes old segments of this core's partitions every `log.retention.check.interval.ms`.
/// Fault injection for the fail-stop test: with `RINGTIDE_FAULT_PANIC_CORE=N` in the environment, core N
/// panics one second after it starts serving. Nothing else reads it.
fn inject_fault(id: usize) {
    let core = std::env::var(limits::FAULT_PANIC_CORE_ENV).ok();
    if core.and_then(|c| c.parse::<usize>().ok()) == Some(id) {
        tracing::warn!(
            core = id,
            "{} is set: this core will panic",
            limits::FAULT_PANIC_CORE_ENV
        );
        glommio::spawn_local(async move {
            glommio::timer::sleep(Duration::from_millis(1000)).await;
            panic!(
                "injected fault on core {id} ({})",
                limits::FAULT_PANIC_CORE_ENV
            );
        })
        .detach();
    }
}

async fn retention_loop(shard: std::rc::Rc<Shard>) {
    let every = Duration::from_millis(shard.config.log_retention_check_interval_ms);
    loop {
        glommio::timer::sleep(every).await;
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        for (tp, p) in shard.owned_partitions() {
            if let Err(e) = p.enforce_retention(now_ms).await {
                tracing::warn!(topic = %tp.topic, partition = tp.partition, error = %e, "retention failed");
            }
        }
    }
}

/// Kafka's log cleaner for this core's compacted partitions: picks the dirtiest log whose dirty ratio
/// reaches its `min.cleanable.dirty.ratio` (or that holds records older than `max.compaction.lag.ms`),
/// cleans it, and looks again; sleeps `log.cleaner.backoff.ms` when none needs cleaning. Each core's map
/// gets its share of `log.cleaner.dedupe.buffer.size`, and its share of the I/O rate.
async fn cleaner_loop(shard: std::rc::Rc<Shard>) {
    let c = shard.config.log_cleaner.clone();
    if !c.enable {
        return;
    }
    let cores = shard.config.cores.max(1);
    if shard.id == 0 && c.threads != 1 {
        tracing::warn!(
            log_cleaner_threads = c.threads,
            cores,
            "log.cleaner.threads is not used: every core cleans the compacted partitions it owns, and the \
             dedupe buffer and I/O rate are divided among the cores"
        );
    }
    let map_entries = ((c.dedupe_buffer_bytes / cores) as f64
        / limits::LOG_CLEANER_MAP_ENTRY_BYTES as f64
        * limits::LOG_CLEANER_MAP_LOAD_FACTOR) as usize;
    let io_rate = c.io_max_bytes_per_second / cores as f64;
    let backoff = Duration::from_millis(c.backoff_ms.max(limits::LOG_CLEANER_BACKOFF_MS_MIN));
    loop {
        let now_ms = crate::storage::now_ms();
        let logs: Vec<_> = shard
            .owned_partitions()
            .into_iter()
            .filter_map(|(tp, p)| {
                let c = p.cleanable(now_ms)?;
                let wanted =
                    c.overdue || c.dirty_ratio() >= p.log_config().min_cleanable_dirty_ratio;
                Some((c.dirty_ratio(), wanted, tp, p))
            })
            .collect();
        crate::metrics::dirtiest(logs.iter().map(|l| l.0).fold(0.0, f64::max));
        let best = logs
            .into_iter()
            .filter(|l| l.1)
            .map(|(ratio, _, tp, p)| (ratio, tp, p))
            .max_by(|a, b| a.0.total_cmp(&b.0));
        let Some((ratio, tp, p)) = best else {
            glommio::timer::sleep(backoff).await;
            continue;
        };
        match p.clean(now_ms, map_entries, io_rate).await {
            Ok(Some(stats)) => {
                crate::metrics::cleaned(
                    stats.bytes_read,
                    stats.bytes_written,
                    stats.records_removed,
                );
                tracing::info!(
                    topic = %tp.topic, partition = tp.partition, dirty_ratio = ratio,
                    segments = stats.segments, read = stats.bytes_read, written = stats.bytes_written,
                    removed = stats.records_removed, first_dirty = stats.end_offset,
                    "log cleaned"
                );
            }
            Ok(None) => glommio::timer::sleep(backoff).await,
            Err(e) => {
                tracing::warn!(topic = %tp.topic, partition = tp.partition, error = %e, "log cleaning failed");
                glommio::timer::sleep(backoff).await;
            }
        }
    }
}

/// Kafka's `log.flush.offset.checkpoint.interval.ms` task: every interval, each of this core's
/// partitions that moved is checkpointed (synced, active segment's indexes and producer snapshot
/// written), then the log directory's `recovery-point-offset-checkpoint` is rewritten. After a crash,
/// recovery reads only what lies past these points.
async fn checkpoint_loop(shard: std::rc::Rc<Shard>) {
    let every = Duration::from_millis(shard.config.log_flush_offset_checkpoint_interval_ms);
    let dir = shard.config.log_dirs.clone();
    loop {
        glommio::timer::sleep(every).await;
        let mut moved = 0usize;
        for (tp, p) in shard.owned_partitions() {
            match p.checkpoint().await {
                Ok(Some(_)) => moved += 1,
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(topic = %tp.topic, partition = tp.partition, error = %e, "recovery point checkpoint failed")
                }
            }
        }
        if moved > 0 {
            let d = dir.clone();
            if let Err(e) =
                crate::storage::blocking(move || crate::storage::checkpoint::write(&d)).await
            {
                tracing::warn!(log_dir = %dir.display(), error = %e, "writing the recovery point checkpoint failed");
            }
        }
    }
}

/// Forgets the producer ids idle for `producer.id.expiration.ms` in this core's partitions, every
/// `producer.id.expiration.check.interval.ms` (Kafka's `PeriodicProducerExpirationCheck`): the
/// idempotent-producer state stays bounded by the producers active within the expiration window.
async fn producer_expiry_loop(shard: std::rc::Rc<Shard>) {
    let every = Duration::from_millis(shard.config.producer_id_expiration_check_interval_ms);
    let expiration_ms = shard.config.producer_id_expiration_ms;
    loop {
        glommio::timer::sleep(every).await;
        let now_ms = crate::storage::now_ms();
        let expired: usize = shard
            .owned_partitions()
            .iter()
            .map(|(_, p)| p.expire_producers(now_ms, expiration_ms))
            .sum();
        if expired > 0 {
            tracing::debug!(core = shard.id, expired, "idle producer ids expired");
        }
    }
}
