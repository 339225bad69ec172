//! Wiring shared by the commands: broker, database, auth and tuning from the CLI.

use anyhow::Context;
use jobstream_api::auth::AuthConfig;
use jobstream_core::broker::{Broker, StreamSettings};
use jobstream_core::subject::QueueName;
use jobstream_projector::ProjectorConfig;
use jobstream_worker::{Backoff, WorkerConfig};
use migration::MigratorTrait;
use sea_orm::DatabaseConnection;
use secrecy::SecretString;

use crate::cli::{AuthArgs, NatsArgs, ProjectorTuning, WorkerTuning};

/// Stream settings from the command line.
pub fn stream_settings(nats: &NatsArgs) -> StreamSettings {
    StreamSettings {
        name: nats.stream.clone(),
        max_age: nats.event_retention,
        replicas: nats.stream_replicas,
        ..StreamSettings::default()
    }
}

/// Connects to NATS and creates or updates the stream.
pub async fn connect_broker(
    url: &str,
    nats: &NatsArgs,
    client_name: &str,
) -> anyhow::Result<Broker> {
    let broker = Broker::connect(url, client_name, &nats.stream).await?;
    broker.ensure_stream(&stream_settings(nats)).await?;
    Ok(broker)
}

/// Opens the database and applies pending migrations.
pub async fn connect_db_migrated(url: &str) -> anyhow::Result<DatabaseConnection> {
    if let Some(path) = url
        .strip_prefix("sqlite://")
        .map(|p| p.split('?').next().unwrap_or(p))
        && let Some(dir) = std::path::Path::new(path).parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let db = jobstream_core::store::connect(url)
        .await
        .with_context(|| format!("connecting to {}", redact(url)))?;
    migration::Migrator::up(&db, None)
        .await
        .context("applying migrations")?;
    Ok(db)
}

/// A database URL with its password hidden, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Token settings: the secret from `JWT_SECRET`, else from the secret file.
pub fn auth_config(auth: &AuthArgs) -> anyhow::Result<AuthConfig> {
    let secret = match &auth.jwt_secret {
        Some(s) => s.clone(),
        None => {
            let text = std::fs::read_to_string(&auth.jwt_secret_file).with_context(|| {
                format!(
                    "no JWT secret: set JWT_SECRET, or JWT_SECRET_FILE (cannot read {}; `jobstream dev` creates it)",
                    auth.jwt_secret_file.display()
                )
            })?;
            SecretString::from(text.trim().to_owned())
        }
    };
    Ok(AuthConfig {
        hs256_secret: secret,
        issuer: auth.jwt_issuer.clone(),
        audience: auth.jwt_audience.clone(),
    })
}

/// Worker settings from the command line.
pub fn worker_config(t: &WorkerTuning) -> anyhow::Result<WorkerConfig> {
    let queues = t
        .queues
        .iter()
        .map(|q| QueueName::parse(q).map_err(|e| anyhow::anyhow!("queue {q:?}: {e}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    anyhow::ensure!(t.concurrency > 0, "worker concurrency must be at least 1");
    let queue_limits = t
        .queue_limits
        .iter()
        .map(|(q, n)| {
            QueueName::parse(q)
                .map(|q| (q, *n))
                .map_err(|e| anyhow::anyhow!("--queue-limit {q:?}: {e}"))
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(WorkerConfig {
        id: format!("{}-{}", hostname(), std::process::id()),
        queues,
        concurrency: t.concurrency,
        ack_wait: t.ack_wait,
        queue_max_in_flight: t.queue_max_in_flight,
        backoff: Backoff {
            base: t.backoff_base,
            max: t.backoff_max,
        },
        shutdown_grace: t.shutdown_grace,
        queue_limits,
        cancel_grace: t.cancel_grace,
    })
}

/// Projector settings from the command line.
pub fn projector_config(t: &ProjectorTuning) -> ProjectorConfig {
    ProjectorConfig {
        batch_size: t.batch_size.max(1),
        sweep_interval: t.sweep_interval,
        job_ttl: t.job_ttl,
        ..ProjectorConfig::default()
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "worker".into())
}
