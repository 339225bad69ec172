//! `/ui`: the overview, live.

use askama::Template;
use axum::extract::State;
use axum::response::Html;
use chrono::Utc;
use jobstream_core::JobStatus;

use super::{span, when};
use crate::jobs::stats::{BUCKET, Bucket};
use crate::state::AppState;
use crate::ui::{Chrome, Session, UiError, render};

/// One queue's row.
struct QueueRow {
    name: String,
    counts: Vec<u64>,
    oldest_waiting: String,
}

/// One bar of the chart, in SVG units.
struct Bar {
    x: u32,
    ok_y: u32,
    ok_h: u32,
    fail_y: u32,
    fail_h: u32,
    succeeded: u64,
    failed: u64,
    label: String,
}

/// The last hour's chart.
struct Chart {
    width: u32,
    height: u32,
    bar_width: u32,
    bars: Vec<Bar>,
}

/// One failure group.
struct Failure {
    kind: String,
    error: String,
    count: u64,
}

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage {
    chrome: Chrome,
    now: String,
    lag: String,
    statuses: Vec<&'static str>,
    queues: Vec<QueueRow>,
    chart: Chart,
    finished: u64,
    failed: u64,
    failure_rate: String,
    failures: Vec<Failure>,
}

const CHART_HEIGHT: u32 = 80;
const BAR_WIDTH: u32 = 24;
const BAR_GAP: u32 = 4;

/// `GET /ui`.
#[tracing::instrument(skip_all, fields(sub = %session.sub))]
pub(super) async fn page(
    State(state): State<AppState>,
    session: Session,
) -> Result<Html<String>, UiError> {
    let now = Utc::now();
    let caller = session.caller();
    let overview = state.jobs().overview(&caller, now).await?;
    let statuses: Vec<&'static str> = JobStatus::ALL.iter().map(|s| s.as_str()).collect();
    let queues = state
        .queues()
        .job_counts(&caller)
        .await?
        .iter()
        .map(|q| QueueRow {
            name: q.queue.clone(),
            counts: statuses
                .iter()
                .map(|s| q.counts.get(*s).copied().unwrap_or(0))
                .collect(),
            oldest_waiting: q
                .oldest_waiting
                .map_or_else(|| "–".to_owned(), |t| span(now - t)),
        })
        .collect();
    let finished: u64 = overview
        .buckets
        .iter()
        .map(|b| b.succeeded + b.failed)
        .sum();
    let failed: u64 = overview.buckets.iter().map(|b| b.failed).sum();
    let failure_rate = if finished == 0 {
        "no failure rate yet".to_owned()
    } else {
        format!("{:.1}% failed", failed as f64 * 100.0 / finished as f64)
    };
    let page = OverviewPage {
        chrome: Chrome::new(&session, &state.console, "overview"),
        now: when(now),
        lag: projector_lag(&state).await,
        statuses,
        queues,
        chart: chart(&overview.buckets),
        finished,
        failed,
        failure_rate,
        failures: overview
            .failures
            .into_iter()
            .map(|f| Failure {
                kind: f.kind,
                error: f.error,
                count: f.count,
            })
            .collect(),
    };
    render(&page)
}

/// Stacked bars, scaled to the busiest bucket.
fn chart(buckets: &[Bucket]) -> Chart {
    let max = buckets
        .iter()
        .map(|b| b.succeeded + b.failed)
        .max()
        .unwrap_or(0)
        .max(1);
    let scale = |n: u64| u32::try_from(n * u64::from(CHART_HEIGHT) / max).unwrap_or(CHART_HEIGHT);
    let bars = buckets
        .iter()
        .zip(0u32..)
        .map(|(b, i)| {
            let ok_h = scale(b.succeeded);
            let fail_h = scale(b.failed);
            let fail_y = CHART_HEIGHT - fail_h;
            Bar {
                x: i * (BAR_WIDTH + BAR_GAP),
                ok_y: fail_y.saturating_sub(ok_h),
                ok_h,
                fail_y,
                fail_h,
                succeeded: b.succeeded,
                failed: b.failed,
                label: format!(
                    "{}–{}",
                    b.start.format("%H:%M"),
                    (b.start + BUCKET).format("%H:%M")
                ),
            }
        })
        .collect::<Vec<_>>();
    Chart {
        width: u32::try_from(bars.len()).unwrap_or(0) * (BAR_WIDTH + BAR_GAP),
        height: CHART_HEIGHT,
        bar_width: BAR_WIDTH,
        bars,
    }
}

/// How far the projection trails the stream, in events.
async fn projector_lag(state: &AppState) -> String {
    let js = state.broker.jetstream();
    let last = match crate::routes::health::stream_info(js, state.broker.stream_name()).await {
        Ok(info) => info.state.last_sequence,
        Err(e) => return format!("lag unknown ({e})"),
    };
    match crate::routes::health::projector_checkpoint(state, &state.readiness.projector).await {
        Ok(applied) => {
            let lag = last.saturating_sub(applied);
            if lag == 0 {
                "up to date".to_owned()
            } else {
                format!("{lag} events behind the stream")
            }
        }
        Err(e) => format!("lag unknown ({e})"),
    }
}
