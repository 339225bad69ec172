//! One module per console page; each exposes its routes through [`router`].

mod auth;
mod data;
mod events;
mod job;
mod jobs;
mod lists;
mod overview;
mod queues;
mod workflows;

use axum::Router;
use axum::routing::{get, post};
use chrono::{DateTime, Utc};

use crate::state::AppState;

/// Every page's routes.
pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/ui", get(overview::page))
        .route("/ui/", get(overview::page))
        .route("/ui/login", get(auth::form).post(auth::login))
        .route("/ui/logout", post(auth::logout))
        .route("/ui/jobs", get(jobs::page))
        .route("/ui/jobs/bulk", post(jobs::bulk))
        .route("/ui/jobs/{id}", get(job::page))
        .route("/ui/jobs/{id}/{action}", post(job::act))
        .route("/ui/files/{id}", get(job::file))
        .route(
            "/ui/schedules",
            get(lists::schedules).post(lists::create_schedule),
        )
        .route("/ui/schedules/{name}/run", post(lists::run_schedule))
        .route("/ui/schedules/{name}/delete", post(lists::delete_schedule))
        .route("/ui/schedules/{name}/pause", post(lists::pause_schedule))
        .route("/ui/schedules/{name}/resume", post(lists::resume_schedule))
        .route("/ui/workflows", get(workflows::list))
        .route("/ui/workflows/{id}", get(workflows::page))
        .route("/ui/workflows/{id}/{action}", post(workflows::act))
        .route("/ui/queues", get(queues::page))
        .route("/ui/queues/{name}/{action}", post(queues::act))
        .route("/ui/workers", get(queues::workers))
        .route("/ui/kinds", get(lists::kinds))
        .route("/ui/users", get(lists::users))
        .route("/ui/events", get(events::page))
        .route("/ui/operations", get(lists::operations))
        .route("/ui/operations/replay", post(lists::start_replay))
        .route("/ui/operations/verify", post(lists::start_verify))
        .route("/ui/data", get(data::tables_page))
        .route("/ui/data/sql", get(data::sql_form).post(data::sql_run))
        .route("/ui/data/{table}", get(data::rows))
}

/// A time as the console shows it (UTC, to the second).
pub(super) fn when(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// An optional time, or a dash.
pub(super) fn when_opt(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(|| "–".to_owned(), when)
}

/// A duration as people read it: `850 ms`, `12 s`, `4 min`, `3 h`, `2 d`.
pub(super) fn span(d: chrono::Duration) -> String {
    let ms = d.num_milliseconds().max(0);
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..120_000 => format!("{} s", ms / 1_000),
        120_000..7_200_000 => format!("{} min", ms / 60_000),
        7_200_000..172_800_000 => format!("{} h", ms / 3_600_000),
        _ => format!("{} d", ms / 86_400_000),
    }
}
