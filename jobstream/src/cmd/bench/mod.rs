//! `jobstream bench`: end-to-end throughput and latency against a running system.
//!
//! Figures are reported beside a baseline measured in the same run (plain
//! `GET /healthz` requests at the same concurrency), because absolute numbers on
//! a shared machine mean little.

use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use crate::cli::BenchArgs;
use crate::system;

/// Runs the benchmark and prints its report.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.jobs > 0 && args.concurrency > 0,
        "--jobs and --concurrency must be at least 1"
    );
    // A fresh user per run: listing "my jobs" then lists exactly this run's jobs.
    let sub = format!("bench-{}", uuid::Uuid::now_v7().simple());
    let token = match &args.token {
        Some(t) => t.clone(),
        None => SecretString::from(jobstream_api::auth::mint_hs256(
            &system::auth_config(&args.auth)?,
            &sub,
            false,
            Duration::from_secs(3600),
        )?),
    };
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .build()?;
    let base = args.url.trim_end_matches('/').to_owned();
    let auth = format!("Bearer {}", token.expose_secret());

    // Baseline: the cheapest request the API serves, same client, same concurrency.
    let started = Instant::now();
    let ok = futures::stream::iter(0..args.jobs)
        .map(|_| {
            let (http, url) = (&http, format!("{base}/healthz"));
            async move {
                http.get(url)
                    .send()
                    .await
                    .map(|r| r.status().is_success())
                    .unwrap_or(false)
            }
        })
        .buffer_unordered(args.concurrency)
        .filter(|ok| std::future::ready(*ok))
        .count()
        .await;
    anyhow::ensure!(
        ok == args.jobs,
        "baseline: only {ok}/{} health checks succeeded; is the API at {base}?",
        args.jobs
    );
    let baseline_rps = args.jobs as f64 / started.elapsed().as_secs_f64();

    // Submit.
    let started = Instant::now();
    let mut submitted = 0usize;
    let mut errors = 0usize;
    let step = (args.jobs / 10).max(1);
    let mut results = futures::stream::iter(0..args.jobs)
        .map(|i| {
            let (http, url, auth) = (&http, format!("{base}/v1/jobs"), &auth);
            async move {
                let r = http
                    .post(url)
                    .header("Authorization", auth)
                    .json(&json!({ "kind": "echo", "payload": { "i": i } }))
                    .send()
                    .await;
                matches!(r, Ok(r) if r.status().as_u16() == 202)
            }
        })
        .buffer_unordered(args.concurrency);
    while let Some(ok) = results.next().await {
        if ok {
            submitted += 1;
        } else {
            errors += 1;
        }
        if (submitted + errors).is_multiple_of(step) {
            eprintln!(
                "submitted {}/{} ({errors} errors)",
                submitted + errors,
                args.jobs
            );
        }
    }
    let submit_secs = started.elapsed().as_secs_f64();
    anyhow::ensure!(errors == 0, "{errors} submissions failed");

    // Wait until every job is succeeded in the projection.
    let deadline = Instant::now() + args.timeout;
    let jobs = loop {
        let done = list_succeeded(&http, &base, &auth).await?;
        eprintln!("succeeded {}/{}", done.len(), args.jobs);
        if done.len() >= args.jobs {
            break done;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "timed out: {}/{} jobs succeeded",
            done.len(),
            args.jobs
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };

    let mut latencies: Vec<f64> = Vec::with_capacity(jobs.len());
    let (mut first_created, mut last_finished) = (None, None);
    for j in &jobs {
        let created = time_of(j, "created_at")?;
        let finished = time_of(j, "finished_at")?;
        latencies.push((finished - created).num_microseconds().unwrap_or(0) as f64 / 1000.0);
        first_created =
            Some(first_created.map_or(created, |c: chrono::DateTime<chrono::Utc>| c.min(created)));
        last_finished = Some(
            last_finished.map_or(finished, |f: chrono::DateTime<chrono::Utc>| f.max(finished)),
        );
    }
    latencies.sort_by(f64::total_cmp);
    let span = (last_finished.context("no jobs")? - first_created.context("no jobs")?)
        .num_milliseconds()
        .max(1) as f64
        / 1000.0;
    let submit_rps = args.jobs as f64 / submit_secs;
    let completed_rps = args.jobs as f64 / span;
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];
    println!("jobs                  {}", args.jobs);
    println!("concurrency           {}", args.concurrency);
    println!("baseline GET /healthz {baseline_rps:.0} req/s");
    println!(
        "submitted             {submit_rps:.0} jobs/s  ({:.2} x baseline)",
        submit_rps / baseline_rps
    );
    println!(
        "completed             {completed_rps:.0} jobs/s  ({:.2} x baseline)",
        completed_rps / baseline_rps
    );
    println!(
        "submit->succeeded     p50 {:.1} ms  p95 {:.1} ms  p99 {:.1} ms",
        pct(0.50),
        pct(0.95),
        pct(0.99)
    );
    Ok(())
}

async fn list_succeeded(
    http: &reqwest::Client,
    base: &str,
    auth: &str,
) -> anyhow::Result<Vec<Value>> {
    let mut out = Vec::new();
    let mut next = Some("/v1/jobs?status=succeeded&limit=500".to_owned());
    while let Some(path) = next {
        let page: Value = http
            .get(format!("{base}{path}"))
            .header("Authorization", auth)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        out.extend(page["items"].as_array().cloned().unwrap_or_default());
        next = page["next"].as_str().map(str::to_owned);
    }
    Ok(out)
}

fn time_of(job: &Value, field: &str) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    let s = job[field]
        .as_str()
        .with_context(|| format!("job without {field}"))?;
    Ok(chrono::DateTime::parse_from_rfc3339(s)?.with_timezone(&chrono::Utc))
}
