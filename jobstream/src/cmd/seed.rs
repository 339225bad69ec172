//! `jobstream seed`: fills a development system with demo users and a realistic mix of
//! jobs, the way the photo service's `GET /seed_db` did, but through the API, so
//! everything it creates is events in the stream (and a replay brings it back).
//!
//! Each demo user is created with `POST /v1/users` (which queues their registration
//! e-mail), then submits jobs with their own token: most succeed, some fail for good,
//! some succeed after a retry, some keep running (long sleeps) and some wait on a queue
//! no worker serves.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use serde_json::{Value, json};

use crate::cli::SeedArgs;
use crate::system;

/// Demo people (name, e-mail local part).
const PEOPLE: &[(&str, &str)] = &[
    ("Ada Lovelace", "ada"),
    ("Grace Hopper", "grace"),
    ("Alan Turing", "alan"),
    ("Katherine Johnson", "katherine"),
    ("Edsger Dijkstra", "edsger"),
    ("Barbara Liskov", "barbara"),
    ("Donald Knuth", "donald"),
    ("Margaret Hamilton", "margaret"),
    ("John Backus", "john"),
    ("Frances Allen", "frances"),
];

/// What to create.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Demo users.
    pub users: usize,
    /// Jobs per demo user.
    pub jobs_per_user: usize,
    /// Queue without a worker: jobs there stay `queued`.
    pub idle_queue: String,
    /// How long the "running" jobs sleep.
    pub long_sleep_ms: u64,
    /// How long to wait for the other jobs to settle.
    pub timeout: Duration,
}

/// What was created, and the status of every job submitted.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Users created now.
    pub users_created: usize,
    /// Users that already existed (an earlier seed).
    pub users_existing: usize,
    /// Registration e-mail jobs queued with the new users.
    pub registration_jobs: Vec<String>,
    /// Ids of the jobs submitted by the demo users.
    pub jobs: Vec<String>,
    /// Jobs per status when seeding ended (demo jobs and registration e-mails).
    pub statuses: BTreeMap<String, usize>,
}

/// One demo job: its body and the status it is meant to settle in.
fn demo_job(i: usize, plan: &Plan) -> (Value, &'static str) {
    match i % 10 {
        0..=3 => (
            json!({"kind": "echo", "payload": {"photo": format!("IMG_{:04}.jpg", 1000 + i), "caption": "seeded"}}),
            "succeeded",
        ),
        4 => (
            json!({"kind": "fail", "payload": {"times": 1}, "max_attempts": 3}),
            "succeeded",
        ),
        5 | 6 => (
            json!({"kind": "fail", "payload": {"times": 100}, "max_attempts": 2}),
            "failed",
        ),
        7 => (
            json!({"kind": "sleep", "payload": {"ms": plan.long_sleep_ms}}),
            "running",
        ),
        _ => (
            json!({"kind": "echo", "queue": plan.idle_queue, "payload": {"report": i}}),
            "queued",
        ),
    }
}

/// Seeds the system at `base`; `mint(sub, admin)` gives a bearer token.
pub async fn seed(
    base: &str,
    plan: &Plan,
    mint: impl Fn(&str, bool) -> anyhow::Result<String>,
) -> anyhow::Result<Report> {
    let http = reqwest::Client::new();
    let base = base.trim_end_matches('/');
    http.get(format!("{base}/healthz"))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .with_context(|| format!("no jobstream API at {base} (start it with `jobstream dev`)"))?;
    let admin = mint("seed-admin", true)?;
    let mut report = Report::default();

    let mut demo_subs = Vec::new();
    for n in 0..plan.users {
        let (name, local) = PEOPLE[n % PEOPLE.len()];
        let round = n / PEOPLE.len();
        let (name, local) = if round == 0 {
            (name.to_owned(), local.to_owned())
        } else {
            (
                format!("{name} {}", round + 1),
                format!("{local}{}", round + 1),
            )
        };
        let sub = format!("demo-{local}");
        let res = http
            .post(format!("{base}/v1/users"))
            .bearer_auth(&admin)
            .json(&json!({"email": format!("{local}@example.com"), "name": name, "sub": sub}))
            .send()
            .await?;
        match res.status().as_u16() {
            201 => {
                let body: Value = res.json().await?;
                if let Some(id) = body["registration_job"]["id"].as_str() {
                    report.registration_jobs.push(id.to_owned());
                }
                report.users_created += 1;
            }
            409 => report.users_existing += 1,
            s => anyhow::bail!(
                "POST /v1/users: {s} {}",
                res.text().await.unwrap_or_default()
            ),
        }
        demo_subs.push(sub);
        eprintln!(
            "users     {}/{}  ({} new, {} already there)",
            n + 1,
            plan.users,
            report.users_created,
            report.users_existing
        );
    }

    let total = plan.users * plan.jobs_per_user;
    let mut expected = Vec::with_capacity(total);
    for (u, sub) in demo_subs.iter().enumerate() {
        let token = mint(sub, false)?;
        for j in 0..plan.jobs_per_user {
            let (body, settles) = demo_job(u * plan.jobs_per_user + j, plan);
            let res = http
                .post(format!("{base}/v1/jobs"))
                .bearer_auth(&token)
                .json(&body)
                .send()
                .await?;
            anyhow::ensure!(
                res.status().as_u16() == 202,
                "POST /v1/jobs {body}: {} {}",
                res.status(),
                res.text().await.unwrap_or_default()
            );
            let job: Value = res.json().await?;
            let id = job["id"].as_str().context("job without id")?.to_owned();
            report.jobs.push(id.clone());
            expected.push((id, settles));
        }
        eprintln!("jobs      {}/{total}", report.jobs.len());
    }

    // Wait until every job is where it is meant to settle (or the timeout).
    let deadline = Instant::now() + plan.timeout;
    loop {
        let statuses = statuses_of(
            &http,
            base,
            &admin,
            expected.iter().map(|(id, _)| id.as_str()),
        )
        .await?;
        let settled = expected
            .iter()
            .zip(&statuses)
            .filter(|((_, want), got)| got.as_str() == *want)
            .count();
        eprintln!("settled   {settled}/{total}");
        if settled == total || Instant::now() >= deadline {
            if settled < total {
                eprintln!("(timed out waiting; the rest keeps going in the background)");
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let all = statuses_of(
        &http,
        base,
        &admin,
        report
            .jobs
            .iter()
            .chain(&report.registration_jobs)
            .map(String::as_str),
    )
    .await?;
    for s in all {
        *report.statuses.entry(s).or_default() += 1;
    }
    Ok(report)
}

async fn statuses_of<'a>(
    http: &reqwest::Client,
    base: &str,
    admin: &str,
    ids: impl Iterator<Item = &'a str>,
) -> anyhow::Result<Vec<String>> {
    let ids: Vec<&str> = ids.collect();
    futures::stream::iter(ids)
        .map(|id| async move {
            let res = http
                .get(format!("{base}/v1/jobs/{id}"))
                .bearer_auth(admin)
                .send()
                .await?
                .error_for_status()?;
            let job: Value = res.json().await?;
            Ok(job["status"].as_str().unwrap_or("unknown").to_owned())
        })
        .buffered(8)
        .collect::<Vec<anyhow::Result<String>>>()
        .await
        .into_iter()
        .collect()
}

/// Runs the seed against a running API, minting tokens with the development secret.
pub async fn run(args: SeedArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.users > 0, "--users must be at least 1");
    let auth = system::auth_config(&args.auth)?;
    let plan = Plan {
        users: args.users,
        jobs_per_user: args.jobs_per_user,
        idle_queue: args.idle_queue.clone(),
        long_sleep_ms: 10 * 60 * 1000,
        timeout: args.timeout,
    };
    let mint = |sub: &str, admin: bool| {
        jobstream_api::auth::mint_hs256(&auth, sub, admin, Duration::from_secs(3600))
            .map_err(anyhow::Error::from)
    };
    let report = seed(&args.url, &plan, mint).await?;
    println!(
        "seeded {} users ({} already there), {} jobs and {} registration e-mails",
        report.users_created,
        report.users_existing,
        report.jobs.len(),
        report.registration_jobs.len()
    );
    for (status, n) in &report.statuses {
        println!("  {status:<10} {n}");
    }
    Ok(())
}
