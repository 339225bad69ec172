//! The JOBS stream: created with the design's invariants, idempotently; old servers refused.

use std::time::Duration;

use async_nats::jetstream::stream::{RetentionPolicy, StorageType};
use jobstream_core::broker::{Broker, BrokerError, StreamSettings};
use jobstream_core::event::{Envelope, Event};
use jobstream_core::nats_server::{NatsServerProcess, ServerOptions};
use jobstream_core::subject::QueueName;
use jobstream_testkit::NatsServer;

#[tokio::test]
async fn the_stream_is_created_and_updated_idempotently_with_limits_retention() {
    let nats = NatsServer::start().await;
    let broker = Broker::connect(&nats.url(), "t", "JOBS").await.unwrap();
    let settings = StreamSettings {
        max_age: Duration::from_secs(3600),
        ..StreamSettings::default()
    };
    let first = broker.ensure_stream(&settings).await.unwrap();
    let again = broker.ensure_stream(&settings).await.unwrap();
    assert_eq!(
        first.config.subjects,
        [
            "jobs.>",
            "schedules.>",
            "timers.>",
            "idem.>",
            "users.>",
            "queues.>",
            "workflows.>"
        ]
        .map(str::to_owned)
    );
    assert!(
        first.config.allow_rollup,
        "deleting a schedule rolls its record up"
    );
    assert_eq!(
        again.config.retention,
        RetentionPolicy::Limits,
        "never work-queue: the log must survive for replay"
    );
    assert_eq!(again.config.storage, StorageType::File);
    assert_eq!(again.config.max_age, Duration::from_secs(3600));
    assert_eq!(again.config.duplicate_window, settings.duplicate_window);
    assert!(
        again.config.allow_message_ttl
            && again.config.allow_message_schedules
            && again.config.allow_atomic_publish
    );
    // A changed retention is applied on the next start.
    let longer = StreamSettings {
        max_age: Duration::from_secs(7200),
        ..settings
    };
    assert_eq!(
        broker.ensure_stream(&longer).await.unwrap().config.max_age,
        Duration::from_secs(7200)
    );
}

#[tokio::test]
async fn a_republished_event_is_stored_once() {
    let nats = NatsServer::start().await;
    let broker = Broker::connect(&nats.url(), "t", "JOBS").await.unwrap();
    broker
        .ensure_stream(&StreamSettings::default())
        .await
        .unwrap();
    let env = Envelope::new(uuid::Uuid::now_v7(), 1, Event::Failed { error: "x".into() });
    let q = QueueName::default_queue();
    let a = broker.publish(&env, &q, Some("req-1")).await.unwrap();
    let b = broker.publish(&env, &q, Some("req-1")).await.unwrap();
    assert_eq!(
        a, b,
        "the Nats-Msg-Id (event id) de-duplicates a retried publish"
    );
    assert_eq!(broker.job_history(env.job_id).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_nats_server_older_than_2_14_is_refused_with_a_clear_message() {
    // 2.12, installed by `make test` (scripts/test.sh): older than message schedules.
    let old = jobstream_testkit::workspace_root().join(".tools/nats-server-old/bin/nats-server");
    assert!(
        old.is_file(),
        "{} is missing: `make test` installs it (NATS_SERVER_VERSION=2.12.8 NATS_SERVER_DEST=.tools/nats-server-old scripts/install-nats-server.sh)",
        old.display()
    );
    let store = tempfile::tempdir().unwrap();
    let server = NatsServerProcess::start(&ServerOptions {
        bin: old,
        config: None,
        store_dir: store.path().to_path_buf(),
        port: None,
        log_file: None,
        cluster: None,
    })
    .await
    .unwrap();
    let err = Broker::connect(&server.url(), "t", "JOBS")
        .await
        .unwrap_err();
    assert!(matches!(err, BrokerError::ServerTooOld { .. }), "{err}");
    assert!(err.to_string().contains("2.14 or newer"), "{err}");
}
