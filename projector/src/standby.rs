//! One active projector, any number of hot standbys: the projector's durable consumer
//! is a pinned-client priority group (nats-server 2.11+). The server delivers to one
//! pull client only, the pinned one; the others wait. The pin moves when the pinned
//! client stops pulling for [`PRIORITY_TIMEOUT`] (a crash), or at once when it lets go
//! ([`release`], on a graceful stop).
//!
//! The pin is not a lock: a projector that stalls past the timeout still holds the
//! messages it pulled. The fold is fenced by the checkpoint row instead (see
//! `apply::lock_checkpoint`), so two projectors never apply the same event.

use std::time::Duration;

use async_nats::jetstream::consumer::{
    self, AckPolicy, DeliverPolicy, FromConsumer, PriorityPolicy, pull,
};
/// The job stream, as `Broker::stream` hands it out (no info fetched).
type Stream = async_nats::jetstream::stream::Stream<()>;

use crate::run::{ProjectorConfig, ProjectorError};

/// The consumer's one priority group; every projector of a name pulls in it.
pub(crate) const PRIORITY_GROUP: &str = "projector";
/// How long the pinned projector may stay silent before a standby takes over.
pub(crate) const PRIORITY_TIMEOUT: Duration = Duration::from_secs(15);
/// Each pull request's life: short, so a pull stream notices a consumer-leader move
/// (or a lost pin) within seconds, not the default 30 s. Well below the priority
/// timeout, so an idle active projector keeps its pin.
pub(crate) const PULL_EXPIRES: Duration = Duration::from_secs(5);
/// Idle heartbeat of a pull request (the server wants it below half the expiry).
pub(crate) const PULL_HEARTBEAT: Duration = Duration::from_secs(2);

/// Header on each delivered message naming the pin it was delivered under.
const PIN_ID_HEADER: &str = "Nats-Pin-Id";

fn consumer_error(e: impl std::fmt::Display) -> ProjectorError {
    ProjectorError::Consumer(e.to_string())
}

/// The projector consumer's configuration.
pub(crate) fn consumer_config(config: &ProjectorConfig) -> pull::Config {
    pull::Config {
        durable_name: Some(config.name.clone()),
        description: Some("jobstream projector: folds every job event into SQL".to_owned()),
        // Every subject of the stream (jobs, schedules, users, …): the checkpoint is a stream sequence.
        filter_subject: String::new(),
        deliver_policy: DeliverPolicy::All,
        // Acking the last message of a batch acknowledges the whole batch.
        ack_policy: AckPolicy::All,
        ack_wait: Duration::from_secs(60),
        max_ack_pending: i64::try_from(config.batch_size * 4).unwrap_or(i64::MAX),
        priority_policy: PriorityPolicy::PinnedClient,
        priority_groups: vec![PRIORITY_GROUP.to_owned()],
        priority_timeout: PRIORITY_TIMEOUT,
        ..Default::default()
    }
}

/// Whether an existing consumer already is what [`consumer_config`] makes: every subject,
/// pinned in our group with our timeout.
fn is_current(existing: &consumer::Config) -> bool {
    existing.filter_subject.is_empty()
        && existing.filter_subjects.is_empty()
        && existing.priority_policy == PriorityPolicy::PinnedClient
        && existing.priority_groups == [PRIORITY_GROUP]
        && existing.priority_timeout == PRIORITY_TIMEOUT
}

/// Creates the projector's consumer, or converts an existing one in place: a consumer
/// of an older version may filter `jobs.>` only, or have no priority group (then every
/// projector would fold). `get_or_create_consumer` never changes an existing consumer,
/// so this does it explicitly; the update keeps its position (the checkpoint decides anyway).
pub(crate) async fn ensure_consumer(
    stream: &Stream,
    config: &ProjectorConfig,
) -> Result<consumer::Consumer<pull::Config>, ProjectorError> {
    let consumer = stream
        .get_or_create_consumer(&config.name, consumer_config(config))
        .await
        .map_err(consumer_error)?;
    let existing = &consumer.cached_info().config;
    if is_current(existing) {
        return Ok(consumer);
    }
    let mut converted =
        pull::Config::try_from_consumer_config(existing.clone()).map_err(consumer_error)?;
    converted.filter_subject = String::new();
    converted.filter_subjects = Vec::new();
    converted.priority_policy = PriorityPolicy::PinnedClient;
    converted.priority_groups = vec![PRIORITY_GROUP.to_owned()];
    converted.priority_timeout = PRIORITY_TIMEOUT;
    let consumer = stream
        .update_consumer(converted)
        .await
        .map_err(consumer_error)?;
    tracing::info!(name = %config.name, "projector consumer converted: every subject, one pinned projector at a time");
    Ok(consumer)
}

/// The pin a delivered message came under.
pub(crate) fn pin_of(msg: &async_nats::jetstream::Message) -> Option<String> {
    Some(
        msg.headers
            .as_ref()?
            .get(PIN_ID_HEADER)?
            .as_str()
            .to_owned(),
    )
}

/// The pin the server holds for the group now (`None`: nobody is pinned).
async fn current_pin(consumer: &consumer::Consumer<pull::Config>) -> Option<String> {
    let info = consumer.get_info().await.ok()?;
    info.priority_groups
        .into_iter()
        .find(|g| g.group == PRIORITY_GROUP)?
        .pinned_client_id
}

/// Whether another projector holds the pin, so this one is a standby and must not fold
/// from the stream on its own. `ours` is the last pin this projector received.
pub(crate) async fn pinned_elsewhere(
    consumer: &consumer::Consumer<pull::Config>,
    ours: Option<&str>,
) -> bool {
    current_pin(consumer)
        .await
        .is_some_and(|pinned| Some(pinned.as_str()) != ours)
}

/// Lets go of the pin on a graceful stop, so a standby takes over at once instead of
/// after [`PRIORITY_TIMEOUT`]. Only the pinned projector does: a standby stopping must
/// not unpin the active one. Call it after the pull stream is dropped.
pub(crate) async fn release(
    stream: &Stream,
    consumer: &consumer::Consumer<pull::Config>,
    ours: Option<&str>,
) {
    let Some(ours) = ours else { return };
    if current_pin(consumer).await.as_deref() != Some(ours) {
        return;
    }
    let name = consumer.cached_info().name.clone();
    match stream.unpin_consumer(&name, PRIORITY_GROUP).await {
        Ok(()) => tracing::info!(name = %name, "projector pin released: a standby takes over"),
        Err(e) => {
            tracing::warn!(error = %e, "cannot release the projector pin; a standby takes over after the priority timeout");
        }
    }
}
