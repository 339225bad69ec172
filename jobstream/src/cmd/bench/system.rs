//! Starting the measured system: a nats-server child with the built-in configuration,
//! then jobstream's api, worker and projector as separate child processes of this
//! same binary, on a temporary data dir. Every child is killed when this is dropped
//! (an error, Ctrl-C), and stopped with SIGTERM by [`System::stop`] otherwise.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use jobstream_core::nats_cluster::{ClusterOptions, LocalNats, NatsCluster};
use jobstream_core::nats_server::{self, Durability, NatsServerProcess, ServerOptions};
use tokio::process::{Child, Command};

/// A temporary data dir, deleted on drop unless kept.
#[derive(Debug)]
pub(crate) struct DataDir {
    path: PathBuf,
    keep: bool,
}

impl DataDir {
    /// Creates a fresh directory under the system's temporary dir.
    pub(crate) fn create(keep: bool) -> anyhow::Result<Self> {
        let path =
            std::env::temp_dir().join(format!("jobstream-bench-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(DataDir { path, keep })
    }

    /// The directory.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Keep it after all (to read the logs of a failed run).
    pub(crate) fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("bench data kept in {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Starts nats-server with the built-in configuration at `durability`: one server, or
/// `cluster_size` nodes as one cluster on loopback.
pub(crate) async fn start_nats(
    dir: &Path,
    durability: Durability,
    bin: Option<&str>,
    cluster_size: usize,
) -> anyhow::Result<LocalNats> {
    let bin = nats_server::locate_from_anywhere(bin)?;
    let config = nats_server::write_config(dir, durability)?;
    let server = if cluster_size > 1 {
        let cluster = NatsCluster::start(&ClusterOptions {
            bin: bin.clone(),
            config,
            base_dir: dir.join("cluster"),
            size: cluster_size,
        })
        .await
        .with_context(|| format!("starting a cluster of {}", bin.display()))?;
        cluster.wait_healthy(Duration::from_secs(60)).await?;
        LocalNats::Cluster(cluster)
    } else {
        LocalNats::Single(
            NatsServerProcess::start(&ServerOptions {
                bin: bin.clone(),
                config: Some(config),
                store_dir: dir.join("jetstream"),
                port: None,
                log_file: Some(dir.join("nats-server.log")),
                cluster: None,
            })
            .await
            .with_context(|| format!("starting {}", bin.display()))?,
        )
    };
    // Both runs must get what was asked for: check it the way api and worker do.
    let policy = match server.monitor_url() {
        Some(m) => Some(nats_server::sync_policy(&m).await?),
        None => None,
    };
    let expected = match durability {
        Durability::Always => Some(nats_server::SyncPolicy::Always),
        Durability::Default => None,
    };
    if let (Some(found), Some(expected)) = (policy, expected) {
        anyhow::ensure!(
            found == expected,
            "nats-server runs with {found}, expected {expected}"
        );
    }
    Ok(server)
}

/// One jobstream child process.
#[derive(Debug)]
pub(crate) struct Proc {
    /// `api`, `worker` or `projector`.
    pub(crate) role: &'static str,
    child: Child,
    log: PathBuf,
}

impl Proc {
    /// Its process id while it runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    fn spawn(role: &'static str, dir: &Path, args: &[String]) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("locating this binary")?;
        let log = dir.join(format!("{role}.log"));
        let stderr = std::fs::File::create(&log)?;
        let child = Command::new(&exe)
            .arg(role)
            .args(args)
            // Relative defaults (the worker's `data/mailbox`) land in the temporary dir.
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {} {role}", exe.display()))?;
        Ok(Proc { role, child, log })
    }

    /// The last lines of its log, for error messages.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    async fn stop(&mut self, grace: Duration) {
        if let Some(pid) = self.child.id() {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
            if tokio::time::timeout(grace, self.child.wait()).await.is_ok() {
                return;
            }
        }
        let _ = self.child.kill().await;
    }
}

/// The started jobstream processes.
#[derive(Debug)]
pub(crate) struct System {
    /// api, worker, projector.
    pub(crate) procs: Vec<Proc>,
    /// Base URL of the API.
    pub(crate) url: String,
}

/// Where the system's pieces are.
pub(crate) struct Wiring<'a> {
    pub(crate) dir: &'a Path,
    pub(crate) nats_url: &'a str,
    pub(crate) monitor_url: Option<&'a str>,
    /// Replicas of the stream (one per node of a local cluster).
    pub(crate) stream_replicas: usize,
    pub(crate) database_url: &'a str,
    pub(crate) secret_file: &'a Path,
    /// Whether the processes record metrics (`--metrics on|off`).
    pub(crate) metrics: bool,
    /// More arguments for the API (admission control).
    pub(crate) api_args: Vec<String>,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl System {
    /// Starts api, worker and projector, and waits until `/readyz` says 200.
    pub(crate) async fn start(w: &Wiring<'_>, deadline: Duration) -> anyhow::Result<Self> {
        let mut nats = vec![
            "--nats-url".to_owned(),
            w.nats_url.to_owned(),
            "--stream-replicas".to_owned(),
            w.stream_replicas.to_string(),
        ];
        if !w.metrics {
            nats.extend(["--metrics".to_owned(), "off".to_owned()]);
        }
        if let Some(m) = w.monitor_url {
            nats.extend(["--nats-monitor-url".to_owned(), m.to_owned()]);
        }
        let db = ["--database-url".to_owned(), w.database_url.to_owned()];
        let port = free_port()?;
        let mut api = nats.clone();
        api.extend(db.iter().cloned());
        api.extend([
            "--host".into(),
            "127.0.0.1".into(),
            "--port".into(),
            port.to_string(),
            "--jwt-secret-file".into(),
            w.secret_file.display().to_string(),
        ]);
        api.extend(w.api_args.iter().cloned());
        let mut projector = nats.clone();
        projector.extend(db.iter().cloned());
        let procs = vec![
            Proc::spawn("projector", w.dir, &projector)?,
            Proc::spawn("worker", w.dir, &nats)?,
            Proc::spawn("api", w.dir, &api)?,
        ];
        let mut system = System {
            procs,
            url: format!("http://127.0.0.1:{port}"),
        };
        system.wait_ready(deadline).await?;
        Ok(system)
    }

    async fn wait_ready(&mut self, deadline: Duration) -> anyhow::Result<()> {
        let http = reqwest::Client::new();
        let until = Instant::now() + deadline;
        loop {
            for p in &mut self.procs {
                if let Ok(Some(status)) = p.child.try_wait() {
                    anyhow::bail!(
                        "jobstream {} exited at start-up ({status}):\n{}",
                        p.role,
                        p.log_tail()
                    );
                }
            }
            if let Ok(r) = http.get(format!("{}/readyz", self.url)).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < until,
                "the system was not ready within {deadline:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Each process as `(role, pid)`.
    pub(crate) fn pids(&self) -> Vec<(String, u32)> {
        self.procs
            .iter()
            .filter_map(|p| Some((p.role.to_owned(), p.pid()?)))
            .collect()
    }

    /// Stops every process cleanly (SIGTERM, then SIGKILL after the grace period).
    pub(crate) async fn stop(mut self) {
        // The API first, so nothing new arrives; the projector last, so it folds what is left.
        for p in self.procs.iter_mut().rev() {
            p.stop(Duration::from_secs(10)).await;
        }
    }
}

/// Writes a fresh HS256 development secret (owner-readable only).
pub(crate) fn write_secret(path: &Path) -> anyhow::Result<()> {
    let secret = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    std::fs::write(path, secret).with_context(|| format!("writing {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}
