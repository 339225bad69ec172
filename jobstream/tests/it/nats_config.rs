//! The nats-server configuration travels with the binary, and the benchmark's code paths run.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use jobstream_core::nats_server::{self, Durability, NatsServerProcess, ServerOptions, SyncPolicy};
use jobstream_testkit::{eventually, workspace_root};
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::helpers::WAIT;

/// The monitoring URL of the nats-server child `jobstream dev` started, from its ports file.
fn monitor_url_of_child(data: &Path) -> Option<String> {
    let dir = data.join("jetstream").join("ports");
    let entry = std::fs::read_dir(dir).ok()?.flatten().next()?;
    let text = std::fs::read_to_string(entry.path()).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    Some(v["monitoring"][0].as_str()?.to_owned())
}

fn nats_server_bin() -> PathBuf {
    let env_bin = std::env::var("NATS_SERVER_BIN").ok();
    nats_server::locate(env_bin.as_deref(), &workspace_root()).unwrap_or_else(|e| panic!("{e}"))
}

/// A nats-server child with the built-in configuration at `durability` (killed on drop).
pub(crate) async fn start_server(durability: Durability) -> (NatsServerProcess, TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = nats_server::write_config(dir.path(), durability).expect("config written");
    let server = NatsServerProcess::start(&ServerOptions {
        bin: nats_server_bin(),
        config: Some(config),
        store_dir: dir.path().join("jetstream"),
        port: None,
        log_file: Some(dir.path().join("nats-server.log")),
        cluster: None,
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    (server, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_started_from_another_folder_runs_nats_server_with_fsync_always() {
    let elsewhere = tempfile::tempdir().expect("temp dir");
    let data = tempfile::tempdir().expect("temp dir");
    let mut dev = tokio::process::Command::new(env!("CARGO_BIN_EXE_jobstream"))
        .args(["dev", "--port", "0", "--data-dir"])
        .arg(data.path())
        .current_dir(elsewhere.path())
        .env("NATS_SERVER_BIN", nats_server_bin())
        .env("RUST_LOG", "warn")
        .env_remove("NATS_URL")
        .env_remove("NATS_CONFIG")
        .env_remove("DATABASE_URL")
        .env_remove("DATA_DIR")
        .env_remove("API_PORT")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawning jobstream dev");

    // The banner names the API's port once everything is up.
    let mut lines = BufReader::new(dev.stdout.take().expect("stdout")).lines();
    let port: u16 = tokio::time::timeout(WAIT, async {
        while let Some(line) = lines.next_line().await.expect("reading stdout") {
            if let Some(rest) = line.trim().strip_prefix("api") {
                let url = rest.split_whitespace().next().unwrap_or_default();
                if let Some(p) = url.rsplit(':').next().and_then(|p| p.parse().ok()) {
                    return p;
                }
            }
        }
        panic!("jobstream dev exited without printing its banner");
    })
    .await
    .expect("jobstream dev did not start in time");
    let http = reqwest::Client::new();
    eventually("/readyz to answer 200", WAIT, || async {
        let r = http
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await
            .ok()?;
        r.status().is_success().then_some(())
    })
    .await;

    // The running server fsyncs every write, and has nats.conf's limits.
    let monitor = monitor_url_of_child(data.path()).expect("the child reports its monitoring port");
    assert_eq!(
        nats_server::sync_policy(&monitor).await.expect("/varz"),
        SyncPolicy::Always
    );
    let varz = nats_server::monitor_get(&monitor, "/varz")
        .await
        .expect("/varz");
    assert_eq!(varz["max_payload"], 8 * 1024 * 1024, "{varz}");
    assert_eq!(
        varz["jetstream"]["limits"]["max_batch_size"], 2001,
        "{varz}"
    );
    // The built-in configuration was written into the data dir and is the repository's nats.conf.
    let written =
        std::fs::read_to_string(data.path().join("nats.conf")).expect("nats.conf in the data dir");
    let repo =
        std::fs::read_to_string(workspace_root().join("nats.conf")).expect("repository nats.conf");
    assert_eq!(written, repo);

    if let Some(pid) = dev.id() {
        let _ = tokio::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await;
    }
    let status = tokio::time::timeout(WAIT, dev.wait())
        .await
        .expect("dev stops on SIGTERM")
        .expect("wait");
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fsync_check_tells_a_durable_server_from_a_relaxed_one() {
    let (durable, _d) = start_server(Durability::Always).await;
    let (relaxed, _r) = start_server(Durability::Default).await;
    let (d, r) = (
        durable.monitor_url().expect("monitoring").to_owned(),
        relaxed.monitor_url().expect("monitoring").to_owned(),
    );
    nats_server::check_fsync(&d, true)
        .await
        .expect("durable server accepted");
    assert!(matches!(
        nats_server::sync_policy(&r).await,
        Ok(SyncPolicy::Interval(_))
    ));
    let refused = nats_server::check_fsync(&r, true)
        .await
        .expect_err("refused with --require-fsync");
    assert!(
        refused.to_string().contains("sync_interval: always"),
        "{refused}"
    );
    // Without --require-fsync it only warns.
    nats_server::check_fsync(&r, false)
        .await
        .expect("warned, not refused");
    // An endpoint that cannot be read cannot prove anything.
    assert!(matches!(
        nats_server::check_fsync("http://127.0.0.1:1", true).await,
        Err(nats_server::NatsServerError::CannotVerify(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_raw_loop_runs_every_job_round_trip_and_reports_it() {
    use jobstream::cmd::bench::{raw, raw_run_figures, report};

    let (server, _dir) = start_server(Durability::Always).await;
    let jobs = 50;
    for pace in [
        raw::Pace::Closed { concurrency: 8 },
        raw::Pace::Rate { per_sec: 500 },
    ] {
        let r = raw::run(&raw::RawOptions {
            nats_url: server.url(),
            replicas: 1,
            jobs,
            pace,
            worker_concurrency: 4,
            projector_batch: 16,
            progress: false,
            timeout: WAIT,
        })
        .await
        .expect("the raw loop completes");
        assert_eq!(r.published, jobs, "{pace:?}");
        assert_eq!(r.succeeded, jobs, "{pace:?}");
        // Two events per job, each seen once by the raw projector and stored once.
        assert_eq!(r.events_seen, 2 * jobs, "{pace:?}");
        assert_eq!(r.stream_messages, 2 * jobs as u64, "{pace:?}");
        assert!(r.stream_bytes > 0);
        assert_eq!(r.latencies_ms.len(), jobs);

        let figures = raw_run_figures(&r, Vec::new());
        assert_eq!(figures.jobs, jobs);
        assert_eq!(figures.stream_msgs_per_job, Some(2.0));
        let text = report::Report {
            title: "test".into(),
            raw: Some(figures),
            system: None,
            ..Default::default()
        }
        .render();
        assert!(text.contains("completed jobs/s"), "{text}");
        assert!(text.contains("stream messages per job"), "{text}");
    }
}

/// Runs `jobstream bench` with `args` (self-contained: its own nats-server and processes).
async fn bench(args: &[&str]) -> String {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_jobstream"))
        .arg("bench")
        .args(args)
        .env("NATS_SERVER_BIN", nats_server_bin())
        .env("RUST_LOG", "warn")
        .env_remove("DATABASE_URL")
        .env_remove("NATS_URL")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(WAIT * 2, out)
        .await
        .expect("bench finished in time")
        .expect("bench ran");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "bench {args:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_self_contained_bench_runs_each_mode_to_the_end() {
    let closed = bench(&["--jobs", "40", "--concurrency", "4", "--repeat", "2"]).await;
    assert!(closed.contains("2 pairs run"), "{closed}");
    for line in [
        "raw JetStream loop",
        "jobstream end to end",
        "completed jobs/s",
        "api",
        "worker",
        "projector",
        "nats-server",
    ] {
        assert!(closed.contains(line), "{line:?} missing:\n{closed}");
    }
    let open = bench(&["--rate", "100", "--jobs", "30", "--durability", "default"]).await;
    assert!(open.contains("SSE `succeeded`"), "{open}");
    // Both runs measured, so the throughput has its ratio to the raw loop.
    for report in [&closed, &open] {
        let completed = report
            .lines()
            .find(|l| l.starts_with("completed jobs/s"))
            .unwrap_or_default();
        assert!(
            completed.ends_with('×'),
            "no ratio to the raw loop:\n{report}"
        );
    }
    assert!(open.contains("sync: default"), "{open}");
    let batch = bench(&[
        "--batch",
        "10",
        "--jobs",
        "30",
        "--concurrency",
        "2",
        "--list-rows",
        "3000",
    ])
    .await;
    assert!(batch.contains("batches of 10"), "{batch}");
    assert!(batch.contains("vs one by one"), "{batch}");
    // Every list query, as the user and as an admin, timed on the seeded rows.
    assert!(
        batch.contains("list queries on 3,000 seeded rows"),
        "{batch}"
    );
    assert_eq!(batch.matches("/v1/jobs?limit=50").count(), 14, "{batch}");
}
