//! The workers registry: every heartbeat, a worker puts what it is and does (id, host,
//! queues, concurrency, jobs in flight, start time) under its id in a KV bucket whose
//! entries expire by themselves. Why a KV bucket, not heartbeat events, is in
//! [`jobstream_core::queue`].

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{kv, stream::StorageType};
use jobstream_core::queue::{WORKERS_TTL, WorkerRecord};
use jobstream_core::subject;
use tokio_util::sync::CancellationToken;

use crate::run::Shared;

/// Writes the worker's record every `config.heartbeat` until `shutdown`. Best effort: a
/// heartbeat that cannot be written is logged (the worker then shows as stale), never
/// fatal, so the registry can never stop a worker from running jobs.
pub(crate) async fn heartbeat(shared: Arc<Shared>, shutdown: CancellationToken) {
    let config = &shared.config;
    let started_at = jobstream_core::event::now();
    let host = hostname::get()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".to_owned());
    let key = WorkerRecord::key(&config.id);
    let mut store = None;
    let mut ticks = tokio::time::interval(config.heartbeat);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        if store.is_none() {
            store = match open_bucket(&shared).await {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(worker = %config.id, error = %e, "workers registry unavailable; retrying at the next heartbeat");
                    continue;
                }
            };
        }
        let rec = WorkerRecord {
            id: config.id.clone(),
            host: host.clone(),
            pid: std::process::id(),
            queues: config.queues.iter().map(ToString::to_string).collect(),
            concurrency: config.concurrency,
            in_flight: shared.running.lock().map_or(0, |r| r.len()),
            started_at,
            heartbeat_at: jobstream_core::event::now(),
            heartbeat_ms: u64::try_from(config.heartbeat.as_millis()).unwrap_or(u64::MAX),
        };
        let Some(bucket) = &store else { continue };
        let bytes = serde_json::to_vec(&rec).unwrap_or_default();
        let put = tokio::time::timeout(
            config.heartbeat.max(Duration::from_secs(1)),
            bucket.put(&key, bytes.into()),
        );
        match put.await {
            Ok(Ok(_)) => tracing::trace!(worker = %config.id, "heartbeat written"),
            Ok(Err(e)) => tracing::warn!(worker = %config.id, error = %e, "heartbeat not written"),
            Err(_) => tracing::warn!(worker = %config.id, "heartbeat not written in time"),
        }
    }
}

/// Creates (or opens) the registry bucket beside the job stream, with its replicas.
async fn open_bucket(shared: &Shared) -> Result<kv::Store, String> {
    let js = shared.broker.jetstream();
    let replicas = js
        .get_stream(shared.broker.stream_name())
        .await
        .map_err(|e| e.to_string())?
        .cached_info()
        .config
        .num_replicas;
    js.create_or_update_key_value(kv::Config {
        bucket: subject::workers_bucket(shared.broker.stream_name()),
        description: "jobstream: workers registry (heartbeats)".into(),
        history: 1,
        max_age: WORKERS_TTL,
        storage: StorageType::File,
        num_replicas: replicas,
        ..Default::default()
    })
    .await
    .map_err(|e| e.to_string())
}
