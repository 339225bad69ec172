//! `QueueService::workers`: the workers registry (a KV bucket with a TTL, see
//! [`jobstream_core::queue`]), with stale workers marked.

use futures::TryStreamExt;
use jobstream_core::broker::BrokerError;
use jobstream_core::queue::WorkerRecord;
use jobstream_core::subject;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{QueueService, QueuesError, require_admin};
use crate::auth::Caller;

/// One worker as the registry last heard of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WorkerView {
    /// What the worker wrote at its last heartbeat.
    #[serde(flatten)]
    pub worker: WorkerRecord,
    /// It missed several heartbeats: stopped or unreachable (its entry expires by itself).
    pub stale: bool,
}

impl QueueService {
    /// Every worker in the registry, by id; stale ones marked. Admins only.
    pub async fn workers(&self, caller: &Caller) -> Result<Vec<WorkerView>, QueuesError> {
        require_admin(caller)?;
        let bucket = subject::workers_bucket(self.broker.stream_name());
        let read = |e: &dyn std::fmt::Display| BrokerError::Read(format!("workers registry: {e}"));
        let store = match self.broker.jetstream().get_key_value(&bucket).await {
            Ok(store) => store,
            // The bucket is made by the first worker: none ever started, nothing to list.
            // (An unreachable server fails `stream()` before this in every other read.)
            Err(e) if e.kind() == async_nats::jetstream::context::KeyValueErrorKind::GetBucket => {
                return Ok(Vec::new());
            }
            Err(e) => return Err(read(&e).into()),
        };
        let keys: Vec<String> = match store.keys().await {
            Ok(keys) => keys.try_collect().await.map_err(|e| read(&e))?,
            Err(e) => return Err(read(&e).into()),
        };
        let now = jobstream_core::event::now();
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let Some(value) = store.get(&key).await.map_err(|e| read(&e))? else {
                continue;
            };
            match serde_json::from_slice::<WorkerRecord>(&value) {
                Ok(worker) => out.push(WorkerView {
                    stale: worker.is_stale(now),
                    worker,
                }),
                Err(e) => tracing::warn!(%key, error = %e, "unreadable worker record skipped"),
            }
        }
        out.sort_by(|a, b| a.worker.id.cmp(&b.worker.id));
        Ok(out)
    }
}
