//! The admin HTTP listener (`ringtide.admin.listener`, default 127.0.0.1:9644) on core 0:
//! `GET /metrics` (Prometheus text format) and `GET /v1/status` (JSON).
//!
//! Deliberately tiny: one request per connection, no keep-alive, a bounded request head.

use std::rc::Rc;
use std::time::Instant;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};

use crate::shard::Shard;

/// The longest request head read before the connection is dropped.
const REQUEST_HEAD_BYTES_MAX: usize = 8 * 1024;

/// Gathers every core's snapshot (one cross-core hop per core) and renders them.
pub async fn scrape(shard: &Rc<Shard>) -> String {
    let mut snapshots = Vec::with_capacity(shard.cores);
    for core in 0..shard.cores {
        // Cross-core hop: each core copies its own counters and measures its own partitions and fetch
        // sessions.
        let snap = shard
            .invoke_on(core, |s| async move {
                let mut snap = crate::metrics::snapshot(s.id);
                let parts = s.owned_partitions();
                snap.partitions = parts.len();
                snap.log_size_bytes = parts.iter().map(|(_, p)| p.log().size_bytes()).sum();
                let sessions = s.fetch_sessions.borrow();
                snap.fetch_sessions = sessions.len();
                snap.fetch_session_partitions = sessions.partitions();
                snap.fetch_session_evictions = sessions.evictions();
                snap.tail_cache_bytes = crate::storage::tail_cache::core_bytes();
                snap.read_ahead_bytes = crate::storage::readahead::held_bytes();
                snap.response_bytes = crate::shard::budget::response_budget().in_use() as usize;
                snap
            })
            .await;
        snapshots.push(snap);
    }
    let mut out = crate::metrics::render(&snapshots);
    if let Some(stats) = cluster_stats(shard) {
        stats.render(&mut out);
    }
    out
}

/// Cluster mode: the cluster as this broker's view and ZooKeeper session show it (core 0 holds both).
fn cluster_stats(shard: &Rc<Shard>) -> Option<crate::metrics::ClusterStats> {
    let zk = shard.controller.zk.borrow().clone()?;
    let meta = shard.meta();
    let node = shard.config.node_id;
    Some(crate::metrics::ClusterStats {
        zookeeper_connected: zk.connected(),
        is_controller: zk.is_controller(),
        controller_id: meta.controller_id,
        brokers: meta.brokers.keys().copied().collect(),
        topics: meta.topics.len(),
        partitions: meta.topics.values().map(|t| t.partitions as usize).sum(),
        offline_partitions: meta
            .topics
            .values()
            .map(|t| (0..t.partitions).filter(|&p| t.leader(p, node) < 0).count())
            .sum(),
    })
}

async fn status(shard: &Rc<Shard>, started: Instant) -> String {
    let mut partitions = 0usize;
    for core in 0..shard.cores {
        // Cross-core hop: count each core's partitions on that core.
        partitions += shard
            .invoke_on(core, |s| async move { s.owned_partitions().len() })
            .await;
    }
    serde_json::json!({
        "build": env!("CARGO_PKG_VERSION"),
        "uptime_s": started.elapsed().as_secs(),
        "node_id": shard.config.node_id,
        "cluster_id": shard.meta().cluster_id,
        "cores": shard.cores,
        "partitions": partitions,
        "topics": shard.meta().topics.len(),
        // Cluster mode: ZooKeeper session, controller, live brokers, offline partitions; else null.
        "cluster": cluster_stats(shard),
    })
    .to_string()
}

/// Serves the admin endpoints until the task is dropped. Runs on core 0.
pub async fn serve(shard: Rc<Shard>, listener: TcpListener, started: Instant) {
    loop {
        let Ok(stream) = listener.accept().await else {
            continue;
        };
        let shard = shard.clone();
        glommio::spawn_local(async move {
            let _ = answer(&shard, stream, started).await;
        })
        .detach();
    }
}

async fn answer(shard: &Rc<Shard>, mut stream: TcpStream, started: Instant) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || head.len() + n > REQUEST_HEAD_BYTES_MAX {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let mut words = line.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (code, ctype, body) = match (method, path) {
        ("GET", "/metrics") => ("200 OK", "text/plain; version=0.0.4", scrape(shard).await),
        ("GET", "/v1/status") => ("200 OK", "application/json", status(shard, started).await),
        ("GET", _) => (
            "404 Not Found",
            "text/plain",
            "not found: try /metrics or /v1/status\n".to_string(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "GET only\n".to_string(),
        ),
    };
    let response = format!(
        "HTTP/1.1 {code}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.flush().await?;
    Ok(())
}
