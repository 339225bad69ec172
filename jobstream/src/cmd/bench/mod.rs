//! `jobstream bench`: the full system measured against the raw JetStream loop, in one run.
//!
//! Figures on a shared machine mean little on their own, so every run first measures
//! the floor: [`raw`], the same round trip (queued → worker → succeeded, read by a
//! second consumer) straight on JetStream, against the same nats-server with the same
//! durability. Then the full system: by default the bench starts nats-server and
//! jobstream's api, worker and projector as separate processes (`system`) on a
//! temporary data dir and drives the API over HTTP (`load`). The report
//! ([`report`]) prints both, their ratio, and per process the CPU time per job and
//! memory, plus stream messages and bytes per job.
//!
//! Modes: closed loop (`--concurrency`), open loop at a fixed rate (`--rate`, latencies
//! from each job's scheduled send time, so they include queueing; also measured to the
//! SSE `succeeded`), batch submit (`--batch`). With `--url` it measures a system that
//! is already running (the raw loop needs `--nats-url`; per-process figures `--pid`).
//! `--fan-out N` compares workflows against independent jobs instead (`fan_out.rs`).
//! After the run, `--list-rows N` times the job list queries and `--console-rows N` every
//! console page (`console.rs`) on a projection seeded with N more rows.

mod console;
mod fan_out;
mod lists;
mod load;
pub mod raw;
pub mod report;
mod system;

use std::time::{Duration, Instant};

use anyhow::Context;
use jobstream_core::nats_server::{self, Durability};
use secrecy::ExposeSecret;

use self::load::{Api, Rows};
use self::report::{
    CLIENT_ROLE, Percentiles, ProcFigures, ProcSample, RAW_CLIENT_ROLE, Report, RunFigures,
};
use crate::cli::{BenchArgs, BenchMetrics};

/// Jobs jobstream's worker runs at once by default; the raw worker does the same.
const WORKER_CONCURRENCY: usize = 32;
/// Events per transaction of jobstream's projector by default; the raw projector's batch.
const PROJECTOR_BATCH: usize = 500;
/// One-by-one submissions measured for the batch-vs-single ratio (at most).
const SINGLE_PROBE_JOBS: usize = 2000;
/// Jobs when neither `--jobs` nor `--duration` says.
const DEFAULT_JOBS: usize = 1000;

/// How load is offered.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Closed { concurrency: usize },
    Open { rate: u32 },
    Batch { size: usize, concurrency: usize },
}

impl Mode {
    fn of(args: &BenchArgs) -> anyhow::Result<Self> {
        anyhow::ensure!(args.concurrency > 0, "--concurrency must be at least 1");
        Ok(match (args.rate, args.batch) {
            (Some(rate), _) => {
                anyhow::ensure!(rate > 0, "--rate must be at least 1");
                Mode::Open { rate }
            }
            (None, Some(size)) => {
                anyhow::ensure!((1..=1000).contains(&size), "--batch must be 1 to 1000 jobs");
                Mode::Batch {
                    size,
                    concurrency: args.concurrency,
                }
            }
            (None, None) => Mode::Closed {
                concurrency: args.concurrency,
            },
        })
    }

    fn describe(self) -> String {
        match self {
            Mode::Closed { concurrency } => format!("closed loop, {concurrency} in flight"),
            Mode::Open { rate } => format!("open loop at {rate} jobs/s"),
            Mode::Batch { size, concurrency } => {
                format!("batches of {size}, {concurrency} requests in flight")
            }
        }
    }

    /// The raw publisher's pace: the same rate in an open loop, else the same concurrency.
    fn raw_pace(self) -> raw::Pace {
        match self {
            Mode::Open { rate } => raw::Pace::Rate { per_sec: rate },
            Mode::Closed { concurrency } | Mode::Batch { concurrency, .. } => {
                raw::Pace::Closed { concurrency }
            }
        }
    }
}

fn job_count(args: &BenchArgs) -> anyhow::Result<usize> {
    let jobs = match (args.jobs, args.rate, args.duration) {
        (Some(n), _, _) => n,
        (None, Some(rate), Some(d)) => (f64::from(rate) * d.as_secs_f64()).round() as usize,
        _ => DEFAULT_JOBS,
    };
    anyhow::ensure!(jobs > 0, "at least one job");
    Ok(jobs)
}

/// Runs the benchmark and prints its report. Ctrl-C stops it and every process it started.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let mode = Mode::of(&args)?;
    let jobs = job_count(&args)?;
    let shutdown = jobstream_core::shutdown::token_on_signal();
    // Dropping the run (Ctrl-C) kills its child processes and removes its data dir.
    let report = tokio::select! {
        r = measure(&args, mode, jobs) => r?,
        () = shutdown.cancelled() => anyhow::bail!("interrupted; the processes the bench started were stopped"),
    };
    println!("{}", report.render());
    Ok(())
}

async fn measure(args: &BenchArgs, mode: Mode, jobs: usize) -> anyhow::Result<Report> {
    match &args.url {
        None => self_contained(args, mode, jobs).await,
        Some(url) => against_running(args, url, mode, jobs).await,
    }
}

fn title(mode: Mode, jobs: usize, durability: &str, database: &str) -> String {
    let cpus = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    format!(
        "jobstream bench: {jobs} echo jobs, {}; nats-server sync: {durability}; {database}; {cpus} CPUs",
        mode.describe()
    )
}

/// Starts nats-server and the system itself, measures, stops everything.
async fn self_contained(args: &BenchArgs, mode: Mode, jobs: usize) -> anyhow::Result<Report> {
    let mut dir = system::DataDir::create(args.keep_data)?;
    let result = self_contained_in(args, mode, jobs, dir.path()).await;
    if result.is_err() {
        dir.keep();
    }
    result
}

async fn self_contained_in(
    args: &BenchArgs,
    mode: Mode,
    jobs: usize,
    dir: &std::path::Path,
) -> anyhow::Result<Report> {
    let cluster_size = usize::from(args.nats_cluster);
    let nats = system::start_nats(
        dir,
        args.durability,
        args.nats_server_bin.as_deref(),
        cluster_size,
    )
    .await?;
    let nats_pids: Vec<(String, u32)> = nats
        .pids()
        .into_iter()
        .map(|pid| ("nats-server".to_owned(), pid))
        .collect();
    anyhow::ensure!(!nats_pids.is_empty(), "nats-server exited");
    let nats_url = nats.urls();
    let monitor_url = nats.monitor_url();
    eprintln!(
        "nats-server {nats_url} (sync: {}, stream replicas {cluster_size}), data in {}",
        args.durability.as_str(),
        dir.display()
    );

    let raw = if args.fan_out.is_none() {
        eprintln!("raw JetStream loop: {jobs} jobs");
        Some(raw_figures(&nats_url, &nats_pids, mode, jobs, args.timeout).await?)
    } else {
        None
    };

    let secret_file = dir.join("jwt-secret");
    system::write_secret(&secret_file)?;
    let db_url = args
        .database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}?mode=rwc", dir.join("jobstream.db").display()));
    // Migrated once here, so api and projector do not race to migrate.
    let db = crate::system::connect_db_migrated(&db_url).await?;
    let api_args: Vec<String> = args
        .max_queue_depth
        .map(|d| vec!["--max-queue-depth".to_owned(), d.to_string()])
        .unwrap_or_default();
    // And the stream created once: three processes creating a replicated stream at the
    // same moment time out on a loaded machine.
    jobstream_core::broker::Broker::connect(&nats_url, "jobstream-bench", "JOBS")
        .await?
        .ensure_stream(&jobstream_core::broker::StreamSettings {
            replicas: cluster_size,
            ..Default::default()
        })
        .await?;
    let wiring = |metrics| system::Wiring {
        dir,
        nats_url: &nats_url,
        monitor_url: monitor_url.as_deref(),
        stream_replicas: cluster_size,
        database_url: &db_url,
        secret_file: &secret_file,
        metrics,
        api_args: api_args.clone(),
    };
    if let Some(steps) = args.fan_out {
        eprintln!("starting jobstream api, worker and projector");
        let started = system::System::start(&wiring(true), Duration::from_secs(120)).await?;
        let (api, owner) = bench_client(&started.url, &secret_file, mode, false)?;
        let figures = fan_out::compare(&api, &Rows::Sql(db), &owner, steps, args.timeout).await;
        started.stop().await;
        nats.stop(Duration::from_secs(5)).await;
        return Ok(Report {
            title: format!(
                "jobstream bench: a fan-out of {steps} steps against {steps} independent jobs\n{}",
                figures?.render()
            ),
            ..Default::default()
        });
    }
    // Off first: what the stream and tables hold by then only slows the run with metrics.
    let metrics_off = match args.metrics {
        BenchMetrics::Compare => Some(
            run_system(args, &(wiring(false), &db), mode, jobs, &nats_pids)
                .await?
                .figures,
        ),
        BenchMetrics::On | BenchMetrics::Off => None,
    };
    let with_metrics = args.metrics != BenchMetrics::Off;
    let mut run = run_system(args, &(wiring(with_metrics), &db), mode, jobs, &nats_pids).await?;
    let (mut raw, mut pairs_read) = (raw, report::Pairs::One);
    if args.repeat > 1
        && let Some(first_raw) = raw.take()
    {
        let mut pairs = vec![(first_raw, run.figures)];
        for i in 2..=args.repeat {
            eprintln!("pair {i}/{}: raw JetStream loop: {jobs} jobs", args.repeat);
            let r = raw_figures(&nats_url, &nats_pids, mode, jobs, args.timeout).await?;
            let s = run_system(args, &(wiring(with_metrics), &db), mode, jobs, &nats_pids).await?;
            pairs.push((r, s.figures));
        }
        let (read, median) = report::Pairs::of(matches!(mode, Mode::Open { .. }), &pairs);
        let (r, s) = pairs.swap_remove(median);
        (raw, run.figures, pairs_read) = (Some(r), s, read);
    }
    nats.stop(Duration::from_secs(5)).await;
    let database = if args.database_url.is_some() {
        crate::system::redact(&db_url)
    } else {
        "SQLite".to_owned()
    };
    Ok(Report {
        title: title(mode, jobs, args.durability.as_str(), &database),
        raw,
        system: Some(run.figures),
        metrics_off,
        batch_vs_single: run.batch_vs_single,
        lists: run.lists,
        console: run.console,
        pairs: pairs_read,
    })
}

/// How one run of the system is wired: its processes' settings and the database read for latencies.
type System<'a> = (system::Wiring<'a>, &'a sea_orm::DatabaseConnection);

/// Starts api, worker and projector as `wiring` says, measures `jobs`, stops them.
async fn run_system(
    args: &BenchArgs,
    (wiring, db): &System<'_>,
    mode: Mode,
    jobs: usize,
    nats_pids: &[(String, u32)],
) -> anyhow::Result<SystemRun> {
    let metrics = if wiring.metrics { "on" } else { "off" };
    eprintln!("starting jobstream api, worker and projector (metrics {metrics})");
    let started = system::System::start(wiring, Duration::from_secs(120)).await?;
    let (api, owner) = bench_client(&started.url, wiring.secret_file, mode, false)?;
    let mut pids = started.pids();
    pids.extend_from_slice(nats_pids);
    eprintln!("jobstream end to end: {jobs} jobs");
    let target = Target {
        api: &api,
        rows: &Rows::Sql((*db).clone()),
        nats_url: Some(wiring.nats_url),
        pids: &pids,
        owner: &owner,
    };
    let figures = system_figures(&target, mode, jobs, args.timeout).await;
    // What the rest measures runs after the main figures, so it does not change them.
    let extras = async {
        let batch_vs_single = match (&figures, mode) {
            (Ok(s), Mode::Batch { concurrency, .. }) => {
                let n = jobs.min(SINGLE_PROBE_JOBS);
                eprintln!("one-by-one submits for the batch ratio: {n} jobs");
                let single = load::closed(&api, n, concurrency).await;
                Some((
                    s.submitted_per_sec,
                    report::per_sec(single.ok, single.elapsed),
                ))
            }
            _ => None,
        };
        let lists = match (&figures, args.list_rows) {
            (Ok(_), Some(rows)) => {
                let (user, list_owner) =
                    bench_client(&started.url, wiring.secret_file, mode, false)?;
                let (admin, _) = bench_client(&started.url, wiring.secret_file, mode, true)?;
                Some(lists::measure(db, (&user, &admin), &list_owner, rows).await?)
            }
            _ => None,
        };
        let console = match (&figures, args.console_rows) {
            (Ok(_), Some(rows)) => {
                let (user, owner) = bench_client(&started.url, wiring.secret_file, mode, false)?;
                let (admin, _) = bench_client(&started.url, wiring.secret_file, mode, true)?;
                let tokens = (
                    user.auth.trim_start_matches("Bearer "),
                    admin.auth.trim_start_matches("Bearer "),
                );
                Some(console::measure(db, &started.url, tokens, &owner, rows).await?)
            }
            _ => None,
        };
        anyhow::Ok((batch_vs_single, lists, console))
    }
    .await;
    started.stop().await;
    let (batch_vs_single, lists, console) = extras?;
    Ok(SystemRun {
        figures: figures?,
        batch_vs_single,
        lists,
        console,
    })
}

/// One run of the full system: its figures, and what was measured after them.
struct SystemRun {
    figures: RunFigures,
    /// Batch mode: submitted jobs/s in batches and one by one.
    batch_vs_single: Option<(f64, f64)>,
    /// `--list-rows`: list queries on a large projection.
    lists: Option<lists::ListFigures>,
    /// `--console-rows`: console pages on a large projection.
    console: Option<lists::ListFigures>,
}

/// A client of the started API as a fresh bench user (its jobs are the run's; an admin
/// with `admin`), and that user.
fn bench_client(
    url: &str,
    secret_file: &std::path::Path,
    mode: Mode,
    admin: bool,
) -> anyhow::Result<(Api, String)> {
    let owner = format!("bench-{}", uuid::Uuid::now_v7().simple());
    let token = jobstream_api::auth::mint_hs256(
        &crate::system::auth_config(&crate::cli::AuthArgs::dev(secret_file.to_owned()))?,
        &owner,
        admin,
        Duration::from_secs(3600),
    )?;
    Ok((api_client(url, &token, mode)?, owner))
}

/// Measures a system that is already running at `url`.
async fn against_running(
    args: &BenchArgs,
    url: &str,
    mode: Mode,
    jobs: usize,
) -> anyhow::Result<Report> {
    anyhow::ensure!(
        args.durability == Durability::Always,
        "--durability applies to the nats-server the bench starts; with --url it measures the server as it is configured"
    );
    let nats_pid: Vec<_> = args
        .pids
        .iter()
        .filter(|(r, _)| r == "nats-server")
        .cloned()
        .collect();
    let raw = match &args.nats_url {
        Some(nats_url) => {
            eprintln!("raw JetStream loop: {jobs} jobs");
            Some(raw_figures(nats_url, &nats_pid, mode, jobs, args.timeout).await?)
        }
        None => {
            eprintln!("no --nats-url: the raw JetStream loop is skipped");
            None
        }
    };
    let (token, owner) = match &args.token {
        Some(t) => (t.expose_secret().to_owned(), None),
        None => {
            let owner = format!("bench-{}", uuid::Uuid::now_v7().simple());
            let token = jobstream_api::auth::mint_hs256(
                &crate::system::auth_config(&args.auth)?,
                &owner,
                false,
                Duration::from_secs(3600),
            )?;
            (token, Some(owner))
        }
    };
    let api = api_client(url, &token, mode)?;
    // The database is read directly only when the bench knows whose jobs are its own.
    let rows = match (&args.database_url, &owner) {
        (Some(db), Some(_)) => Rows::Sql(jobstream_core::store::connect(db).await?),
        _ => Rows::Api(api.clone()),
    };
    let owner = owner.unwrap_or_default();
    eprintln!("jobstream end to end: {jobs} jobs");
    let target = Target {
        api: &api,
        rows: &rows,
        nats_url: args.nats_url.as_deref(),
        pids: &args.pids,
        owner: &owner,
    };
    let system = system_figures(&target, mode, jobs, args.timeout).await?;
    let sync = match &args.nats_url {
        Some(u) => match nats_server::default_monitor_url(u) {
            Some(m) => nats_server::sync_policy(&m)
                .await
                .map_or_else(|_| "unknown".to_owned(), |p| p.to_string()),
            None => "unknown".to_owned(),
        },
        None => "unknown".to_owned(),
    };
    Ok(Report {
        title: title(mode, jobs, &sync, &format!("running system at {url}")),
        raw,
        system: Some(system),
        ..Default::default()
    })
}

fn api_client(base: &str, token: &str, mode: Mode) -> anyhow::Result<Api> {
    let idle = match mode {
        Mode::Closed { concurrency } | Mode::Batch { concurrency, .. } => concurrency,
        Mode::Open { .. } => 256,
    };
    Ok(Api {
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(idle)
            .build()?,
        base: base.trim_end_matches('/').to_owned(),
        auth: format!("Bearer {token}"),
    })
}

/// Samples each `(role, pid)` plus this process (the bench client).
fn sample_all(pids: &[(String, u32)], me: &str) -> Vec<(String, Option<ProcSample>)> {
    pids.iter()
        .map(|(role, pid)| (role.clone(), report::sample(*pid)))
        .chain(std::iter::once((
            me.to_owned(),
            report::sample(std::process::id()),
        )))
        .collect()
}

fn proc_figures(
    before: &[(String, Option<ProcSample>)],
    after: &[(String, Option<ProcSample>)],
    jobs: usize,
) -> Vec<ProcFigures> {
    let ticks = report::clock_ticks_per_sec();
    before
        .iter()
        .zip(after)
        .filter_map(|((role, b), (_, a))| {
            Some(ProcFigures::between(role, (*b)?, (*a)?, ticks, jobs))
        })
        .collect()
}

async fn raw_figures(
    nats_url: &str,
    pids: &[(String, u32)],
    mode: Mode,
    jobs: usize,
    timeout: Duration,
) -> anyhow::Result<RunFigures> {
    let before = sample_all(pids, RAW_CLIENT_ROLE);
    let r = raw::run(&raw::RawOptions {
        nats_url: nats_url.to_owned(),
        // A listed cluster gets a replicated raw stream, like the system's.
        replicas: jobstream_core::broker::server_addrs(nats_url).map_or(1, |s| s.len().min(3)),
        jobs,
        pace: mode.raw_pace(),
        worker_concurrency: WORKER_CONCURRENCY,
        projector_batch: PROJECTOR_BATCH,
        progress: true,
        timeout,
    })
    .await?;
    let after = sample_all(pids, RAW_CLIENT_ROLE);
    Ok(raw_run_figures(&r, proc_figures(&before, &after, jobs)))
}

/// The report's figures of a raw loop result.
pub fn raw_run_figures(r: &raw::RawResult, processes: Vec<ProcFigures>) -> RunFigures {
    let jobs = r.succeeded.max(1) as f64;
    RunFigures {
        jobs: r.succeeded,
        submitted_per_sec: report::per_sec(r.published, r.submit_elapsed),
        completed_per_sec: report::per_sec(r.succeeded, r.elapsed),
        latency: Percentiles::of(r.latencies_ms.clone()),
        sse_latency: None,
        stream_msgs_per_job: Some(r.stream_messages as f64 / jobs),
        stream_bytes_per_job: Some(r.stream_bytes as f64 / jobs),
        processes,
        ..Default::default()
    }
}

async fn jobs_stream_state(nats_url: &str) -> anyhow::Result<(u64, u64)> {
    let client = async_nats::connect(jobstream_core::broker::server_addrs(nats_url)?).await?;
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream("JOBS").await?;
    let info = stream.info().await?;
    Ok((info.state.messages, info.state.bytes))
}

/// The system a run measures, and how the bench reaches it.
struct Target<'a> {
    /// The API, as the bench's user.
    api: &'a Api,
    /// Where finished jobs are read back.
    rows: &'a Rows,
    /// Its NATS server, for stream figures.
    nats_url: Option<&'a str>,
    /// Processes to sample, as `(role, pid)`.
    pids: &'a [(String, u32)],
    /// The bench user: whose jobs count.
    owner: &'a str,
}

/// Completed jobs/s over the first and the last tenth of `finished`, in completion order.
fn tenths(finished: &[load::Finished]) -> Option<(f64, f64)> {
    let mut done: Vec<_> = finished.iter().map(|f| f.finished).collect();
    done.sort();
    let tenth = done.len() / 10;
    if tenth < 2 {
        return None;
    }
    // Between completions, so the first tenth does not count the pipeline filling up.
    let rate = |jobs: &[chrono::DateTime<chrono::Utc>]| {
        let span = (jobs[jobs.len() - 1] - jobs[0])
            .to_std()
            .unwrap_or_default();
        report::per_sec(jobs.len() - 1, span)
    };
    Some((rate(&done[..tenth]), rate(&done[done.len() - tenth..])))
}

async fn system_figures(
    target: &Target<'_>,
    mode: Mode,
    jobs: usize,
    timeout: Duration,
) -> anyhow::Result<RunFigures> {
    let Target {
        api,
        rows,
        nats_url,
        pids,
        owner,
    } = *target;
    let stream_before = match nats_url {
        Some(u) => jobs_stream_state(u).await.ok(),
        None => None,
    };
    // Subscribed before the first submission, so no `succeeded` can be missed.
    let sse = match mode {
        Mode::Open { .. } => Some(load::Sse::subscribe(api).await?),
        _ => None,
    };
    let before = sample_all(pids, CLIENT_ROLE);
    let submitted = match mode {
        Mode::Closed { concurrency } => load::closed(api, jobs, concurrency).await,
        Mode::Open { rate } => load::open(api, jobs, rate).await,
        Mode::Batch { size, concurrency } => load::batches(api, jobs, size, concurrency).await,
    };
    anyhow::ensure!(
        submitted.errors == 0,
        "{} submissions failed; the first: {}",
        submitted.errors,
        submitted.first_error.as_deref().unwrap_or("-")
    );

    // Wait until every job is succeeded in the projection.
    let deadline = Instant::now() + timeout;
    let poll = match rows {
        Rows::Sql(_) => Duration::from_millis(100),
        // Listing through the API loads what is measured: less often.
        Rows::Api(_) => Duration::from_secs(1),
    };
    let step = (submitted.ok / 10).max(1);
    let mut next = step;
    loop {
        let done = rows.count_succeeded(owner).await?;
        if done >= next {
            eprintln!("succeeded {done}/{}", submitted.ok);
            next = (done / step + 1) * step;
        }
        if done >= submitted.ok {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "timed out after {timeout:?}: {done}/{} jobs succeeded",
            submitted.ok
        );
        tokio::time::sleep(poll).await;
    }
    let after = sample_all(pids, CLIENT_ROLE);
    let stream_after = match nats_url {
        Some(u) => jobs_stream_state(u).await.ok(),
        None => None,
    };

    let finished = rows.succeeded(owner).await?;
    let latencies: Vec<f64> = finished
        .iter()
        .map(|f| (f.finished - f.created).num_microseconds().unwrap_or(0) as f64 / 1e3)
        .collect();
    let first = finished
        .iter()
        .map(|f| f.created)
        .min()
        .context("no jobs")?;
    let last = finished
        .iter()
        .map(|f| f.finished)
        .max()
        .context("no jobs")?;
    let span = (last - first).to_std().unwrap_or_default();

    let sse_latency = match sse {
        Some(sse) => {
            // The projection is done; SSE `succeeded` comes from the stream, so it is at most a moment behind.
            let until = Instant::now() + Duration::from_secs(10);
            while sse.count() < submitted.ok && Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let (seen, lagged) = sse.finish();
            if lagged || seen.len() < submitted.ok {
                eprintln!(
                    "warning: the SSE subscriber saw {}/{} jobs succeed{}",
                    seen.len(),
                    submitted.ok,
                    if lagged {
                        " (the server said it lagged)"
                    } else {
                        ""
                    }
                );
            }
            Percentiles::of(
                submitted
                    .scheduled
                    .iter()
                    .filter_map(|(id, at)| {
                        seen.get(id)
                            .map(|s| s.saturating_duration_since(*at).as_secs_f64() * 1e3)
                    })
                    .collect(),
            )
        }
        None => None,
    };
    let n = finished.len().max(1) as f64;
    let per_job = |f: fn((u64, u64)) -> u64| match (stream_before, stream_after) {
        (Some(b), Some(a)) => Some(f(a).saturating_sub(f(b)) as f64 / n),
        _ => None,
    };
    // In an open loop the SQL figure is from the API's `created_at`; the scheduled send
    // time is earlier when requests queue, so the SSE figure is the one including queueing.
    Ok(RunFigures {
        jobs: finished.len(),
        submitted_per_sec: report::per_sec(submitted.ok, submitted.elapsed),
        completed_per_sec: report::per_sec(finished.len(), span),
        latency: Percentiles::of(latencies),
        sse_latency,
        stream_msgs_per_job: per_job(|s| s.0),
        stream_bytes_per_job: per_job(|s| s.1),
        processes: proc_figures(&before, &after, finished.len()),
        shed: submitted.shed,
        tenths: tenths(&finished),
    })
}
