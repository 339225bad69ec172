//! Replays on request: a running projector serves the replay commands of its name
//! ([`jobstream_core::replay`]), runs them one at a time into its database, and publishes
//! their progress into the replay bucket, where every API instance reads the same thing.
//!
//! The bucket entry is the lock ([`Lease`]): a replay runs only while it holds it, whoever
//! asked (the admin API through the projector, or `jobstream replay`), so two replays of one
//! projection never race, whichever processes started them.

use std::future::Future;
use std::sync::Arc;

use async_nats::jetstream::kv::{self, CreateErrorKind, Operation, UpdateErrorKind};
use futures::StreamExt;
use jobstream_core::broker::{Broker, BrokerError};
use jobstream_core::replay::{
    self as wire, ProgressSnapshot, REPLAY_QUEUE_GROUP, ReplayCommand, ReplayReply,
};
use jobstream_core::subject;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{Progress, ReplayError, ReplayOptions, ReplaySummary, replay_live};
use crate::Connector;

/// The progress entry of one projector's replays, held by whoever runs one.
pub struct Lease {
    store: kv::Store,
    key: String,
    revision: u64,
}

/// Attempts to claim the entry when others claim or release it at the same moment.
const CLAIM_ATTEMPTS: usize = 5;

impl Lease {
    /// Claims the replay entry of `projector` with `first` as its progress: `Ok(Err(p))`
    /// when another replay holds it (`p` is its progress).
    pub async fn acquire(
        broker: &Broker,
        projector: &str,
        first: &ProgressSnapshot,
    ) -> Result<Result<Lease, ProgressSnapshot>, BrokerError> {
        let store = wire::open_bucket(broker).await?;
        let key = wire::progress_key(broker.stream_name(), projector);
        let read = |e: kv::EntryError| BrokerError::Read(format!("replay progress: {e}"));
        for _ in 0..CLAIM_ATTEMPTS {
            let value = stamped(first);
            let claimed = match store.entry(key.as_str()).await.map_err(read)? {
                Some(e) if e.operation == Operation::Put => {
                    // Undecodable progress (another version wrote it) is no lock.
                    if let Ok(held) = serde_json::from_slice::<ProgressSnapshot>(&e.value)
                        && !held.is_over(jobstream_core::event::now())
                    {
                        return Ok(Err(held));
                    }
                    match store.update(key.as_str(), value, e.revision).await {
                        Ok(rev) => Some(rev),
                        Err(err) if err.kind() == UpdateErrorKind::WrongLastRevision => None,
                        Err(err) => return Err(BrokerError::Read(err.to_string())),
                    }
                }
                _ => match store.create(key.as_str(), value).await {
                    Ok(rev) => Some(rev),
                    Err(err) if err.kind() == CreateErrorKind::AlreadyExists => None,
                    Err(err) => return Err(BrokerError::Read(err.to_string())),
                },
            };
            if let Some(revision) = claimed {
                return Ok(Ok(Lease {
                    store,
                    key,
                    revision,
                }));
            }
        }
        Err(BrokerError::Read(
            "the replay entry keeps changing; try again".into(),
        ))
    }

    /// Publishes `snapshot` (stamped now) if the lease is still ours.
    async fn publish(&mut self, snapshot: &ProgressSnapshot) {
        match self
            .store
            .update(self.key.as_str(), stamped(snapshot), self.revision)
            .await
        {
            Ok(rev) => self.revision = rev,
            Err(e) => tracing::warn!(error = %e, "replay progress not published"),
        }
    }

    /// Runs `replay` while publishing `progress` every [`wire::PUBLISH_EVERY`] and once at
    /// the end (which releases the lease: the final progress says `finished`).
    pub async fn publish_while(
        mut self,
        progress: &Progress,
        replay: impl Future<Output = Result<ReplaySummary, ReplayError>>,
    ) -> Result<ReplaySummary, ReplayError> {
        let mut replay = std::pin::pin!(replay);
        let mut tick = tokio::time::interval(wire::PUBLISH_EVERY);
        let outcome = loop {
            tokio::select! {
                out = &mut replay => break out,
                _ = tick.tick() => self.publish(&progress.snapshot()).await,
            }
        };
        self.publish(&progress.snapshot()).await;
        outcome
    }
}

/// A snapshot as published: with its time, as JSON.
fn stamped(snapshot: &ProgressSnapshot) -> bytes::Bytes {
    let snapshot = ProgressSnapshot {
        updated_at: Some(jobstream_core::event::now()),
        ..snapshot.clone()
    };
    serde_json::to_vec(&snapshot).unwrap_or_default().into()
}

/// Serves the replay commands of one projector.
pub struct ReplayService {
    broker: Broker,
    db: Connector,
    projector: String,
    batch_size: usize,
    commands: async_nats::Subscriber,
}

impl ReplayService {
    /// Subscribes to the replay commands of `projector` (in a queue group, so one projector
    /// instance gets each) and opens the progress bucket. Replays write through pools
    /// opened by `db`.
    pub async fn start(
        broker: Broker,
        db: Connector,
        projector: &str,
        batch_size: usize,
    ) -> Result<Self, BrokerError> {
        wire::open_bucket(&broker).await?;
        let commands = broker
            .client()
            .queue_subscribe(
                subject::replay_commands(broker.stream_name(), projector),
                REPLAY_QUEUE_GROUP.to_owned(),
            )
            .await
            .map_err(|e| BrokerError::Read(format!("replay commands: {e}")))?;
        Ok(ReplayService {
            broker,
            db,
            projector: projector.to_owned(),
            batch_size,
            commands,
        })
    }

    /// Answers commands until `shutdown`; a running replay then stops after its current
    /// batch (its shadow resumes on the next replay) and is waited for.
    pub async fn serve(mut self, shutdown: CancellationToken) {
        let mut running: Option<JoinHandle<()>> = None;
        loop {
            let msg = tokio::select! {
                () = shutdown.cancelled() => break,
                msg = self.commands.next() => msg,
            };
            let Some(msg) = msg else { break };
            let reply = match serde_json::from_slice::<ReplayCommand>(&msg.payload) {
                Ok(command) => self.begin(command, &shutdown, &mut running).await,
                Err(e) => ReplayReply::Failed {
                    error: format!("the replay command does not decode: {e}"),
                },
            };
            if let Some(to) = msg.reply {
                let body = serde_json::to_vec(&reply).unwrap_or_default();
                if let Err(e) = self.broker.client().publish(to, body.into()).await {
                    tracing::warn!(error = %e, "replay reply not sent");
                }
            }
        }
        if let Some(task) = running {
            let _ = task.await;
        }
    }

    /// Starts `command` unless a replay holds the lease.
    async fn begin(
        &self,
        command: ReplayCommand,
        shutdown: &CancellationToken,
        running: &mut Option<JoinHandle<()>>,
    ) -> ReplayReply {
        let progress = Arc::new(Progress::default());
        let lease = match Lease::acquire(&self.broker, &self.projector, &progress.snapshot()).await
        {
            Ok(Ok(lease)) => lease,
            Ok(Err(held)) => return ReplayReply::Busy(held),
            Err(e) => {
                return ReplayReply::Failed {
                    error: e.to_string(),
                };
            }
        };
        let opts = ReplayOptions {
            projector_name: self.projector.clone(),
            start: command.start,
            job_ttl: std::time::Duration::from_secs(command.job_ttl_secs),
            batch_size: self.batch_size,
            fresh: command.fresh,
        };
        tracing::info!(?opts.start, "replay started on request");
        let (broker, connect, cancel, p) = (
            self.broker.clone(),
            self.db.clone(),
            shutdown.clone(),
            progress.clone(),
        );
        // The previous replay (it released the lease) has ended or is publishing its end.
        if let Some(previous) = running.take() {
            let _ = previous.await;
        }
        *running = Some(tokio::spawn(async move {
            let replay = async {
                match connect().await {
                    // Not closed afterwards: it may be the pool the rest of the process shares.
                    Ok(db) => replay_live(&broker, &db, &opts, &p, &cancel).await,
                    Err(e) => {
                        let failed = Err(ReplayError::Db(e));
                        p.finish(&failed);
                        failed
                    }
                }
            };
            match lease.publish_while(&p, replay).await {
                Ok(s) => tracing::info!(?s, "replay finished"),
                Err(e) => tracing::error!(error = %e, "replay failed"),
            }
        }));
        ReplayReply::Started(progress.snapshot())
    }
}
