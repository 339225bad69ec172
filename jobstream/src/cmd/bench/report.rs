//! What a bench run measured, per run and per process, and how it is printed.
//!
//! CPU and memory come from `/proc/<pid>/stat` (utime + stime, in clock ticks) and
//! `/proc/<pid>/status` (`VmRSS`), sampled before and after each run; stream messages
//! and bytes from the stream's info before and after. Everything is divided by the
//! number of jobs, so the two runs compare per job.

use std::fmt::Write as _;
use std::time::Duration;

/// CPU time and resident memory of one process at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcSample {
    /// User plus system CPU time, in clock ticks.
    pub cpu_ticks: u64,
    /// Resident set size, KiB.
    pub rss_kib: u64,
}

/// Reads a process's CPU time and RSS from /proc; `None` when it is gone (or not Linux).
pub fn sample(pid: u32) -> Option<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some(ProcSample {
        cpu_ticks: cpu_ticks_of_stat(&stat)?,
        rss_kib: rss_kib_of_status(&status)?,
    })
}

/// utime + stime (fields 14 and 15) of a `/proc/<pid>/stat` line. The command name
/// (field 2) may hold spaces and parentheses, so fields are counted after its last `)`.
pub fn cpu_ticks_of_stat(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let mut fields = after.split_whitespace();
    // `after` starts at field 3 (state): utime is field 14, i.e. the 12th here.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// `VmRSS` of a `/proc/<pid>/status` text, KiB.
pub fn rss_kib_of_status(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Clock ticks per second of /proc CPU times (`getconf CLK_TCK`; 100 on Linux).
/// Asked of `getconf` rather than `sysconf` because the workspace forbids `unsafe`.
pub fn clock_ticks_per_sec() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|t| *t > 0)
        .unwrap_or(100)
}

/// One process measured over one run.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcFigures {
    /// Its role: `api`, `worker`, `projector`, `nats-server`, or the bench client.
    pub role: String,
    /// CPU time spent during the run, µs per job.
    pub cpu_us_per_job: f64,
    /// Resident memory at the end of the run, MiB.
    pub rss_mib: f64,
}

impl ProcFigures {
    /// Figures from two samples of the same process around a run of `jobs` jobs.
    pub fn between(
        role: &str,
        before: ProcSample,
        after: ProcSample,
        ticks_per_sec: u64,
        jobs: usize,
    ) -> Self {
        let ticks = after.cpu_ticks.saturating_sub(before.cpu_ticks);
        let us = ticks as f64 * 1e6 / ticks_per_sec.max(1) as f64;
        ProcFigures {
            role: role.to_owned(),
            cpu_us_per_job: us / jobs.max(1) as f64,
            rss_mib: after.rss_kib as f64 / 1024.0,
        }
    }
}

/// Latency percentiles, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
    /// How many samples.
    pub count: usize,
}

impl Percentiles {
    /// Percentiles of `samples` (ms; sorted here); `None` when there are none.
    pub fn of(mut samples: Vec<f64>) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_by(f64::total_cmp);
        let at = |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize];
        Some(Percentiles {
            p50: at(0.50),
            p95: at(0.95),
            p99: at(0.99),
            max: samples[samples.len() - 1],
            count: samples.len(),
        })
    }
}

/// The result of one run (raw loop or full system).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunFigures {
    /// Jobs that completed.
    pub jobs: usize,
    /// Jobs per second accepted by the front door (PubAck for the raw loop, `202` for the system).
    pub submitted_per_sec: f64,
    /// Jobs per second from the first submission to the last completion.
    pub completed_per_sec: f64,
    /// Submission to `succeeded` as the projection records it (SQL rows / the raw
    /// projector's consumer).
    pub latency: Option<Percentiles>,
    /// Submission to `succeeded` as an SSE subscriber receives it (open loop).
    pub sse_latency: Option<Percentiles>,
    /// Stream messages stored per job.
    pub stream_msgs_per_job: Option<f64>,
    /// Stream bytes stored per job.
    pub stream_bytes_per_job: Option<f64>,
    /// Per-process figures.
    pub processes: Vec<ProcFigures>,
    /// Submissions refused with `429` (admission control shedding an overload).
    pub shed: usize,
    /// Completed jobs/s over the first and the last tenth of the jobs (a slow-down over
    /// time shows as a lower second figure).
    pub tenths: Option<(f64, f64)>,
}

impl RunFigures {
    /// CPU µs per job of every process doing the work: all but the HTTP load generator
    /// (in the raw run the bench process *is* the raw worker and projector, so it counts).
    pub fn system_cpu_us_per_job(&self) -> Option<f64> {
        let server: Vec<_> = self
            .processes
            .iter()
            .filter(|p| p.role != CLIENT_ROLE)
            .collect();
        (!server.is_empty()).then(|| server.iter().map(|p| p.cpu_us_per_job).sum())
    }
}

/// Role name of the bench process during the full-system run: the HTTP load
/// generator, left out of the CPU total.
pub const CLIENT_ROLE: &str = "bench client (HTTP load; not in total)";
/// Role name of the bench process during the raw run: publisher, raw worker and raw
/// projector, counted in the CPU total.
pub const RAW_CLIENT_ROLE: &str = "raw publisher+worker+projector";

/// Everything a bench invocation prints.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// One line describing the mode, job count and durability.
    pub title: String,
    /// The raw JetStream loop, unless it was skipped.
    pub raw: Option<RunFigures>,
    /// The full system.
    pub system: Option<RunFigures>,
    /// The full system with metrics off (`--metrics compare`), run before `system`.
    pub metrics_off: Option<RunFigures>,
    /// Batch mode: submitted jobs/s in batches and one by one (same concurrency, same run).
    pub batch_vs_single: Option<(f64, f64)>,
    /// `--list-rows`: list queries on a large projection.
    pub lists: Option<super::lists::ListFigures>,
    /// `--console-rows`: console pages on a large projection.
    pub console: Option<super::lists::ListFigures>,
    /// `--repeat`: how every pair read, in the order run; `raw` and `system` are then
    /// the median pair.
    pub pairs: Pairs,
}

/// How each pair of a `--repeat` run read, in the order run.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Pairs {
    /// One pair was run.
    #[default]
    One,
    /// Closed loop and batches: completed jobs/s, system ÷ raw loop.
    Ratios(Vec<f64>),
    /// Open loop: p99 ms to `succeeded` of the raw loop and of jobstream (to the SSE
    /// event when there is one, else to the row). Both loops complete exactly the
    /// offered rate, so a ratio of rates would say nothing.
    P99s(Vec<(f64, f64)>),
}

impl Pairs {
    /// Each pair's reading, and the index of the pair to report: the median ratio, or in
    /// an open loop the median of jobstream's p99 (a pair with no latency ranks last).
    pub fn of(open_loop: bool, pairs: &[(RunFigures, RunFigures)]) -> (Self, usize) {
        if open_loop {
            let p99s: Vec<(f64, f64)> = pairs
                .iter()
                .map(|(raw, sys)| (end_to_end_p99(raw), end_to_end_p99(sys)))
                .collect();
            let ranked: Vec<f64> = p99s.iter().map(|p| p.1).collect();
            (Pairs::P99s(p99s), median_index(&ranked))
        } else {
            let ratios: Vec<f64> = pairs
                .iter()
                .map(|(raw, sys)| sys.completed_per_sec / raw.completed_per_sec.max(1e-9))
                .collect();
            let i = median_index(&ratios);
            (Pairs::Ratios(ratios), i)
        }
    }

    fn render(&self) -> Option<String> {
        match self {
            Pairs::One => None,
            Pairs::Ratios(ratios) => Some(format!(
                "  {} pairs run, completed jobs/s ratios {} (in the order run); the figures are the median pair's",
                ratios.len(),
                ratios
                    .iter()
                    .map(|r| format!("{r:.3}×"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            Pairs::P99s(p99s) => Some(format!(
                "  {} pairs run, p99 ms raw loop / jobstream {} (in the order run); the figures are the pair's with jobstream's median p99",
                p99s.len(),
                p99s.iter()
                    .map(|(raw, sys)| format!("{} / {}", num(*raw), num(*sys)))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }
}

/// p99 ms submission → `succeeded` as far as the run measured it: to the SSE event when
/// it had a subscriber, else to the row (NaN without figures).
fn end_to_end_p99(f: &RunFigures) -> f64 {
    f.sse_latency.or(f.latency).map_or(f64::NAN, |p| p.p99)
}

/// Index of the median of `values` (the lower of the two middle ones for an even count;
/// NaN sorts last).
fn median_index(values: &[f64]) -> usize {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    order[(order.len().saturating_sub(1)) / 2]
}

fn num(v: f64) -> String {
    if v >= 100.0 {
        let s = format!("{v:.0}");
        // Thousands separators, for reading large rates at a glance.
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(c);
        }
        out
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), num)
}

fn lat(p: Option<Percentiles>) -> String {
    p.map_or_else(
        || "-".to_owned(),
        |p| {
            format!(
                "{} / {} / {} / {}",
                num(p.p50),
                num(p.p95),
                num(p.p99),
                num(p.max)
            )
        },
    )
}

impl Report {
    /// The report as printed: a table of the two runs with their ratio, then the processes.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let empty = RunFigures::default();
        let raw = self.raw.as_ref();
        let sys = self.system.as_ref();
        if raw.is_none() && sys.is_none() {
            // A run that measures something else (`--fan-out`) says it all in its title.
            return format!("{}\n", self.title);
        }
        let ratio = |f: fn(&RunFigures) -> Option<f64>| match (raw.and_then(f), sys.and_then(f)) {
            (Some(r), Some(s)) if r > 0.0 => format!("{:.3}×", s / r),
            _ => "-".to_owned(),
        };
        let _ = writeln!(out, "{}", self.title);
        let _ = writeln!(
            out,
            "{:<34} {:>18} {:>22} {:>9}",
            "", "raw JetStream loop", "jobstream end to end", "ratio"
        );
        let mut row = |name: &str, f: fn(&RunFigures) -> Option<f64>| {
            let _ = writeln!(
                out,
                "{name:<34} {:>18} {:>22} {:>9}",
                opt(raw.and_then(f)),
                opt(sys.and_then(f)),
                ratio(f)
            );
        };
        row("completed jobs/s", |r| Some(r.completed_per_sec));
        row("submitted jobs/s", |r| Some(r.submitted_per_sec));
        row("stream messages per job", |r| r.stream_msgs_per_job);
        row("stream bytes per job", |r| r.stream_bytes_per_job);
        // Under `sync_interval: always` both runs are bound by the fsyncs the disk does per second.
        row("stream writes/s", |r| {
            r.stream_msgs_per_job.map(|m| m * r.completed_per_sec)
        });
        row("CPU µs per job, in all", RunFigures::system_cpu_us_per_job);
        let _ = writeln!(out);
        let _ = writeln!(out, "submit→succeeded, ms (p50 / p95 / p99 / max):");
        let _ = writeln!(
            out,
            "  raw loop (raw projector sees it)   {}",
            lat(raw.unwrap_or(&empty).latency)
        );
        let _ = writeln!(
            out,
            "  jobstream, SQL rows                {}",
            lat(sys.unwrap_or(&empty).latency)
        );
        if sys.is_some_and(|s| s.sse_latency.is_some()) {
            let _ = writeln!(
                out,
                "  jobstream, SSE `succeeded`         {}",
                lat(sys.unwrap_or(&empty).sse_latency)
            );
        }
        if let (Some(on), Some(off)) = (sys, self.metrics_off.as_ref())
            && off.completed_per_sec > 0.0
        {
            let _ = writeln!(out);
            let _ = writeln!(
                out,
                "metrics on / off, completed jobs/s  {:>7} / {} = {:.1}%  (must stay ≥ 97%)",
                num(on.completed_per_sec),
                num(off.completed_per_sec),
                100.0 * on.completed_per_sec / off.completed_per_sec
            );
        }
        if let Some(s) = sys.filter(|s| s.shed > 0) {
            let offered = s.shed + s.jobs;
            let _ = writeln!(
                out,
                "  shed by admission control (429)    {} of {offered} offered ({:.1} %)",
                s.shed,
                s.shed as f64 * 100.0 / offered.max(1) as f64
            );
        }
        if let Some(line) = self.pairs.render() {
            let _ = writeln!(out, "{line}");
        }
        for (name, run) in [("raw loop", raw), ("jobstream", sys)] {
            if let Some((first, last)) = run.and_then(|r| r.tenths) {
                let _ = writeln!(
                    out,
                    "  {name}: completed jobs/s, first tenth {} → last tenth {} ({:+.1} %)",
                    num(first),
                    num(last),
                    (last / first.max(1e-9) - 1.0) * 100.0
                );
            }
        }
        if let Some((batch, single)) = self.batch_vs_single {
            let _ = writeln!(
                out,
                "batch submit {} jobs/s vs one by one {} jobs/s: {:.2}×",
                num(batch),
                num(single),
                batch / single.max(1e-9)
            );
        }
        for (what, figures) in [
            ("list queries", &self.lists),
            ("console pages", &self.console),
        ] {
            let Some(l) = figures else { continue };
            let _ = writeln!(out);
            let _ = writeln!(
                out,
                "{what} on {} seeded rows (seeded in {:.1} s), ms (p50 / p95 / p99 / max):",
                num(l.rows as f64),
                l.seeded_in.as_secs_f64()
            );
            for (query, p) in &l.queries {
                let _ = writeln!(out, "  {query:<58} {}", lat(*p));
            }
        }
        for (name, run) in [("raw loop", raw), ("jobstream", sys)] {
            let Some(run) = run.filter(|r| !r.processes.is_empty()) else {
                continue;
            };
            let _ = writeln!(out);
            let _ = writeln!(
                out,
                "{:<40} {:>11} {:>10}",
                format!("{name} processes ({} jobs)", run.jobs),
                "CPU µs/job",
                "RSS MiB"
            );
            for p in &run.processes {
                let _ = writeln!(
                    out,
                    "  {:<38} {:>11} {:>10}",
                    p.role,
                    num(p.cpu_us_per_job),
                    num(p.rss_mib)
                );
            }
        }
        out
    }
}

/// Elapsed seconds as a rate divisor (never zero).
pub fn per_sec(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(1e-6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reported_pair_is_the_one_with_the_median_ratio() {
        // Ratios 0.30, 0.35, 0.25: the median is the first pair's.
        assert_eq!(median_index(&[0.30, 0.35, 0.25]), 0);
        // An even count takes the lower middle: ratios 0.4, 0.1, 0.3, 0.2 → 0.2.
        assert_eq!(median_index(&[0.4, 0.1, 0.3, 0.2]), 3);
        assert_eq!(median_index(&[0.2]), 0);
    }

    fn pair(raw_rate: f64, sys_rate: f64, sys_p99: Option<f64>) -> (RunFigures, RunFigures) {
        let p99 = |p99| Percentiles {
            p50: 1.0,
            p95: p99,
            p99,
            max: p99,
            count: 100,
        };
        let raw = RunFigures {
            completed_per_sec: raw_rate,
            latency: Some(p99(4.0)),
            ..Default::default()
        };
        let sys = RunFigures {
            completed_per_sec: sys_rate,
            latency: Some(p99(2.0)),
            sse_latency: sys_p99.map(p99),
            ..Default::default()
        };
        (raw, sys)
    }

    #[test]
    fn an_open_loop_reports_the_pair_with_the_median_p99_to_the_sse_event() {
        // Every pair completes the offered 1,000 jobs/s: the rates cannot rank them.
        let pairs = [
            pair(1000.0, 1000.0, Some(31.3)),
            pair(1000.0, 999.0, Some(60.0)),
            pair(1000.0, 1001.0, Some(13.3)),
        ];
        let (read, i) = Pairs::of(true, &pairs);
        assert_eq!(i, 0, "{read:?}");
        assert_eq!(
            read,
            Pairs::P99s(vec![(4.0, 31.3), (4.0, 60.0), (4.0, 13.3)])
        );
        let line = read.render().expect("a line for three pairs");
        assert!(line.contains("3 pairs run"), "{line}");
        assert!(
            line.contains("4.00 / 31.3, 4.00 / 60.0, 4.00 / 13.3"),
            "{line}"
        );
        // A closed loop ranks the same pairs by their ratio: 1001/1000 is the largest.
        let (read, i) = Pairs::of(false, &pairs);
        assert_eq!(i, 0, "{read:?}");
        assert!(matches!(read, Pairs::Ratios(r) if r.len() == 3));
        // Without an SSE subscriber the row's p99 ranks; a pair without figures ranks last.
        let mut no_sse = [
            pair(1000.0, 1000.0, None),
            pair(1000.0, 1000.0, None),
            pair(1000.0, 1000.0, None),
        ];
        no_sse[0].1.latency.as_mut().expect("set above").p99 = 5.0;
        no_sse[1].1.latency = None;
        no_sse[2].1.latency.as_mut().expect("set above").p99 = 3.0;
        // 5.0, none, 3.0: the median is 5.0 only if the pair without figures ranks last.
        let (read, i) = Pairs::of(true, &no_sse);
        assert_eq!(i, 0, "{read:?}");
    }

    #[test]
    fn reads_cpu_ticks_after_a_command_name_with_spaces() {
        let stat = "4242 (tokio (rt) x) S 1 4242 4242 0 -1 4194560 1097 0 0 0 37 5 0 0 20 0 9 0 123 456 789";
        assert_eq!(cpu_ticks_of_stat(stat), Some(42));
        assert_eq!(cpu_ticks_of_stat("garbage"), None);
    }

    #[test]
    fn reads_rss() {
        let status = "Name:\tnats-server\nVmPeak:\t  999 kB\nVmRSS:\t   20480 kB\nThreads:\t9\n";
        assert_eq!(rss_kib_of_status(status), Some(20_480));
    }

    #[test]
    fn this_process_can_be_sampled() {
        let s = sample(std::process::id()).expect("/proc of this process");
        assert!(s.rss_kib > 0);
    }

    #[test]
    fn percentiles_and_ratios() {
        let p = Percentiles::of((1..=100).map(f64::from).collect()).expect("samples");
        assert_eq!((p.p50, p.p99, p.max, p.count), (51.0, 99.0, 100.0, 100));
        assert!(Percentiles::of(vec![]).is_none());
        let fig = ProcFigures::between(
            "api",
            ProcSample {
                cpu_ticks: 100,
                rss_kib: 1,
            },
            ProcSample {
                cpu_ticks: 150,
                rss_kib: 2048,
            },
            100,
            1000,
        );
        // 50 ticks = 0.5 s over 1000 jobs = 500 µs per job.
        assert!((fig.cpu_us_per_job - 500.0).abs() < 1e-9);
        assert!((fig.rss_mib - 2.0).abs() < 1e-9);
        let report = Report {
            title: "t".into(),
            raw: Some(RunFigures {
                completed_per_sec: 2000.0,
                ..Default::default()
            }),
            system: Some(RunFigures {
                completed_per_sec: 500.0,
                ..Default::default()
            }),
            metrics_off: Some(RunFigures {
                completed_per_sec: 520.0,
                ..Default::default()
            }),
            ..Default::default()
        };
        let text = report.render();
        assert!(text.contains("0.250×"), "{text}");
        assert!(
            text.contains("metrics on / off, completed jobs/s      500 / 520 = 96.2%"),
            "{text}"
        );
        assert!(text.contains("2,000"), "{text}");
    }
}
