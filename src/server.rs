//! Start-up and shutdown: one pinned glommio executor per core, each with its own listener on the same
//! port, its share of the partitions, and its ends of the cross-core mesh.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use glommio::channels::channel_mesh::MeshBuilder;
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
    #[error("cannot start executors: {0}")]
    Runtime(String),
}

/// Set by the signal thread on SIGTERM/SIGINT; every core polls it.
static STOP: AtomicBool = AtomicBool::new(false);

/// How often each core checks for a stop request.
const STOP_POLL: Duration = Duration::from_millis(50);

pub fn run(config: Config) -> Result<(), ServerError> {
    let started = Instant::now();
    let dir = config.log_dirs.clone();
    std::fs::create_dir_all(&dir).map_err(|source| ServerError::DataDir {
        dir: dir.display().to_string(),
        source,
    })?;
    let meta = ClusterMeta::load_or_create(&dir).map_err(|source| ServerError::DataDir {
        dir: dir.display().to_string(),
        source,
    })?;
    crate::net::check_port_free(&config.listener.host, config.listener.port).map_err(|source| {
        ServerError::PortInUse {
            host: config.listener.host.clone(),
            port: config.listener.port,
            source,
        }
    })?;

    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        // SAFETY-free: the flag is a static atomic; the handler only stores to it.
        let flag = Arc::new(AtomicBool::new(false));
        let _ = signal_hook::flag::register(sig, flag.clone());
        std::thread::spawn(move || loop {
            if flag.load(Ordering::Relaxed) {
                tracing::info!(
                    signal = sig,
                    "stop requested: draining and closing partitions"
                );
                STOP.store(true, Ordering::SeqCst);
                return;
            }
            std::thread::sleep(STOP_POLL);
        });
    }

    let cores = config.cores;
    let config = Arc::new(config);
    let meta = Arc::new(meta);
    let mesh = MeshBuilder::<CrossCoreTask, _>::full(cores, limits::MESH_CHANNEL_CAPACITY);
    let barrier = Arc::new(Barrier::new(cores));
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
        None => {
            tracing::info!("stopped cleanly");
            Ok(())
        }
        Some(e) => Err(ServerError::Runtime(e)),
    }
}

async fn run_shard(
    config: Arc<Config>,
    meta: Arc<ClusterMeta>,
    mesh: MeshBuilder<CrossCoreTask, glommio::channels::channel_mesh::Full>,
    barrier: Arc<Barrier>,
    started: Instant,
) -> Result<(), String> {
    let (senders, receivers) = mesh
        .join()
        .await
        .map_err(|_| "joining the core mesh failed".to_string())?;
    let id = senders.peer_id();
    crate::storage::prepare_executor(&config.log_dirs)
        .await
        .map_err(|e| format!("core {id}: preparing storage failed: {e}"))?;
    let shard = Shard::new(id, config.clone(), meta.clone(), senders);
    shard.serve_mesh(receivers);
    let t = Instant::now();
    shard.install_snapshot(meta).await;
    tracing::info!(
        core = id,
        partitions = shard.owned_partitions().len(),
        ms = t.elapsed().as_millis() as u64,
        "partitions recovered"
    );
    // Every core has opened its partitions before any core accepts a client.
    barrier.wait();
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
            ms = started.elapsed().as_millis() as u64,
            "ringtide ready"
        );
    }
    let accept = glommio::spawn_local(crate::net::accept_loop(shard.clone(), listener)).detach();
    let retention = glommio::spawn_local(retention_loop(shard.clone())).detach();

    while !STOP.load(Ordering::SeqCst) {
        glommio::timer::sleep(STOP_POLL).await;
    }
    shard.stopping.set(true);
    accept.cancel();
    retention.cancel();
    shard.close_all().await;
    tracing::info!(core = id, "core stopped");
    Ok(())
}

/// Deletes old segments of this core's partitions every `log.retention.check.interval.ms`.
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
