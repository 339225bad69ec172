//! Starting a local nats-server child process (for `jobstream dev` and tests).
//!
//! The binary is found through `$NATS_SERVER_BIN`, then the project-local install
//! (`.tools/nats-server/bin/nats-server`, made by `make nats-server`), then `PATH`.
//! The server picks its own free port (`-p -1`) and reports it in a ports file,
//! so an existing server on 4222 is never disturbed.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

/// Where `make nats-server` installs the pinned server, relative to the repository root.
pub const LOCAL_INSTALL: &str = ".tools/nats-server/bin/nats-server";

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
}

/// Finds the nats-server binary: `$NATS_SERVER_BIN`, the local install under `root`, then `PATH`.
pub fn locate(env_bin: Option<&str>, root: &Path) -> Result<PathBuf, NatsServerError> {
    if let Some(bin) = env_bin.filter(|b| !b.is_empty()) {
        return Ok(PathBuf::from(bin));
    }
    let mut dir = Some(root);
    // Tests run from a crate directory: look in the ancestors too.
    while let Some(d) = dir {
        let local = d.join(LOCAL_INSTALL);
        if local.is_file() {
            return Ok(local);
        }
        dir = d.parent();
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join("nats-server"))
                .find(|p| p.is_file())
        })
        .ok_or(NatsServerError::NotFound)
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
}

/// A running nats-server child; killed when dropped.
#[derive(Debug)]
pub struct NatsServerProcess {
    child: Child,
    port: u16,
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
        cmd.args(["-a", "127.0.0.1", "-p", &port, "-js", "-sd"])
            .arg(&opts.store_dir)
            .arg("--ports_file_dir")
            .arg(&ports_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true);
        if let Some(f) = &opts.log_file {
            cmd.arg("-l").arg(f);
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
        let mut server = NatsServerProcess { child, port: 0 };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(text) = std::fs::read_to_string(&ports_file)
                && let Some(port) = client_port(&text)
            {
                server.port = port;
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

    /// Kills the server at once (SIGKILL), like a crash.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// Asks the server to stop cleanly (SIGTERM), then kills it after `grace`.
    pub async fn stop(&mut self, grace: Duration) {
        if let Some(pid) = self.child.id() {
            let _ = Command::new("kill")
                .arg("-TERM")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_client_port() {
        assert_eq!(
            client_port(r#"{"nats":["nats://127.0.0.1:41234"],"monitoring":[]}"#),
            Some(41234)
        );
        assert_eq!(client_port("{}"), None);
    }
}
