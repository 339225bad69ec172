//! `--console-rows N`: every console page on a large projection (the bound: p99 ≤
//! 50 ms per page with 1M jobs). Seeds N job rows straight into SQL (multi-row INSERTs,
//! as `--list-rows` does: only the rows matter here), shaped like a busy day — mostly
//! succeeded, finished over the last day (the default job TTL; the overview charts the
//! last hour of it), some failed with a handful of errors, a few still queued — half of
//! them the bench user's.
//! Then logs in to the console as that user and as an admin and requests every page
//! [`REQUESTS`] times, one at a time, timing each until its body is read.

use std::time::{Duration, Instant};

use chrono::Utc;
use sea_orm::DatabaseConnection;
use sea_orm::sea_query::Expr;

use super::lists::{ListFigures, insert_job_rows, time_gets};
use super::report::Percentiles;

/// Requests per page, one at a time.
pub(crate) const REQUESTS: usize = 100;

/// Owner, status, kind, queue, error and minutes-before-now of the finish of seeded row
/// `i` (`None` for a row not finished).
fn shape(
    i: usize,
    user: &str,
) -> (
    &str,
    &'static str,
    &'static str,
    &'static str,
    Option<String>,
    Option<i64>,
) {
    let owner = if i.is_multiple_of(2) {
        user
    } else {
        "someone-else"
    };
    let queue = if i.is_multiple_of(10) {
        "critical"
    } else {
        "default"
    };
    let kind = if i.is_multiple_of(20) {
        "email"
    } else {
        "echo"
    };
    // Finished over the last day (the default job TTL, past which the sweep removes them).
    let minutes = i64::try_from(i % 1440).unwrap_or(0);
    let (status, error, finished) = if i.is_multiple_of(97) {
        ("queued", None, None)
    } else if i.is_multiple_of(50) {
        (
            "failed",
            Some(format!("handler error {}", i % 7)),
            Some(minutes),
        )
    } else {
        ("succeeded", None, Some(minutes))
    };
    (owner, status, kind, queue, error, finished)
}

/// Seeds `rows` jobs, half of them `user`'s; returns the id of one of the user's rows.
async fn seed(db: &DatabaseConnection, user: &str, rows: usize) -> anyhow::Result<String> {
    let columns = [
        "id",
        "queue",
        "kind",
        "owner",
        "status",
        "priority",
        "payload",
        "error",
        "attempt",
        "max_attempts",
        "timeout_ms",
        "created_at",
        "finished_at",
        "updated_at",
        "last_seq",
    ];
    let now = Utc::now();
    let payload = serde_json::json!({"to": "someone@example.com", "n": 1});
    insert_job_rows(db, rows, &columns, |i, id| {
        let (owner, status, kind, queue, error, finished) = shape(i, user);
        let finished_at = finished.map(|m| now - chrono::Duration::minutes(m));
        let created_at = finished_at.unwrap_or(now) - chrono::Duration::seconds(1);
        vec![
            Expr::val(id),
            Expr::val(queue),
            Expr::val(kind),
            Expr::val(owner),
            Expr::val(status),
            Expr::val("normal"),
            Expr::val(payload.clone()),
            Expr::val(error),
            Expr::val(1),
            Expr::val(3),
            Expr::val(30_000i64),
            Expr::val(created_at),
            Expr::val(finished_at),
            Expr::val(finished_at.unwrap_or(now)),
            Expr::val(0i64),
        ]
    })
    .await
}

/// A console session: a cookie from `POST /ui/login`.
struct Session {
    http: reqwest::Client,
    base: String,
    cookie: String,
}

impl Session {
    async fn login(base: &str, token: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let res = http
            .post(format!("{base}/ui/login"))
            .form(&[("token", token)])
            .send()
            .await?;
        anyhow::ensure!(
            res.status() == reqwest::StatusCode::SEE_OTHER,
            "console login: {}",
            res.status()
        );
        let cookie = res
            .headers()
            .get(reqwest::header::SET_COOKIE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .ok_or_else(|| anyhow::anyhow!("console login set no cookie"))?
            .to_owned();
        Ok(Session {
            http,
            base: base.to_owned(),
            cookie,
        })
    }

    /// `REQUESTS` sequential GETs of `path`, in ms.
    async fn time(&self, path: &str) -> anyhow::Result<Option<Percentiles>> {
        let cookie = ("cookie", self.cookie.as_str());
        time_gets(&self.http, &self.base, path, cookie, REQUESTS).await
    }
}

/// Seeds `rows` rows (half of them `owner`'s) and times every console page as `owner`
/// (with `user_token`) and as an admin (`admin_token`), against the API at `base`.
pub(crate) async fn measure(
    db: &DatabaseConnection,
    base: &str,
    (user_token, admin_token): (&str, &str),
    owner: &str,
    rows: usize,
) -> anyhow::Result<ListFigures> {
    eprintln!("console pages: seeding {rows} rows");
    let started = Instant::now();
    let job = seed(db, owner, rows).await?;
    let seeded_in: Duration = started.elapsed();
    let user = Session::login(base, user_token).await?;
    let admin = Session::login(base, admin_token).await?;
    let both = [
        "/ui".to_owned(),
        "/ui/jobs".to_owned(),
        "/ui/jobs?status=failed".to_owned(),
        "/ui/jobs?queue=critical&kind=email".to_owned(),
        format!("/ui/jobs?after={job}"),
        format!("/ui/jobs/{job}"),
        "/ui/schedules".to_owned(),
        "/ui/kinds".to_owned(),
        "/ui/events".to_owned(),
    ];
    let admin_only = [
        "/ui/queues",
        "/ui/workers",
        "/ui/users",
        "/ui/operations",
        "/ui/data",
        "/ui/data/queued_jobs",
        "/ui/data/sql",
    ];
    let mut queries = Vec::new();
    for (who, session) in [("user", &user), ("admin", &admin)] {
        for path in &both {
            eprintln!("console pages: {who} {path}");
            let p = session.time(path).await?;
            queries.push((format!("{who:<5} {}", path.replace(&job, "<a job>")), p));
        }
    }
    for path in admin_only {
        eprintln!("console pages: admin {path}");
        queries.push((format!("admin {path}"), admin.time(path).await?));
    }
    Ok(ListFigures {
        rows,
        seeded_in,
        queries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_has_every_shape_the_pages_show() {
        let shapes: Vec<_> = (0..1000).map(|i| shape(i, "me")).collect();
        assert!(shapes.iter().any(|s| s.1 == "queued" && s.5.is_none()));
        assert!(shapes.iter().any(|s| s.1 == "failed" && s.4.is_some()));
        assert!(shapes.iter().filter(|s| s.0 == "me").count() == 500);
        assert!(shapes.iter().any(|s| s.2 == "email" && s.3 == "critical"));
    }
}
