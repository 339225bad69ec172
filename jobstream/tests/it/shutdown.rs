//! SIGTERM under load (issue 15): the real binary run as separate `worker`, `api` and
//! `projector` processes; each exits within its grace period, also when nats-server
//! dies at the same moment, and nothing acknowledged is lost.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use jobstream_testkit::{Backend, eventually};
use reqwest::StatusCode;
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use crate::helpers::{Options, TestApp, WAIT, db_test};

/// The worker's grace period in this test.
const WORKER_GRACE: Duration = Duration::from_secs(3);
/// What a process may take beyond its grace period to exit (a debug build, a busy machine).
const MARGIN: Duration = Duration::from_secs(3);
/// The API and the projector have no grace setting: they stop at once, or within this.
const QUICK_STOP: Duration = Duration::from_secs(10);

/// One `jobstream <command>` process of the test's system.
struct Proc {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Proc {
    /// Sends SIGTERM and waits for the exit; panics (with the log's tail) if it takes
    /// longer than `within`.
    async fn sigterm_and_wait(mut self, within: Duration) -> Duration {
        let pid = self.child.id().expect("running").to_string();
        let started = tokio::time::Instant::now();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
        assert!(sent.success(), "kill -TERM {pid}");
        match tokio::time::timeout(within, self.child.wait()).await {
            Ok(status) => {
                status.expect("wait");
                started.elapsed()
            }
            Err(_) => {
                let _ = self.child.kill().await;
                panic!(
                    "{} still running {within:?} after SIGTERM; its log ends:\n{}",
                    self.name,
                    tail(&self.log)
                );
            }
        }
    }
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(25)..].join("\n")
}

/// Starts and restarts the separate processes against the test's nats-server and database.
struct Processes {
    nats_url: String,
    db_url: String,
    jwt_secret: String,
    api_port: u16,
    dir: tempfile::TempDir,
    started: u32,
}

impl Processes {
    fn spawn(&mut self, name: &'static str) -> Proc {
        self.started += 1;
        let log = self.dir.path().join(format!("{name}-{}.log", self.started));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_jobstream"));
        cmd.arg(name)
            .current_dir(self.dir.path())
            .env("NATS_URL", &self.nats_url)
            .env("DATABASE_URL", &self.db_url)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .kill_on_drop(true);
        match name {
            "worker" => {
                cmd.env(
                    "WORKER_SHUTDOWN_GRACE",
                    format!("{}s", WORKER_GRACE.as_secs()),
                )
                .env("WORKER_CONCURRENCY", "32")
                .env("WORKER_ACK_WAIT", "5s")
                .env("MAILBOX_DIR", self.dir.path().join("mailbox"));
            }
            "api" => {
                cmd.env("API_PORT", self.api_port.to_string())
                    .env("JWT_SECRET", &self.jwt_secret)
                    .env("JWT_ISSUER", "jobstream-test")
                    .env("JWT_AUDIENCE", "jobstream");
            }
            _ => {}
        }
        Proc {
            name,
            child: cmd.spawn().expect("spawn jobstream"),
            log,
        }
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.api_port)
    }

    /// Starts the API and waits until it answers.
    async fn spawn_api(&mut self) -> Proc {
        let api = self.spawn("api");
        let url = format!("{}/healthz", self.base());
        eventually("the api process to answer", WAIT, || async {
            let ok = reqwest::get(&url).await.ok()?.status().is_success();
            ok.then_some(())
        })
        .await;
        api
    }
}

/// Submits `sleep` jobs to `base` until `stop`, 8 at a time; the ids answered 202.
fn load(
    base: String,
    token: String,
    stop: CancellationToken,
) -> (Arc<Mutex<Vec<String>>>, tokio::task::JoinHandle<()>) {
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let out = accepted.clone();
    let task = tokio::spawn(async move {
        let http = reqwest::Client::new();
        futures::stream::iter(0u64..)
            .take_until(stop.cancelled_owned())
            .map(|i| {
                let (http, base, token) = (http.clone(), base.clone(), token.clone());
                async move {
                    let res = http
                        .post(format!("{base}/v1/jobs"))
                        .bearer_auth(&token)
                        .json(&json!({"kind": "sleep", "payload": {"ms": 100 + (i * 37) % 500}}))
                        .timeout(Duration::from_secs(20))
                        .send()
                        .await;
                    match res {
                        Ok(r) if r.status() == StatusCode::ACCEPTED => {
                            let job: Value = r.json().await.ok()?;
                            job["id"].as_str().map(str::to_owned)
                        }
                        // The API is restarting (refused) or nats-server is away (503).
                        _ => {
                            // A client's back-off before its next submission, not a wait for an event.
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            None
                        }
                    }
                }
            })
            .buffer_unordered(8)
            .for_each(|id| {
                if let Some(id) = id {
                    out.lock().unwrap().push(id);
                }
                async {}
            })
            .await;
    });
    (accepted, task)
}

async fn sigterm_under_load_stops_each_process_in_time_and_loses_nothing(backend: Backend) {
    let mut app = TestApp::with(backend, Options::api_only()).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let mut procs = Processes {
        nats_url: app.nats.url(),
        db_url: app.db.url.clone(),
        jwt_secret: app.auth.hs256_secret.expose_secret().to_owned(),
        api_port: port,
        dir: tempfile::tempdir().expect("dir"),
        started: 0,
    };
    let mut projector = procs.spawn("projector");
    let mut worker = procs.spawn("worker");
    let mut api = procs.spawn_api().await;
    let stop_load = CancellationToken::new();
    let (accepted, load_task) = load(procs.base(), app.token("alice", false), stop_load.clone());

    // The worker, with jobs running: it finishes or hands them back within its grace.
    app.busy(&accepted, 100).await;
    worker.sigterm_and_wait(WORKER_GRACE + MARGIN).await;
    worker = procs.spawn("worker");

    app.busy(&accepted, 100).await;
    projector.sigterm_and_wait(QUICK_STOP).await;
    projector = procs.spawn("projector");

    app.busy(&accepted, 100).await;
    api.sigterm_and_wait(QUICK_STOP).await;
    api = procs.spawn_api().await;

    // The worker and nats-server stopped at the same moment (Ctrl-C in a terminal, a
    // host shutdown): the worker still exits within its grace period.
    app.busy(&accepted, 100).await;
    let (took, ()) = tokio::join!(worker.sigterm_and_wait(WORKER_GRACE + MARGIN), async {
        app.nats.kill().await;
    });
    eprintln!("worker stopped with nats-server in {took:?}");
    app.nats.restart().await;
    worker = procs.spawn("worker");

    app.busy(&accepted, 100).await;
    stop_load.cancel();
    // Let submissions in flight finish (their 202s count).
    tokio::time::timeout(Duration::from_secs(25), load_task)
        .await
        .expect("load stopped")
        .expect("load task");
    let ids = accepted.lock().unwrap().clone();
    eventually(
        &format!("all {} accepted jobs to succeed", ids.len()),
        WAIT,
        || async {
            let rows = app.rows().await;
            let done: std::collections::HashSet<&str> = rows
                .iter()
                .filter(|r| r.status == "succeeded")
                .map(|r| r.id.as_str())
                .collect();
            ids.iter()
                .all(|id| done.contains(id.as_str()))
                .then_some(())
        },
    )
    .await;

    for p in [worker, projector, api] {
        let within = if p.name == "worker" {
            WORKER_GRACE + MARGIN
        } else {
            QUICK_STOP
        };
        p.sigterm_and_wait(within).await;
    }
}
db_test!(sigterm_under_load_stops_each_process_in_time_and_loses_nothing);
