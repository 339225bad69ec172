//! Starting a local nats-server child process (for `jobstream dev` and tests).
//!
//! The binary is found through `$NATS_SERVER_BIN`, then the project-local install
//! (`.tools/nats-server/bin/nats-server`, made by `make nats-server`), then `PATH`.
//! The server picks its own free port (`-p -1`) and reports it in a ports file,
//! so an existing server on 4222 is never disturbed. Its monitoring endpoint
//! (`/varz`) also gets a free port, reported the same way.
//!
//! The configuration is the repository's `nats.conf`, compiled into the binary
//! ([`EMBEDDED_CONFIG`]): `jobstream dev` writes it into its data dir, so the
//! durability it promises (`sync_interval: always`) does not depend on the folder
//! it is started from. [`check_fsync`] verifies the same promise on a server
//! jobstream did not start.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

/// Where `make nats-server` installs the pinned server, relative to the repository root.
pub const LOCAL_INSTALL: &str = ".tools/nats-server/bin/nats-server";

/// The repository's `nats.conf`, the one source of the server configuration:
/// `sync_interval: always`, the atomic batch limit and `max_payload`.
pub const EMBEDDED_CONFIG: &str = include_str!("../../nats.conf");

/// The line of [`EMBEDDED_CONFIG`] that makes every write fsynced before its PubAck.
const SYNC_ALWAYS_LINE: &str = "sync_interval: always";

/// When the server's JetStream flushes writes to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `sync_interval: always`: every write is fsynced before it is acknowledged (as shipped).
    #[default]
    Always,
    /// The server's default: writes are fsynced every couple of minutes (faster, loses
    /// the last writes on power loss; a `kill -9` of the server alone loses nothing).
    Default,
}

impl Durability {
    /// The name used on the command line (`always`, `default`).
    pub fn as_str(self) -> &'static str {
        match self {
            Durability::Always => "always",
            Durability::Default => "default",
        }
    }
}

/// The embedded configuration with the given durability: [`Durability::Default`]
/// leaves out `sync_interval: always` and nothing else.
pub fn config_text(durability: Durability) -> String {
    match durability {
        Durability::Always => EMBEDDED_CONFIG.to_owned(),
        Durability::Default => EMBEDDED_CONFIG
            .lines()
            .map(|l| {
                if l.trim() == SYNC_ALWAYS_LINE {
                    "  # sync_interval: server default (jobstream bench --durability default)"
                } else {
                    l
                }
            })
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

/// Writes the embedded configuration (with `durability`) as `dir/nats.conf` and returns its path.
pub fn write_config(dir: &Path, durability: Durability) -> Result<PathBuf, NatsServerError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| NatsServerError::Start(format!("config dir {}: {e}", dir.display())))?;
    let path = dir.join("nats.conf");
    std::fs::write(&path, config_text(durability))
        .map_err(|e| NatsServerError::Start(format!("writing {}: {e}", path.display())))?;
    Ok(path)
}

/// Errors starting nats-server.
#[derive(Debug, thiserror::Error)]
pub enum NatsServerError {
    /// No binary found anywhere.
    #[error(
        "nats-server not found: set NATS_SERVER_BIN, or run `make nats-server` (installs the pinned version into .tools/), or put nats-server >= 2.14 on PATH"
    )]
    NotFound,
    /// The process could not be started or did not report its port.
    #[error("nats-server {0}")]
    Start(String),
    /// The monitoring endpoint could not be read.
    #[error("cannot read the nats-server monitoring endpoint {url}: {reason}")]
    Monitor {
        /// The endpoint tried.
        url: String,
        /// Why.
        reason: String,
    },
    /// `--require-fsync` and the server does not fsync every write.
    #[error(
        "nats-server at {url} does not fsync every write before acknowledging it ({found}); an acknowledged job could be lost on power loss. Set `jetstream {{ sync_interval: always }}` (as in nats.conf), or start without --require-fsync"
    )]
    NotDurable {
        /// The monitoring endpoint asked.
        url: String,
        /// What it reported.
        found: String,
    },
    /// `--require-fsync` and the server's sync setting could not be read.
    #[error(
        "--require-fsync: cannot verify that nats-server fsyncs every write: {0} (give NATS_MONITOR_URL, the server's monitoring endpoint, e.g. http://nats:8222)"
    )]
    CannotVerify(Box<NatsServerError>),
}

/// Finds the nats-server binary: `$NATS_SERVER_BIN`, the local install under `root`, then `PATH`.
pub fn locate(env_bin: Option<&str>, root: &Path) -> Result<PathBuf, NatsServerError> {
    locate_in(env_bin, &[root])
}

/// Finds the nats-server binary: `$NATS_SERVER_BIN`, the local install under any of
/// `roots` or their ancestors (in order), then `PATH`. The pinned local install wins
/// over whatever (possibly older) server `PATH` holds.
pub fn locate_in(env_bin: Option<&str>, roots: &[&Path]) -> Result<PathBuf, NatsServerError> {
    if let Some(bin) = env_bin.filter(|b| !b.is_empty()) {
        return Ok(PathBuf::from(bin));
    }
    for root in roots {
        // Tests run from a crate directory, binaries from target/: look in the ancestors too.
        if let Some(local) = root
            .ancestors()
            .map(|d| d.join(LOCAL_INSTALL))
            .find(|p| p.is_file())
        {
            return Ok(local);
        }
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join("nats-server"))
                .find(|p| p.is_file())
        })
        .ok_or(NatsServerError::NotFound)
}

/// Finds the nats-server binary for a command started anywhere: `$NATS_SERVER_BIN`,
/// the local install above the working directory, then above this executable (a
/// `target/` inside the repository), then `PATH`.
pub fn locate_from_anywhere(env_bin: Option<&str>) -> Result<PathBuf, NatsServerError> {
    let cwd = std::env::current_dir().ok();
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf));
    let roots: Vec<&Path> = [cwd.as_deref(), exe_dir.as_deref()]
        .into_iter()
        .flatten()
        .collect();
    locate_in(env_bin, &roots)
}

/// How to start the server.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// The binary.
    pub bin: PathBuf,
    /// Config file (`nats.conf`), if any.
    pub config: Option<PathBuf>,
    /// JetStream store directory.
    pub store_dir: PathBuf,
    /// Port; `None` lets the server pick a free one.
    pub port: Option<u16>,
    /// Where the server's log goes (`None`: discarded).
    pub log_file: Option<PathBuf>,
    /// This server's place in a local cluster (`None`: a single server).
    pub cluster: Option<crate::nats_cluster::ClusterNode>,
}

/// A running nats-server child; killed when dropped.
#[derive(Debug)]
pub struct NatsServerProcess {
    child: Child,
    port: u16,
    monitor_url: Option<String>,
}

impl NatsServerProcess {
    /// Starts the server and waits until it reports its client port.
    pub async fn start(opts: &ServerOptions) -> Result<Self, NatsServerError> {
        std::fs::create_dir_all(&opts.store_dir)
            .map_err(|e| NatsServerError::Start(format!("store dir: {e}")))?;
        let ports_dir = opts.store_dir.join("ports");
        std::fs::create_dir_all(&ports_dir)
            .map_err(|e| NatsServerError::Start(format!("ports dir: {e}")))?;
        let mut cmd = Command::new(&opts.bin);
        if let Some(c) = &opts.config {
            cmd.arg("-c").arg(c);
        }
        let port = opts.port.map_or_else(|| "-1".to_owned(), |p| p.to_string());
        // `-m -1`: monitoring on a free port, so the sync setting can be checked (`/varz`).
        cmd.args(["-a", "127.0.0.1", "-p", &port, "-m", "-1", "-js", "-sd"])
            .arg(&opts.store_dir)
            .arg("--ports_file_dir")
            .arg(&ports_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true);
        if let Some(f) = &opts.log_file {
            cmd.arg("-l").arg(f);
        }
        if let Some(node) = &opts.cluster {
            cmd.args(node.args());
        }
        // Start-up errors (a bad config) go to stderr before any log file is opened.
        let stderr_path = opts.store_dir.join("nats-server.stderr");
        let stderr = std::fs::File::create(&stderr_path)
            .map_err(|e| NatsServerError::Start(format!("stderr file: {e}")))?;
        cmd.stderr(stderr);
        let child = cmd.spawn().map_err(|e| {
            NatsServerError::Start(format!("cannot run {}: {e}", opts.bin.display()))
        })?;
        let pid = child.id().unwrap_or(0);
        let ports_file = ports_dir.join(format!(
            "{}_{pid}.ports",
            opts.bin
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("nats-server")
        ));
        let mut server = NatsServerProcess {
            child,
            port: 0,
            monitor_url: None,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(text) = std::fs::read_to_string(&ports_file)
                && let Some(port) = client_port(&text)
            {
                server.port = port;
                server.monitor_url = monitor_url(&text);
                return Ok(server);
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                let said = std::fs::read_to_string(&stderr_path).unwrap_or_default();
                return Err(NatsServerError::Start(format!(
                    "exited at start-up ({status}): {}",
                    said.trim()
                )));
            }
            if tokio::time::Instant::now() > deadline {
                return Err(NatsServerError::Start(
                    "did not report its port within 15 s".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The client URL.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The monitoring endpoint (`http://127.0.0.1:PORT`), when the server reported one.
    pub fn monitor_url(&self) -> Option<&str> {
        self.monitor_url.as_deref()
    }

    /// The operating system's process id (while it runs).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Kills the server at once (SIGKILL), like a crash.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// Asks the server to stop cleanly (SIGTERM), then kills it after `grace`.
    pub async fn stop(&mut self, grace: Duration) {
        self.signal_then_kill("-TERM", grace).await;
    }

    /// Puts the server in lame duck mode (SIGUSR2): it hands its JetStream leaderships
    /// over, stops accepting clients, closes its clients over `lame_duck_duration` and
    /// exits. Killed if it has not exited after `within`.
    pub async fn lame_duck(&mut self, within: Duration) {
        self.signal_then_kill("-USR2", within).await;
    }

    async fn signal_then_kill(&mut self, signal: &str, grace: Duration) {
        if let Some(pid) = self.child.id() {
            let _ = Command::new("kill")
                .arg(signal)
                .arg(pid.to_string())
                .status()
                .await;
            if tokio::time::timeout(grace, self.child.wait()).await.is_ok() {
                return;
            }
        }
        self.kill().await;
    }
}

/// Reads the client port out of a nats-server ports file (`{"nats":["nats://127.0.0.1:PORT"],…}`).
fn client_port(ports_json: &str) -> Option<u16> {
    let v: serde_json::Value = serde_json::from_str(ports_json).ok()?;
    let url = v
        .get("nats")
        .or_else(|| v.get("client"))?
        .get(0)?
        .as_str()?;
    url.rsplit(':').next()?.parse().ok()
}

/// Reads the monitoring URL out of a ports file (`{…,"monitoring":["http://127.0.0.1:PORT"]}`).
fn monitor_url(ports_json: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(ports_json).ok()?;
    Some(v.get("monitoring")?.get(0)?.as_str()?.to_owned())
}

/// How often the server's JetStream fsyncs, as its monitoring endpoint reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    /// Every write before its acknowledgement (`sync_interval: always`).
    Always,
    /// In the background, at this interval.
    Interval(Duration),
}

impl std::fmt::Display for SyncPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SyncPolicy::Always => f.write_str("sync_interval: always"),
            SyncPolicy::Interval(d) => write!(f, "sync_interval: {} s", d.as_secs_f64()),
        }
    }
}

/// Reads the sync policy out of a `/varz` document (`jetstream.config.sync_always`,
/// `jetstream.config.sync_interval` in nanoseconds; nats-server 2.14). `None` when the
/// server reports no JetStream configuration.
pub fn sync_policy_of_varz(varz: &serde_json::Value) -> Option<SyncPolicy> {
    let config = varz.get("jetstream")?.get("config")?;
    if config
        .get("sync_always")
        .and_then(serde_json::Value::as_bool)
        == Some(true)
    {
        return Some(SyncPolicy::Always);
    }
    let nanos = config
        .get("sync_interval")
        .and_then(serde_json::Value::as_u64)?;
    Some(SyncPolicy::Interval(Duration::from_nanos(nanos)))
}

/// The monitoring endpoint a server at `nats_url` most likely has: the same host, port
/// 8222 (the conventional `-m 8222`, as in docker-compose). The first URL of a list is used.
pub fn default_monitor_url(nats_url: &str) -> Option<String> {
    let first = nats_url.split(',').next()?.trim();
    let rest = first.split_once("://").map_or(first, |(_, r)| r);
    let host_port = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let host_port = host_port.split('/').next()?;
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        format!("[{}]", v6.split(']').next()?)
    } else {
        host_port.split(':').next()?.to_owned()
    };
    (!host.is_empty()).then(|| format!("http://{host}:8222"))
}

/// GETs `path` from a monitoring endpoint (`http://host:port`) and parses the JSON body.
/// Plain HTTP/1.0 by hand: the endpoint is local and tiny, and core needs no HTTP client.
pub async fn monitor_get(
    monitor_url: &str,
    path: &str,
) -> Result<serde_json::Value, NatsServerError> {
    let err = |reason: String| NatsServerError::Monitor {
        url: monitor_url.to_owned(),
        reason,
    };
    let authority = monitor_url
        .strip_prefix("http://")
        .ok_or_else(|| err("only http:// endpoints are supported".into()))?
        .trim_end_matches('/');
    let exchange = async {
        let mut tcp = tokio::net::TcpStream::connect(authority).await?;
        tcp.write_all(
            format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\nAccept: application/json\r\n\r\n")
                .as_bytes(),
        )
        .await?;
        let mut raw = Vec::new();
        tcp.read_to_end(&mut raw).await?;
        Ok::<_, std::io::Error>(raw)
    };
    let raw = tokio::time::timeout(Duration::from_secs(3), exchange)
        .await
        .map_err(|_| err("no answer within 3 s".into()))?
        .map_err(|e| err(e.to_string()))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| err("not an HTTP response".into()))?;
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(err(format!("answered {status:?}")));
    }
    serde_json::from_str(body).map_err(|e| err(format!("body is not JSON: {e}")))
}

/// Asks the monitoring endpoint how the server's JetStream syncs.
pub async fn sync_policy(monitor_url: &str) -> Result<SyncPolicy, NatsServerError> {
    let varz = monitor_get(monitor_url, "/varz").await?;
    sync_policy_of_varz(&varz).ok_or_else(|| NatsServerError::Monitor {
        url: monitor_url.to_owned(),
        reason: "/varz shows no JetStream configuration".into(),
    })
}

/// Checks at start-up that the server fsyncs every write before acknowledging it, the
/// promise behind every `202`. A server that does not (or whose monitoring endpoint
/// cannot be read) is logged as a loud warning, or refused with `require_fsync`.
pub async fn check_fsync(monitor_url: &str, require_fsync: bool) -> Result<(), NatsServerError> {
    match sync_policy(monitor_url).await {
        Ok(SyncPolicy::Always) => {
            tracing::info!(
                monitor = monitor_url,
                "nats-server fsyncs every write (sync_interval: always)"
            );
            Ok(())
        }
        Ok(found) if require_fsync => Err(NatsServerError::NotDurable {
            url: monitor_url.to_owned(),
            found: found.to_string(),
        }),
        Ok(found) => {
            tracing::warn!(
                monitor = monitor_url,
                %found,
                "NOT DURABLE: nats-server acknowledges writes before they are on disk; accepted jobs can be lost on power loss. Set `jetstream {{ sync_interval: always }}` (nats.conf) or pass --require-fsync to refuse such a server"
            );
            Ok(())
        }
        Err(e) if require_fsync => Err(NatsServerError::CannotVerify(Box::new(e))),
        Err(e) => {
            tracing::warn!(
                error = %e,
                "cannot verify that nats-server fsyncs every write (sync_interval: always); set NATS_MONITOR_URL to its monitoring endpoint, or --require-fsync to refuse an unverified server"
            );
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_config_is_nats_conf_and_durable() {
        assert!(EMBEDDED_CONFIG.contains(SYNC_ALWAYS_LINE));
        assert!(EMBEDDED_CONFIG.contains("max_msgs: 2001"));
        assert!(EMBEDDED_CONFIG.contains("max_payload: 8MB"));
        assert_eq!(config_text(Durability::Always), EMBEDDED_CONFIG);
        let relaxed = config_text(Durability::Default);
        assert!(!relaxed.contains(SYNC_ALWAYS_LINE));
        // Only the sync line differs.
        assert!(relaxed.contains("max_msgs: 2001") && relaxed.contains("max_payload: 8MB"));
        assert_eq!(relaxed.lines().count(), EMBEDDED_CONFIG.lines().count());
    }

    #[test]
    fn reads_the_sync_policy_out_of_varz() {
        let always = serde_json::json!({"jetstream": {"config": {"sync_interval": 120_000_000_000u64, "sync_always": true}}});
        assert_eq!(sync_policy_of_varz(&always), Some(SyncPolicy::Always));
        let default =
            serde_json::json!({"jetstream": {"config": {"sync_interval": 120_000_000_000u64}}});
        assert_eq!(
            sync_policy_of_varz(&default),
            Some(SyncPolicy::Interval(Duration::from_secs(120)))
        );
        assert_eq!(sync_policy_of_varz(&serde_json::json!({})), None);
    }

    #[test]
    fn guesses_the_monitoring_endpoint_from_the_client_url() {
        assert_eq!(
            default_monitor_url("nats://nats:4222").as_deref(),
            Some("http://nats:8222")
        );
        assert_eq!(
            default_monitor_url("tls://user:pw@10.0.0.1:4222,nats://b:4222").as_deref(),
            Some("http://10.0.0.1:8222")
        );
        assert_eq!(
            default_monitor_url("nats://[::1]:4222").as_deref(),
            Some("http://[::1]:8222")
        );
        assert_eq!(
            default_monitor_url("127.0.0.1").as_deref(),
            Some("http://127.0.0.1:8222")
        );
    }

    #[test]
    fn reads_the_monitoring_url() {
        assert_eq!(
            monitor_url(r#"{"nats":["nats://127.0.0.1:1"],"monitoring":["http://127.0.0.1:2"]}"#)
                .as_deref(),
            Some("http://127.0.0.1:2")
        );
        assert_eq!(monitor_url(r#"{"nats":[]}"#), None);
    }

    #[test]
    fn reads_the_client_port() {
        assert_eq!(
            client_port(r#"{"nats":["nats://127.0.0.1:41234"],"monitoring":[]}"#),
            Some(41234)
        );
        assert_eq!(client_port("{}"), None);
    }
}
