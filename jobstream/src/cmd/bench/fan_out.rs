//! `jobstream bench --fan-out N`: N steps fanned out with a fan-in callback against N
//! independent jobs, in the same run on the same system.
//!
//! A workflow holds at most 1,000 steps, so the fan-out is split into chords of 999
//! echo steps and one callback each (whose payload takes every header step's result
//! through `$from`), all submitted at once. The independent jobs go in batches of
//! 1,000. Each phase is timed from its first request until the projection shows every
//! job succeeded; the target is a fan-out at most 1.5x the independent jobs' time.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};

use super::load::{Api, Rows};

/// Header steps per chord (one more step is the callback).
const CHORD_HEADER: usize = 999;
/// Requests in flight.
const IN_FLIGHT: usize = 2;

/// The two phases' times.
pub(crate) struct FanOutFigures {
    /// Steps fanned out.
    pub(crate) steps: usize,
    /// N independent jobs, submit to all succeeded.
    pub(crate) independent: Duration,
    /// N steps in chords with their callbacks, submit to all succeeded.
    pub(crate) fan_out: Duration,
    /// Chords used.
    pub(crate) chords: usize,
}

impl FanOutFigures {
    /// The report's lines.
    pub(crate) fn render(&self) -> String {
        let ratio = self.fan_out.as_secs_f64() / self.independent.as_secs_f64().max(1e-9);
        format!(
            "{} independent echo jobs: {:.2} s\n{} echo steps in {} chords with fan-in callbacks: {:.2} s\nratio {ratio:.2}x (target at most 1.5x): {}",
            self.steps,
            self.independent.as_secs_f64(),
            self.steps,
            self.chords,
            self.fan_out.as_secs_f64(),
            if ratio <= 1.5 { "met" } else { "NOT met" }
        )
    }
}

async fn post(api: &Api, path: &str, body: Value) -> anyhow::Result<()> {
    let r = api
        .http
        .post(format!("{}{path}", api.base))
        .header("Authorization", &api.auth)
        .json(&body)
        .send()
        .await?;
    let status = r.status();
    anyhow::ensure!(
        status.as_u16() == 202,
        "{path}: {status}: {}",
        r.text().await?
    );
    Ok(())
}

/// Submits every body to `path`, `IN_FLIGHT` at once.
async fn submit_all(api: &Api, path: &str, bodies: Vec<Value>) -> anyhow::Result<()> {
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(bodies)
        .map(|b| post(api, path, b))
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    results.into_iter().collect()
}

/// Waits until `owner` has `n` succeeded jobs.
async fn until_succeeded(
    rows: &Rows,
    owner: &str,
    n: usize,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if rows.count_succeeded(owner).await? >= n {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "not all {n} jobs succeeded within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs both phases for `owner` (whose jobs the projection counts).
pub(crate) async fn compare(
    api: &Api,
    rows: &Rows,
    owner: &str,
    steps: usize,
    timeout: Duration,
) -> anyhow::Result<FanOutFigures> {
    anyhow::ensure!(steps > 0, "--fan-out must be at least 1");
    eprintln!("{steps} independent echo jobs");
    let batches: Vec<Value> = (0..steps)
        .collect::<Vec<_>>()
        .chunks(1000)
        .map(|c| json!({"jobs": c.iter().map(|i| json!({"kind": "echo", "payload": {"i": i}})).collect::<Vec<_>>()}))
        .collect();
    let t = Instant::now();
    submit_all(api, "/v1/jobs/batch", batches).await?;
    until_succeeded(rows, owner, steps, timeout).await?;
    let independent = t.elapsed();

    let chords: Vec<Value> = (0..steps)
        .collect::<Vec<_>>()
        .chunks(CHORD_HEADER)
        .map(|c| {
            let header: Vec<Value> = c
                .iter()
                .map(|i| json!({"id": format!("s{i}"), "kind": "echo", "payload": {"i": i}}))
                .collect();
            let collected: Vec<Value> = c
                .iter()
                .map(|i| json!({"$from": format!("s{i}.result.i")}))
                .collect();
            json!({"name": "fan-out", "chord": {"header": header,
                   "callback": {"kind": "echo", "payload": {"collected": collected}}}})
        })
        .collect();
    let n_chords = chords.len();
    eprintln!("{steps} echo steps in {n_chords} chords with fan-in callbacks");
    let t = Instant::now();
    submit_all(api, "/v1/workflows", chords).await?;
    until_succeeded(rows, owner, 2 * steps + n_chords, timeout).await?;
    Ok(FanOutFigures {
        steps,
        independent,
        fan_out: t.elapsed(),
        chords: n_chords,
    })
}
