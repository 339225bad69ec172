//! Replays and verifies on request: a running projector serves the replay and verify
//! commands of its name ([`jobstream_core::replay`], [`jobstream_core::verify`]), runs them
//! one at a time (each kind) against its database, and publishes their progress or result
//! into the replay bucket, where every API instance reads the same thing.
//!
//! The bucket entry is the lock ([`Lease`]): a replay runs only while it holds it, whoever
//! asked (the admin API through the projector, or `jobstream replay`), so two replays of one
//! projection never race, whichever processes started them. A verify holds an entry of its
//! own the same way, and is refused while a replay runs.

use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv::{self, CreateErrorKind, Operation, UpdateErrorKind};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use jobstream_core::broker::{Broker, BrokerError};
use jobstream_core::replay::{
    self as wire, ProgressSnapshot, REPLAY_QUEUE_GROUP, ReplayCommand, ReplayReply,
};
use jobstream_core::subject;
use jobstream_core::verify::{
    self as verify_wire, VerifyCommand, VerifyReply, VerifyState, VerifyStatus,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{
    Progress, ReplayError, ReplayOptions, ReplaySummary, VerifyReport, replay_live, verify,
};
use crate::Connector;

/// A value held in the replay bucket as a lock: a replay's progress or a verify's state.
/// Its holder republishes it (stamped with the time); another may take its place once it is
/// over (ended, or not republished for [`wire::ABANDONED_AFTER`]).
pub trait Leased: Serialize + DeserializeOwned + Clone {
    /// Its entry in the bucket.
    fn key(stream: &str, projector: &str) -> String;
    /// Whether another may take its place at `now`.
    fn is_over(&self, now: DateTime<Utc>) -> bool;
    /// The value as published at `now`.
    fn stamped(&self, now: DateTime<Utc>) -> Self;
}

impl Leased for ProgressSnapshot {
    fn key(stream: &str, projector: &str) -> String {
        wire::progress_key(stream, projector)
    }
    fn is_over(&self, now: DateTime<Utc>) -> bool {
        ProgressSnapshot::is_over(self, now)
    }
    fn stamped(&self, now: DateTime<Utc>) -> Self {
        ProgressSnapshot {
            updated_at: Some(now),
            ..self.clone()
        }
    }
}

impl Leased for VerifyState {
    fn key(stream: &str, projector: &str) -> String {
        verify_wire::state_key(stream, projector)
    }
    fn is_over(&self, now: DateTime<Utc>) -> bool {
        VerifyState::is_over(self, now)
    }
    fn stamped(&self, now: DateTime<Utc>) -> Self {
        VerifyState {
            updated_at: Some(now),
            ..self.clone()
        }
    }
}

/// The entry of one projector's replays (or verifies), held by whoever runs one.
pub struct Lease<T: Leased = ProgressSnapshot> {
    store: kv::Store,
    key: String,
    revision: u64,
    held: PhantomData<T>,
}

/// Attempts to claim the entry when others claim or release it at the same moment.
const CLAIM_ATTEMPTS: usize = 5;

impl<T: Leased> Lease<T> {
    /// Claims the entry of `projector` with `first` as its value: `Ok(Err(v))` when another
    /// holds it (`v` is its value).
    pub async fn acquire(
        broker: &Broker,
        projector: &str,
        first: &T,
    ) -> Result<Result<Lease<T>, T>, BrokerError> {
        let store = wire::open_bucket(broker).await?;
        let key = T::key(broker.stream_name(), projector);
        let read = |e: kv::EntryError| BrokerError::Read(format!("{key}: {e}"));
        for _ in 0..CLAIM_ATTEMPTS {
            let value = stamped(first);
            let claimed = match store.entry(key.as_str()).await.map_err(read)? {
                Some(e) if e.operation == Operation::Put => {
                    // An undecodable value (another version wrote it) is no lock.
                    if let Ok(held) = serde_json::from_slice::<T>(&e.value)
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
                    held: PhantomData,
                }));
            }
        }
        Err(BrokerError::Read(format!(
            "the entry {key} keeps changing; try again"
        )))
    }

    /// Publishes `value` (stamped now) if the lease is still ours.
    async fn publish(&mut self, value: &T) {
        match self
            .store
            .update(self.key.as_str(), stamped(value), self.revision)
            .await
        {
            Ok(rev) => self.revision = rev,
            Err(e) => tracing::warn!(error = %e, key = %self.key, "state not published"),
        }
    }
}

impl Lease<ProgressSnapshot> {
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

/// A value as published: with its time, as JSON.
fn stamped<T: Leased>(value: &T) -> bytes::Bytes {
    serde_json::to_vec(&value.stamped(jobstream_core::event::now()))
        .unwrap_or_default()
        .into()
}

/// Serves the replay and verify commands of one projector.
pub struct ReplayService {
    broker: Broker,
    db: Connector,
    projector: String,
    batch_size: usize,
    job_ttl: Duration,
    commands: async_nats::Subscriber,
    verify_commands: async_nats::Subscriber,
}

impl ReplayService {
    /// Subscribes to the replay and verify commands of `projector` (in a queue group, so
    /// one projector instance gets each) and opens the progress bucket. Replays write
    /// through pools opened by `db`, and verifies read through them; a verify treats
    /// finished jobs older than `job_ttl` (the projector's own) as rightly swept unless
    /// its command says otherwise.
    pub async fn start(
        broker: Broker,
        db: Connector,
        projector: &str,
        batch_size: usize,
        job_ttl: Duration,
    ) -> Result<Self, BrokerError> {
        wire::open_bucket(&broker).await?;
        let subscribe = |subject: String| {
            let client = broker.client().clone();
            async move {
                client
                    .queue_subscribe(subject.clone(), REPLAY_QUEUE_GROUP.to_owned())
                    .await
                    .map_err(|e| BrokerError::Read(format!("{subject}: {e}")))
            }
        };
        let commands = subscribe(subject::replay_commands(broker.stream_name(), projector)).await?;
        let verify_commands =
            subscribe(subject::verify_commands(broker.stream_name(), projector)).await?;
        Ok(ReplayService {
            broker,
            db,
            projector: projector.to_owned(),
            batch_size,
            job_ttl,
            commands,
            verify_commands,
        })
    }

    /// Answers commands until `shutdown`; a running replay then stops after its current
    /// batch (its shadow resumes on the next replay), a running verify stops and says so,
    /// and both are waited for.
    pub async fn serve(mut self, shutdown: CancellationToken) {
        let mut running: Option<JoinHandle<()>> = None;
        let mut verifying: Option<JoinHandle<()>> = None;
        loop {
            let (msg, reply) = tokio::select! {
                () = shutdown.cancelled() => break,
                msg = self.commands.next() => {
                    let Some(msg) = msg else { break };
                    let reply = match serde_json::from_slice::<ReplayCommand>(&msg.payload) {
                        Ok(command) => self.begin(command, &shutdown, &mut running).await,
                        Err(e) => ReplayReply::Failed {
                            error: format!("the replay command does not decode: {e}"),
                        },
                    };
                    (msg, serde_json::to_vec(&reply))
                }
                msg = self.verify_commands.next() => {
                    let Some(msg) = msg else { break };
                    let reply = match serde_json::from_slice::<VerifyCommand>(&msg.payload) {
                        Ok(command) => {
                            self.begin_verify(command, &shutdown, &mut verifying).await
                        }
                        Err(e) => VerifyReply::Failed {
                            error: format!("the verify command does not decode: {e}"),
                        },
                    };
                    (msg, serde_json::to_vec(&reply))
                }
            };
            if let Some(to) = msg.reply {
                let body = reply.unwrap_or_default();
                if let Err(e) = self.broker.client().publish(to, body.into()).await {
                    tracing::warn!(error = %e, "reply to a replay or verify command not sent");
                }
            }
        }
        for task in [running, verifying].into_iter().flatten() {
            let _ = task.await;
        }
    }

    /// Starts a verify unless one holds its lease or a replay is running.
    async fn begin_verify(
        &self,
        command: VerifyCommand,
        shutdown: &CancellationToken,
        verifying: &mut Option<JoinHandle<()>>,
    ) -> VerifyReply {
        // A verify of a projection a replay is about to replace tells nothing (the
        // reverse is harmless: a verify reads one snapshot of the projection).
        match wire::read_progress(&self.broker, &self.projector).await {
            Ok(Some(p)) if !p.is_over(jobstream_core::event::now()) => {
                return VerifyReply::ReplayRunning(p);
            }
            Ok(_) => {}
            Err(e) => {
                return VerifyReply::Failed {
                    error: e.to_string(),
                };
            }
        }
        let first = VerifyState::running(jobstream_core::event::now());
        let lease = match Lease::acquire(&self.broker, &self.projector, &first).await {
            Ok(Ok(lease)) => lease,
            Ok(Err(held)) => return VerifyReply::Busy(held),
            Err(e) => {
                return VerifyReply::Failed {
                    error: e.to_string(),
                };
            }
        };
        let job_ttl = command
            .job_ttl_secs
            .map_or(self.job_ttl, Duration::from_secs);
        tracing::info!(?job_ttl, "verify started on request");
        // The previous verify (it released the lease) has ended or is publishing its end.
        if let Some(previous) = verifying.take() {
            let _ = previous.await;
        }
        let (broker, connect, cancel, projector, state) = (
            self.broker.clone(),
            self.db.clone(),
            shutdown.clone(),
            self.projector.clone(),
            first.clone(),
        );
        *verifying = Some(tokio::spawn(async move {
            let check = async {
                // Not closed afterwards: it may be the pool the rest of the process shares.
                let db = connect()
                    .await
                    .map_err(|e| ReplayError::Db(e).to_string())?;
                verify(&broker, &db, &projector, job_ttl)
                    .await
                    .map_err(|e| e.to_string())
            };
            run_verify(lease, state, check, &cancel).await;
        }));
        VerifyReply::Started(first)
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

/// Runs `check` while republishing `state` every [`wire::PUBLISH_EVERY`] (so a verify whose
/// process died is seen as abandoned), then publishes its result or error (which releases
/// the lease). Cancelled, it stops and says so.
async fn run_verify(
    mut lease: Lease<VerifyState>,
    mut state: VerifyState,
    check: impl Future<Output = Result<VerifyReport, String>>,
    cancel: &CancellationToken,
) {
    let mut check = std::pin::pin!(check);
    let mut tick = tokio::time::interval(wire::PUBLISH_EVERY);
    let outcome = loop {
        tokio::select! {
            out = &mut check => break out,
            () = cancel.cancelled() => {
                break Err("the projector stopped before the verify finished; run it again".into())
            }
            _ = tick.tick() => lease.publish(&state).await,
        }
    };
    state.finished_at = Some(jobstream_core::event::now());
    match outcome {
        Ok(report) => {
            tracing::info!(
                checkpoint = report.checkpoint,
                differences = report.differences.len(),
                "verify finished"
            );
            state.status = VerifyStatus::Done;
            state.result = Some(report.to_result(verify_wire::MAX_LISTED));
        }
        Err(error) => {
            tracing::error!(%error, "verify failed");
            state.status = VerifyStatus::Failed;
            state.error = Some(error);
        }
    }
    lease.publish(&state).await;
}
