//! Pausing a queue: a worker learns its queues' pause state at start (the last record
//! on `queues.<queue>`) and follows it live, and its puller takes no new jobs while
//! the queue is paused (jobs already running finish). Why the state is a stream record
//! is in [`jobstream_core::queue`].

use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use futures::StreamExt;
use jobstream_core::broker::Broker;
use jobstream_core::queue::QueueRecord;
use jobstream_core::subject::{self, QueueName};
use tokio::sync::watch;

/// How long the follower waits before following again after it lost the stream.
const REFOLLOW_AFTER: Duration = Duration::from_secs(1);

/// One queue's pause state, kept current by a follower task (which ends with the gate).
pub(crate) struct PauseGate {
    paused: watch::Receiver<bool>,
}

impl PauseGate {
    /// Reads the queue's current state, then follows its control records.
    pub(crate) async fn follow(broker: &Broker, queue: &QueueName) -> Result<Self, String> {
        let subject = subject::queue_control(queue);
        let initial = match broker
            .last_on_subject(&subject)
            .await
            .map_err(|e| e.to_string())?
        {
            Some(msg) => decode(queue, &msg.payload).unwrap_or(false),
            None => false,
        };
        if initial {
            tracing::info!(%queue, "queue is paused: taking no new jobs until it is resumed");
        }
        let (tx, rx) = watch::channel(initial);
        tokio::spawn(follow_records(broker.clone(), queue.clone(), subject, tx));
        Ok(PauseGate { paused: rx })
    }

    /// Whether the queue is paused now.
    pub(crate) fn is_paused(&self) -> bool {
        *self.paused.borrow()
    }

    /// Returns at once if the queue runs, else when it is resumed.
    pub(crate) async fn until_running(&mut self) {
        // An error means the follower is gone (the worker is stopping): do not block.
        let _ = self.paused.wait_for(|paused| !paused).await;
    }
}

/// The pause state in a record; `None` (logged) when it does not decode.
fn decode(queue: &QueueName, payload: &[u8]) -> Option<bool> {
    match QueueRecord::decode(payload) {
        Ok(rec) => Some(rec.event.paused()),
        Err(e) => {
            tracing::warn!(%queue, error = %e, "unreadable queue control record ignored");
            None
        }
    }
}

/// Follows the queue's control subject (its last record, then every new one) with an
/// ordered consumer, until the gate is dropped.
async fn follow_records(
    broker: Broker,
    queue: QueueName,
    subject: String,
    tx: watch::Sender<bool>,
) {
    loop {
        let messages = async {
            let stream = broker.stream().await.map_err(|e| e.to_string())?;
            stream
                .create_consumer(pull::OrderedConfig {
                    filter_subject: subject.clone(),
                    // The current record first, so a change made before this consumer existed counts.
                    deliver_policy: DeliverPolicy::LastPerSubject,
                    ..Default::default()
                })
                .await
                .map_err(|e| e.to_string())?
                .messages()
                .await
                .map_err(|e| e.to_string())
        };
        let mut messages = tokio::select! {
            () = tx.closed() => return,
            m = messages => match m {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(%queue, error = %e, "cannot follow the queue's pause state; trying again");
                    tokio::select! {
                        () = tx.closed() => return,
                        () = tokio::time::sleep(REFOLLOW_AFTER) => continue,
                    }
                }
            },
        };
        loop {
            let next = tokio::select! {
                () = tx.closed() => return,
                next = messages.next() => next,
            };
            match next {
                Some(Ok(msg)) => {
                    if let Some(paused) = decode(&queue, &msg.payload) {
                        let changed =
                            tx.send_if_modified(|p| std::mem::replace(p, paused) != paused);
                        if changed && paused {
                            tracing::info!(%queue, "queue paused: taking no new jobs (running ones finish)");
                        } else if changed {
                            tracing::info!(%queue, "queue resumed: taking jobs again");
                        }
                    }
                }
                Some(Err(e)) => {
                    tracing::debug!(%queue, error = %e, "pause follower: consumer error");
                }
                None => break,
            }
        }
    }
}
