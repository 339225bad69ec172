//! `jobstream dev`: the whole system in one process, the embedded default.
//!
//! Starts a nats-server child (unless `NATS_URL` is given) with the configuration
//! built into the binary (the repository's `nats.conf`, written into the data dir, so
//! it holds whatever folder `dev` is started from), SQLite in the data dir, and the projector, a worker and
//! the API. Prints ready-to-paste tokens. `--nats-cluster 3` starts three children as one
//! cluster on loopback instead (same configuration), and the stream gets three replicas.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use jobstream_api::{App, auth::Verifier};
use jobstream_core::nats_cluster::{ClusterOptions, LocalNats, NatsCluster};
use jobstream_core::nats_server::{self, NatsServerProcess, ServerOptions};
use jobstream_projector::{ProjectionGauges, Projector};
use jobstream_worker::Worker;
use tokio::task::JoinSet;

use crate::cli::{AuthArgs, DevArgs, NatsArgs};
use crate::system::{self, ApiParts};

/// Runs everything until Ctrl-C / SIGTERM.
pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    let data = &args.data.data_dir;
    std::fs::create_dir_all(data)
        .with_context(|| format!("creating data dir {}", data.display()))?;
    let secret_file = data.join("jwt-secret");
    ensure_secret(&secret_file)?;
    let shutdown = jobstream_core::shutdown::token_on_signal();

    let mut child = None;
    // The stream settings are the command line's; only the server may be our own child.
    let mut nats = args.nats.clone();
    if nats.nats_url.is_none() {
        let local = match args.nats_cluster {
            Some(size) if size > 1 => {
                // Every node holds a copy of every event: that is what a cluster is for here.
                nats.stream_replicas = usize::from(size);
                LocalNats::Cluster(start_nats_cluster(&args, usize::from(size)).await?)
            }
            _ => LocalNats::Single(start_nats_server(&args).await?),
        };
        nats.nats_url = Some(local.urls());
        nats.nats_monitor_url = local.monitor_url();
        child = Some(local);
    }
    let result = run_system(&args, &nats, &secret_file, shutdown).await;
    if let Some(local) = child {
        local.stop(Duration::from_secs(5)).await;
    }
    result
}

/// How long a fresh local cluster may take to elect its JetStream meta leader.
const CLUSTER_READY_WITHIN: Duration = Duration::from_secs(30);

/// Starts `size` nats-server children as one cluster, each with the built-in
/// configuration (or `--nats-config`), and waits until every node is healthy.
async fn start_nats_cluster(args: &DevArgs, size: usize) -> anyhow::Result<NatsCluster> {
    let (bin, config) = server_bin_and_config(args)?;
    let base_dir = args.data.data_dir.join("cluster");
    let cluster = NatsCluster::start(&ClusterOptions {
        bin: bin.clone(),
        config: config.clone(),
        base_dir: base_dir.clone(),
        size,
    })
    .await
    .with_context(|| format!("starting a {size}-node cluster of {}", bin.display()))?;
    cluster
        .wait_healthy(CLUSTER_READY_WITHIN)
        .await
        .with_context(|| format!("node logs are in {}", base_dir.display()))?;
    for (i, node) in cluster.nodes().iter().enumerate() {
        tracing::info!(node = cluster.name(i), url = %node.url(), monitor = node.monitor_url().unwrap_or("-"), "nats-server cluster node started");
    }
    println!("nats cluster ({size} nodes, stream replicas {size}):");
    for (i, node) in cluster.nodes().iter().enumerate() {
        println!("  {}  {}", cluster.name(i), node.url());
    }
    Ok(cluster)
}

/// The nats-server binary and the configuration file every child runs: the built-in
/// one written into the data dir, or `--nats-config`.
fn server_bin_and_config(args: &DevArgs) -> anyhow::Result<(PathBuf, PathBuf)> {
    // Started outside the repository, the local install is still found above the binary.
    let bin = nats_server::locate_from_anywhere(args.nats_server_bin.as_deref())?;
    let config = match &args.nats_config {
        Some(path) => {
            anyhow::ensure!(
                path.is_file(),
                "--nats-config {} does not exist (leave it out to use the built-in nats.conf)",
                path.display()
            );
            path.clone()
        }
        None => nats_server::write_config(&args.data.data_dir, nats_server::Durability::Always)?,
    };
    Ok((bin, config))
}

/// Starts the nats-server child with the built-in configuration (or `--nats-config`).
async fn start_nats_server(args: &DevArgs) -> anyhow::Result<NatsServerProcess> {
    let data = &args.data.data_dir;
    let (bin, config) = server_bin_and_config(args)?;
    let server = NatsServerProcess::start(&ServerOptions {
        bin: bin.clone(),
        config: Some(config.clone()),
        store_dir: data.join("jetstream"),
        port: None,
        log_file: Some(data.join("nats-server.log")),
        cluster: None,
    })
    .await
    .with_context(|| format!("starting {}", bin.display()))?;
    tracing::info!(url = %server.url(), bin = %bin.display(), config = %config.display(), "nats-server started");
    Ok(server)
}

async fn run_system(
    args: &DevArgs,
    nats: &NatsArgs,
    secret_file: &Path,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    let db_url = args.db.url_in(&args.data.data_dir);
    let db = system::connect_db_migrated(&db_url).await?;
    let auth = system::auth_config(&AuthArgs::dev(secret_file.to_path_buf()))?;

    let projector_config = system::projector_config(&args.projector);
    let projector_broker = system::connect_broker(nats, "jobstream-dev-projector").await?;
    let gauges =
        ProjectionGauges::new(projector_broker.clone(), db.clone(), &projector_config.name);
    let projector = Projector::build(projector_broker, db.clone(), projector_config).await?;
    let worker_config = system::worker_config(&args.worker)?;
    let worker_broker = system::connect_broker(nats, "jobstream-dev-worker").await?;
    let files = system::open_files(&worker_broker, &args.files, nats).await?;
    let registry = system::registry(system::kinds_config(
        &args.kinds,
        files,
        &args.data.data_dir,
    ))?;
    let worker = Worker::build(worker_broker, registry, worker_config).await?;
    let parts = ApiParts {
        nats,
        files: &args.files,
        catalogue: &args.catalogue,
        readiness: &args.readiness,
        open_registration: args.open_registration,
        console_secret: args.console_secret.as_ref(),
    };
    let api_broker = system::connect_broker(nats, "jobstream-dev-api").await?;
    let mut state = system::api_state(api_broker, db.clone(), Verifier::new(&auth), parts).await?;
    // One process, one recorder: the API port serves every role's metrics.
    let metrics = state
        .metrics
        .clone()
        .with_source(std::sync::Arc::new(gauges));
    state.edit().metrics = metrics;
    system::serve_metrics(&args.metrics, state.metrics.clone(), &shutdown).await?;
    jobstream_core::metrics::worker_slots(args.worker.concurrency);
    let addr = args.listen.addr();
    let app = App::build(addr, state)
        .await
        .with_context(|| format!("cannot listen on {addr} (use --port)"))?;

    let admin =
        jobstream_api::auth::mint_hs256(&auth, "admin", true, Duration::from_secs(30 * 86_400))?;
    let user =
        jobstream_api::auth::mint_hs256(&auth, "alice", false, Duration::from_secs(30 * 86_400))?;
    let port = app.port();
    let host = args.listen.host;
    println!(
        "\njobstream dev is running\n  api        http://{host}:{port}  (docs: /openapi.json)\n  nats       {}\n  database   {}\n\n  export ADMIN_TOKEN={admin}\n  export TOKEN={user}\n\n  curl -s -X POST http://{host}:{port}/v1/jobs -H \"Authorization: Bearer $TOKEN\" \\\n       -H 'Content-Type: application/json' -d '{{\"kind\":\"echo\",\"payload\":{{\"hello\":\"world\"}}}}'\n\nPress Ctrl-C to stop.\n",
        nats.url(),
        system::redact(&db_url)
    );

    // The worker's grace period bounds the whole shutdown, plus a margin for the rest.
    let stop_within = args.worker.shutdown_grace + STOP_MARGIN;
    jobstream_core::shutdown::exit_at_the_latest(
        &shutdown,
        stop_within + STOP_MARGIN,
        "jobstream dev",
    );
    let mut parts: JoinSet<(&'static str, anyhow::Result<()>)> = JoinSet::new();
    jobstream_projector::Conductor::spawn_beside(&projector, db.clone(), shutdown.clone());
    let s = shutdown.clone();
    parts.spawn(async move { ("projector", projector.run(s).await.map_err(Into::into)) });
    let s = shutdown.clone();
    parts.spawn(async move { ("worker", worker.run(s).await.map_err(Into::into)) });
    let s = shutdown.clone();
    parts.spawn(async move { ("api", app.run_until_stopped(s).await.map_err(Into::into)) });
    supervise(parts, shutdown, stop_within).await
}

/// Margin for the parts other than the worker to stop after its grace period.
const STOP_MARGIN: Duration = Duration::from_secs(3);

/// Runs the parts until one ends, for whatever reason: then stops them all (a dead
/// worker or projector must not go unnoticed while the API keeps answering) and
/// waits for them at most `stop_within`. Each exit is logged with its part's name;
/// the first failure, or a part that ended on its own, is the result.
async fn supervise(
    mut parts: JoinSet<(&'static str, anyhow::Result<()>)>,
    shutdown: tokio_util::sync::CancellationToken,
    stop_within: Duration,
) -> anyhow::Result<()> {
    let mut result = Ok(());
    let mut names: Vec<&'static str> = vec!["projector", "worker", "api"];
    let mut ended = |joined: Result<(&'static str, anyhow::Result<()>), tokio::task::JoinError>,
                     stopping: bool,
                     names: &mut Vec<&'static str>| {
        let failure = match joined {
            Ok((name, outcome)) => {
                names.retain(|n| *n != name);
                match outcome {
                    Ok(()) if stopping => {
                        tracing::info!(part = name, "stopped");
                        None
                    }
                    Ok(()) => Some(anyhow::anyhow!("the {name} stopped on its own")),
                    Err(e) => Some(e.context(format!("the {name} failed"))),
                }
            }
            Err(e) => Some(anyhow::anyhow!("a part of jobstream dev panicked: {e}")),
        };
        if let Some(e) = failure {
            tracing::error!(error = format!("{e:#}"), "stopping everything");
            if result.is_ok() {
                result = Err(e);
            }
        }
    };
    if let Some(first) = parts.join_next().await {
        ended(first, shutdown.is_cancelled(), &mut names);
    }
    shutdown.cancel();
    let drained = tokio::time::timeout(stop_within, async {
        while let Some(next) = parts.join_next().await {
            ended(next, true, &mut names);
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(parts = ?names, within_ms = stop_within.as_millis() as u64, "parts still running at the end of the shutdown; abandoning them");
        parts.abort_all();
    }
    result
}

/// Creates the development HS256 secret once (readable by the owner only).
fn ensure_secret(path: &Path) -> anyhow::Result<()> {
    if path.is_file() {
        return Ok(());
    }
    let secret = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    std::fs::write(path, &secret).with_context(|| format!("writing {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}
