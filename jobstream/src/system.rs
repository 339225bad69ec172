//! Wiring shared by the commands: broker, database, auth and tuning from the CLI.

use std::sync::Arc;

use anyhow::Context;
use jobstream_api::auth::{AuthConfig, KeySet, PinnedKey, Verifier, VerifyPolicy};
use jobstream_api::live::HubConfig;
use jobstream_api::routes::metrics::MetricsServer;
use jobstream_api::{ApiSettings, AppState};
use jobstream_core::broker::{Broker, StreamSettings};
use jobstream_core::files::{FileSettings, FileStore};
use jobstream_core::kinds::Catalogue;
use jobstream_core::metrics::{Exporter, NatsConnected};
use jobstream_core::subject::QueueName;
use jobstream_projector::ProjectorConfig;
use jobstream_worker::email::MailConfig;
use jobstream_worker::thumbnail::ImageLimits;
use jobstream_worker::webhook::WebhookConfig;
use jobstream_worker::{Backoff, KindsConfig, Registry, WorkerConfig};
use migration::MigratorTrait;
use sea_orm::DatabaseConnection;
use secrecy::SecretString;

use crate::cli::{
    AuthArgs, CatalogueArgs, FilesArgs, KindsArgs, MetricsArgs, NatsArgs, ProjectorTuning,
    ReadinessArgs, WorkerTuning,
};

/// Stream settings from the command line.
pub fn stream_settings(nats: &NatsArgs) -> StreamSettings {
    StreamSettings {
        name: nats.stream.clone(),
        max_age: nats.event_retention,
        replicas: nats.stream_replicas,
        ..StreamSettings::default()
    }
}

/// Connects to NATS, checks that the server fsyncs every write (warns, or refuses with
/// `--require-fsync`), and creates or updates the stream.
pub async fn connect_broker(nats: &NatsArgs, client_name: &str) -> anyhow::Result<Broker> {
    let url = nats.url();
    let broker = Broker::connect(&url, client_name, &nats.stream).await?;
    let monitor = (nats.nats_monitor_url.clone())
        .or_else(|| jobstream_core::nats_server::default_monitor_url(&url))
        .unwrap_or_default();
    jobstream_core::nats_server::check_fsync(&monitor, nats.require_fsync).await?;
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

/// Where `jobstream dev` keeps the HS256 secret, and where it is looked for by default.
pub const DEFAULT_SECRET_FILE: &str = "data/jwt-secret";

/// Token settings: the secret from `JWT_SECRET`, else from the secret file.
pub fn auth_config(auth: &AuthArgs) -> anyhow::Result<AuthConfig> {
    let secret = match &auth.jwt_secret {
        Some(s) => s.clone(),
        None => {
            let file = auth
                .jwt_secret_file
                .clone()
                .unwrap_or_else(|| DEFAULT_SECRET_FILE.into());
            let text = std::fs::read_to_string(&file).with_context(|| {
                format!(
                    "no JWT secret: set JWT_SECRET, or JWT_SECRET_FILE (cannot read {}; `jobstream dev` creates it)",
                    file.display()
                )
            })?;
            let text = text.trim();
            anyhow::ensure!(
                !text.is_empty(),
                "the JWT secret file {} is empty",
                file.display()
            );
            SecretString::from(text.to_owned())
        }
    };
    Ok(AuthConfig {
        hs256_secret: secret,
        issuer: auth.jwt_issuer.clone(),
        audience: auth.jwt_audience.clone(),
    })
}

/// The token verifier: the issuer's public keys (PEM and/or JWKS) when configured, plus
/// HS256 only when a secret is explicitly given; otherwise the development HS256 secret.
/// An unreadable or invalid key file is an error here, at start-up.
pub fn verifier(auth: &AuthArgs) -> anyhow::Result<Verifier> {
    let mut keys = KeySet::new();
    if let Some(pem) = &auth.jwt_public_key_file {
        keys.add_pem_file(pem, auth.jwt_public_key_kid.clone())
            .context("JWT_PUBLIC_KEY_FILE")?;
    }
    if let Some(jwks) = &auth.jwt_jwks_file {
        keys.add_jwks_file(jwks).context("JWT_JWKS_FILE")?;
    }
    let public = !keys.is_empty();
    if !public || auth.jwt_secret.is_some() || auth.jwt_secret_file.is_some() {
        let dev = auth_config(auth)?;
        keys.add(PinnedKey::hs256(&dev.hs256_secret))?;
        if public {
            tracing::warn!(
                "HS256 development tokens are accepted besides the public keys (a shared secret is configured)"
            );
        }
    }
    let policy = VerifyPolicy {
        issuer: auth.jwt_issuer.clone(),
        audience: auth.jwt_audience.clone(),
        role_claim: auth.jwt_role_claim.clone(),
        leeway_secs: auth.jwt_leeway.as_secs(),
    };
    for k in keys.keys() {
        tracing::info!(kid = k.kid().unwrap_or("-"), alg = ?k.algorithm(), "token verification key");
    }
    Ok(Verifier::with_keys(keys, policy)?)
}

/// Installs the recorder unless `--metrics off`, and serves `GET /metrics` on
/// `--metrics-addr`, when given, until `shutdown`; a port that cannot be bound fails start-up.
pub async fn serve_metrics(
    args: &MetricsArgs,
    exporter: Exporter,
    shutdown: &tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    if args.enabled {
        jobstream_core::metrics::install();
    }
    let Some(addr) = args.metrics_addr else {
        return Ok(());
    };
    let server = MetricsServer::bind(addr, exporter)
        .await
        .with_context(|| format!("cannot listen on {addr} (--metrics-addr)"))?;
    let stop = shutdown.clone();
    tokio::spawn(async move {
        if let Err(e) = server.run_until_stopped(stop).await {
            tracing::error!(error = %e, "the metrics endpoint failed");
        }
    });
    Ok(())
}

/// The exporter of a process on `broker` (its `nats_connected`).
pub fn exporter(broker: &Broker) -> Exporter {
    Exporter::new().with_source(Arc::new(NatsConnected(broker.client().clone())))
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
        heartbeat: t.heartbeat,
    })
}

/// Projector settings from the command line.
pub fn projector_config(t: &ProjectorTuning) -> ProjectorConfig {
    ProjectorConfig {
        batch_size: t.batch_size.max(1),
        sweep_interval: t.sweep_interval,
        job_ttl: t.job_ttl,
        linger: t.linger,
        ..ProjectorConfig::default()
    }
}

/// Opens (or creates) the files bucket.
pub async fn open_files(
    broker: &Broker,
    files: &FilesArgs,
    nats: &NatsArgs,
) -> anyhow::Result<FileStore> {
    Ok(FileStore::open(broker.jetstream(), &file_settings(files, nats)).await?)
}

/// Settings of the files bucket.
fn file_settings(files: &FilesArgs, nats: &NatsArgs) -> FileSettings {
    FileSettings {
        bucket: files.files_bucket.clone(),
        max_bucket_bytes: files.files_bucket_max_bytes,
        replicas: nats.stream_replicas,
    }
}

/// The state of an API instance (`api`, `dev`) from its settings.
pub async fn api_state(
    broker: Broker,
    db: DatabaseConnection,
    verifier: Verifier,
    parts: ApiParts<'_>,
) -> anyhow::Result<AppState> {
    let settings = ApiSettings {
        verifier: Arc::new(verifier),
        open_registration: parts.open_registration,
        kinds: catalogue(parts.catalogue)?,
        files: file_settings(parts.files, parts.nats),
        max_upload_bytes: parts.files.max_upload_size,
        readiness: parts.readiness.readiness(),
        hub: HubConfig::default(),
        admission: parts.readiness.admission(),
        console_secret: parts.console_secret.cloned(),
    };
    AppState::build(broker, db, settings).await
}

/// The argument groups an API instance is built from.
pub struct ApiParts<'a> {
    /// NATS and the stream.
    pub nats: &'a NatsArgs,
    /// The files bucket.
    pub files: &'a FilesArgs,
    /// Custom kinds.
    pub catalogue: &'a CatalogueArgs,
    /// `/readyz` bounds.
    pub readiness: &'a ReadinessArgs,
    /// `--open-registration`.
    pub open_registration: bool,
    /// `--console-secret`.
    pub console_secret: Option<&'a secrecy::SecretString>,
}

/// The catalogue of kinds: the built-in ones plus the kinds file, when given.
pub fn catalogue(args: &CatalogueArgs) -> anyhow::Result<Catalogue> {
    match &args.kinds_file {
        Some(path) => {
            let c = Catalogue::from_file(path)?;
            tracing::info!(path = %path.display(), kinds = ?c.names(), "custom kinds loaded");
            Ok(c)
        }
        None => Ok(Catalogue::builtin()),
    }
}

/// Settings of the e-mail, thumbnail and webhook kinds; `data_dir` holds the default mailbox.
pub fn kinds_config(args: &KindsArgs, files: FileStore, data_dir: &std::path::Path) -> KindsConfig {
    KindsConfig {
        mail: MailConfig {
            smtp_url: args.smtp_url.clone(),
            mailbox_dir: args
                .mailbox_dir
                .clone()
                .unwrap_or_else(|| data_dir.join("mailbox")),
            from: args.mail_from.clone(),
            smtp_timeout: args.smtp_timeout,
            ..MailConfig::default()
        },
        files,
        images: ImageLimits {
            max_file_bytes: args.image_max_file_size,
            max_side: args.image_max_side,
            max_alloc: args.image_max_alloc,
        },
        webhook: WebhookConfig {
            allow: args.webhook_allow.clone(),
            max_response_bytes: usize::try_from(args.webhook_max_response).unwrap_or(usize::MAX),
            ..WebhookConfig::default()
        },
    }
}

/// The worker's handlers: every built-in kind, configured.
pub fn registry(config: KindsConfig) -> anyhow::Result<Registry> {
    if config.mail.smtp_url.is_none() {
        tracing::info!(mailbox = %config.mail.mailbox_dir.display(), "no SMTP_URL: e-mails go to the mailbox folder");
    }
    Ok(Registry::with_all_builtins(config)?)
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "worker".into())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn keys_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testkit/fixtures/keys")
    }

    fn args() -> AuthArgs {
        AuthArgs::dev(PathBuf::from("/nonexistent/jwt-secret"))
    }

    #[test]
    fn public_keys_alone_turn_hs256_off() {
        let v = verifier(&AuthArgs {
            jwt_secret_file: None,
            jwt_jwks_file: Some(keys_dir().join("jwks.json")),
            jwt_public_key_file: Some(keys_dir().join("rsa-public.pem")),
            jwt_public_key_kid: Some("pem-rsa".into()),
            ..args()
        })
        .expect("verifier");
        let algs: Vec<_> = v.keys().keys().iter().map(|k| k.algorithm()).collect();
        assert_eq!(v.keys().len(), 4);
        assert!(
            !algs.contains(&jobstream_api::auth::Algorithm::HS256),
            "{algs:?}"
        );
    }

    #[test]
    fn unreadable_or_invalid_key_files_fail_start_up_with_one_clear_line() {
        let missing = verifier(&AuthArgs {
            jwt_public_key_file: Some("/nonexistent/issuer.pem".into()),
            ..args()
        })
        .expect_err("refused");
        let line = format!("{missing:#}");
        assert!(
            line.contains("JWT_PUBLIC_KEY_FILE") && line.contains("/nonexistent/issuer.pem"),
            "{line}"
        );
        assert!(!line.contains('\n'));
        let private = verifier(&AuthArgs {
            jwt_public_key_file: Some(keys_dir().join("rsa-private.pem")),
            ..args()
        })
        .expect_err("refused");
        assert!(format!("{private:#}").contains("private key"));
        let not_jwks = verifier(&AuthArgs {
            jwt_jwks_file: Some(keys_dir().join("rsa-public.pem")),
            ..args()
        })
        .expect_err("refused");
        assert!(format!("{not_jwks:#}").contains("JWT_JWKS_FILE"));
        // No key at all (no public key, no readable secret).
        assert!(verifier(&args()).is_err());
    }
}
