//! `jobstream bench-sse`: hold N concurrent SSE connections against a running API and
//! measure the API's memory per connection (RSS from `/proc/<pid>/status`) and the events
//! delivered per second while echo jobs run.
//!
//! Figures come with a baseline from the same run: the same jobs watched by one
//! connection, and the process's RSS before the connections were opened.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use serde_json::json;

use crate::cli::BenchSseArgs;
use crate::system;

/// Events an echo job produces: queued, started, succeeded.
const EVENTS_PER_JOB: u64 = 3;

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

struct Watchers {
    events: Arc<AtomicU64>,
    open: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Opens `n` SSE connections (`ramp` at a time) that count the events they receive.
async fn open(
    http: &reqwest::Client,
    url: &str,
    auth: &str,
    n: usize,
    ramp: usize,
) -> anyhow::Result<Watchers> {
    let events = Arc::new(AtomicU64::new(0));
    let open = Arc::new(AtomicUsize::new(0));
    let responses: Vec<reqwest::Response> = futures::stream::iter(0..n)
        .map(|_| async {
            http.get(url)
                .header("Authorization", auth)
                .send()
                .await
                .and_then(reqwest::Response::error_for_status)
        })
        .buffer_unordered(ramp.max(1))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()
        .context("opening SSE connections (raise `ulimit -n`?)")?;
    let tasks = responses
        .into_iter()
        .map(|res| {
            let (events, open) = (events.clone(), open.clone());
            open.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                let mut body = res.bytes_stream();
                let mut carry = Vec::new();
                while let Some(Ok(chunk)) = body.next().await {
                    carry.extend_from_slice(&chunk);
                    // Count complete `id:` lines; keep a partial last line for the next chunk.
                    let cut = carry.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
                    let n = carry[..cut]
                        .split(|b| *b == b'\n')
                        .filter(|l| l.starts_with(b"id:"))
                        .count();
                    events.fetch_add(n as u64, Ordering::Relaxed);
                    carry.drain(..cut);
                }
                open.fetch_sub(1, Ordering::Relaxed);
            })
        })
        .collect();
    Ok(Watchers {
        events,
        open,
        tasks,
    })
}

/// Submits `jobs` echo jobs and waits until `expected` events arrived; returns events/s.
async fn run_jobs(
    http: &reqwest::Client,
    base: &str,
    auth: &str,
    jobs: usize,
    watchers: &Watchers,
    expected: u64,
    timeout: Duration,
) -> anyhow::Result<f64> {
    let start_count = watchers.events.load(Ordering::Relaxed);
    let started = Instant::now();
    let submitted = futures::stream::iter(0..jobs)
        .map(|i| async move {
            http.post(format!("{base}/v1/jobs"))
                .header("Authorization", auth)
                .json(&json!({"kind": "echo", "payload": {"i": i}}))
                .send()
                .await
                .is_ok_and(|r| r.status().as_u16() == 202)
        })
        .buffer_unordered(16)
        .filter(|ok| std::future::ready(*ok))
        .count()
        .await;
    anyhow::ensure!(submitted == jobs, "only {submitted}/{jobs} jobs accepted");
    loop {
        let got = watchers.events.load(Ordering::Relaxed) - start_count;
        if got >= expected {
            return Ok(got as f64 / started.elapsed().as_secs_f64());
        }
        anyhow::ensure!(
            started.elapsed() < timeout,
            "timed out: {got}/{expected} events delivered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs the benchmark and prints its report.
pub async fn run(args: BenchSseArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.connections > 0 && args.jobs > 0,
        "--connections and --jobs must be at least 1"
    );
    let token = jobstream_api::auth::mint_hs256(
        &system::auth_config(&args.auth)?,
        "bench-sse",
        true,
        Duration::from_secs(3600),
    )?;
    let auth = format!("Bearer {token}");
    let base = args.url.trim_end_matches('/').to_owned();
    let url = format!("{base}/v1/events?type=queued,started,succeeded");
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;
    let per_run = args.jobs as u64 * EVENTS_PER_JOB;

    // Baseline: one connection watching the same jobs.
    let one = open(&http, &url, &auth, 1, 1).await?;
    let baseline_rate =
        run_jobs(&http, &base, &auth, args.jobs, &one, per_run, args.timeout).await?;
    for t in one.tasks {
        t.abort();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let rss_before = args.pid.and_then(rss_kib);
    let opened = Instant::now();
    let many = open(&http, &url, &auth, args.connections, args.ramp).await?;
    let open_secs = opened.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after = args.pid.and_then(rss_kib);
    let rate = run_jobs(
        &http,
        &base,
        &auth,
        args.jobs,
        &many,
        per_run * args.connections as u64,
        args.timeout,
    )
    .await?;
    let still_open = many.open.load(Ordering::Relaxed);

    println!(
        "bench-sse: {} connections, {} echo jobs ({} events each connection)",
        args.connections, args.jobs, per_run
    );
    println!(
        "  opened {} connections in {open_secs:.2}s; {still_open} still open at the end",
        args.connections
    );
    match (rss_before, rss_after) {
        (Some(b), Some(a)) => {
            let per = (a.saturating_sub(b)) as f64 / args.connections as f64;
            println!(
                "  API RSS {:.1} MiB before, {:.1} MiB with the connections open: {per:.1} KiB per connection ({:.3}% of the idle process per connection)",
                b as f64 / 1024.0,
                a as f64 / 1024.0,
                100.0 * per / b as f64
            );
        }
        _ => println!("  (no --pid: memory not measured)"),
    }
    println!(
        "  events delivered: {rate:.0}/s to {} connections vs {baseline_rate:.0}/s to 1 connection (baseline): ×{:.1} the baseline's delivery rate, ×{:.2} its per-connection rate",
        args.connections,
        rate / baseline_rate,
        rate / baseline_rate / args.connections as f64
    );
    for t in many.tasks {
        t.abort();
    }
    Ok(())
}
