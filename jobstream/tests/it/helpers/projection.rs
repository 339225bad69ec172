//! The projection as a test sees it: rows, checkpoints, and waits that wake when the
//! projector commits (its applied-sequence watch) instead of polling.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use jobstream_api::jobs::JobView;
use jobstream_entity::user as user_row;
use jobstream_entity::{projector_checkpoint, queued_job, rejected_event};
use jobstream_testkit::eventually;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder};
use serde_json::Value;
use tokio::sync::watch;
use tokio::time::Instant;
use uuid::Uuid;

use super::{TestApp, WAIT};

/// Longest pause between two checks of a wait on the projection. The projector's watch
/// wakes a wait as soon as a batch commits; this bound covers what it does not announce
/// (the TTL sweep, a replay's table swap, a projector a test built itself).
const RECHECK: Duration = Duration::from_millis(100);

/// Waits for the projector's next commit, or [`RECHECK`] at most. Once that projector
/// is gone (a test stopped or killed it) it waits the bound: a poll, for the changes no
/// commit announces.
async fn next_commit(applied: &mut watch::Receiver<u64>) {
    if let Ok(Err(_stopped)) = tokio::time::timeout(RECHECK, applied.changed()).await {
        tokio::time::sleep(RECHECK).await;
    }
}

impl TestApp {
    /// Waits until `check` yields `Some`, checking again each time the projector commits
    /// (at least every [`RECHECK`]); panics after [`WAIT`] naming `what`. Without a
    /// projector started by [`Self::start_projector`] it polls like `eventually`.
    pub(crate) async fn when_projected<T, F, Fut>(&self, what: &str, check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        self.when_projected_within(what, WAIT, check).await
    }

    /// [`Self::when_projected`], giving up after `within`.
    pub(crate) async fn when_projected_within<T, F, Fut>(
        &self,
        what: &str,
        within: Duration,
        mut check: F,
    ) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        let Some(mut applied) = self.applied.clone() else {
            return eventually(what, within, check).await;
        };
        let deadline = Instant::now() + within;
        loop {
            applied.borrow_and_update();
            if let Some(v) = check().await {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {within:?} waiting for {what}"
            );
            next_commit(&mut applied).await;
        }
    }

    /// The projected row of a job, once it satisfies `pred`.
    pub(crate) async fn wait_for_row(
        &self,
        id: &str,
        what: &str,
        pred: impl Fn(&queued_job::Model) -> bool,
    ) -> queued_job::Model {
        self.when_projected(what, || async {
            queued_job::Entity::find_by_id(id.to_owned())
                .one(&self.db.conn)
                .await
                .expect("query")
                .filter(|r| pred(r))
        })
        .await
    }

    /// Waits until `n` rows have `status`.
    pub(crate) async fn wait_for_count(&self, status: &str, n: u64) {
        self.wait_for_count_within(status, n, WAIT).await;
    }

    /// [`Self::wait_for_count`], giving up after `within`.
    pub(crate) async fn wait_for_count_within(&self, status: &str, n: u64, within: Duration) {
        self.when_projected_within(&format!("{n} jobs {status}"), within, || async {
            let c = queued_job::Entity::find()
                .filter(queued_job::Column::Status.eq(status))
                .count(&self.db.conn)
                .await
                .expect("count");
            (c >= n).then_some(())
        })
        .await;
    }

    /// `GET /v1/jobs/{id}` once the job, as the API shows it, satisfies `pred`.
    pub(crate) async fn wait_for_job(
        &self,
        token: &str,
        id: &str,
        what: &str,
        pred: impl Fn(&JobView) -> bool,
    ) -> JobView {
        self.when_projected(what, || async {
            self.job(token, id).await.filter(|job| pred(job))
        })
        .await
    }

    /// Submits a job and waits until it has finished (succeeded or failed); returns its row.
    pub(crate) async fn run_job(&self, token: &str, body: &Value) -> queued_job::Model {
        let id = self.submit_job(token, body).await.id.to_string();
        self.wait_for_row(&id, &format!("job {body} to finish"), |r| {
            r.status == "succeeded" || r.status == "failed"
        })
        .await
    }

    /// Waits until `more` submissions beyond `accepted`'s current count were accepted
    /// and some job is running.
    pub(crate) async fn busy(&self, accepted: &Mutex<Vec<String>>, more: usize) {
        let want = accepted.lock().unwrap().len() + more;
        eventually("more submissions accepted", WAIT, || async {
            (accepted.lock().unwrap().len() >= want).then_some(())
        })
        .await;
        self.when_projected("jobs running", || async {
            self.rows()
                .await
                .iter()
                .any(|r| r.status == "running")
                .then_some(())
        })
        .await;
    }

    /// The projected user `id`, once it is there.
    pub(crate) async fn wait_for_user(&self, id: Uuid) -> user_row::Model {
        self.when_projected("users row", || async {
            user_row::Entity::find_by_id(id.to_string())
                .one(&self.db.conn)
                .await
                .expect("query")
        })
        .await
    }

    /// Every row of the projection, by id.
    pub(crate) async fn rows(&self) -> Vec<queued_job::Model> {
        queued_job::Entity::find()
            .order_by_asc(queued_job::Column::Id)
            .all(&self.db.conn)
            .await
            .expect("rows")
    }

    /// Waits until every job of `ids` is projected `succeeded`; on timeout says how
    /// many were not and the status of a few.
    pub(crate) async fn wait_all_succeeded(&self, ids: &[String], within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let rows = self.rows().await;
            let done: HashSet<&str> = rows
                .iter()
                .filter(|r| r.status == "succeeded")
                .map(|r| r.id.as_str())
                .collect();
            let missing: Vec<&String> = ids
                .iter()
                .filter(|id| !done.contains(id.as_str()))
                .collect();
            if missing.is_empty() {
                return;
            }
            let ended_otherwise: Vec<_> = rows
                .iter()
                .filter(|r| matches!(r.status.as_str(), "failed" | "cancelled"))
                .filter(|r| missing.iter().any(|id| **id == r.id))
                .take(5)
                .map(|r| (r.id.clone(), r.status.clone(), r.error.clone()))
                .collect();
            assert!(
                ended_otherwise.is_empty(),
                "accepted jobs ended without succeeding: {ended_otherwise:?}"
            );
            if tokio::time::Instant::now() > deadline {
                let e_g: Vec<_> = missing
                    .iter()
                    .take(5)
                    .map(|id| {
                        rows.iter()
                            .find(|r| &&r.id == id)
                            .map(|r| (r.status.clone(), r.error.clone()))
                    })
                    .collect();
                panic!(
                    "after {within:?}: {} of {} accepted jobs not succeeded ({} rows); e.g. {e_g:?}",
                    missing.len(),
                    ids.len(),
                    rows.len()
                );
            }
            // A fixed pace, not each commit: every look reads thousands of rows, and one
            // per commit would load the very store the fold is writing to.
            tokio::time::sleep(RECHECK).await;
        }
    }

    /// The dead letters in the test database, by sequence.
    pub(crate) async fn rejected_seqs(&self, db: &sea_orm::DatabaseConnection) -> Vec<u64> {
        rejected_event::Entity::find()
            .order_by_asc(rejected_event::Column::Seq)
            .all(db)
            .await
            .expect("rejected_events")
            .into_iter()
            .map(|r| r.seq as u64)
            .collect()
    }

    /// The projector's committed checkpoint, read through the test's own pool.
    pub(crate) async fn committed(&self) -> u64 {
        projector_checkpoint::Entity::find_by_id("projector".to_owned())
            .one(&self.db.conn)
            .await
            .expect("checkpoint")
            .map_or(0, |c| c.last_seq as u64)
    }

    /// Waits until the projector's checkpoint reaches the stream's last sequence.
    pub(crate) async fn wait_projected(&self) -> u64 {
        let last = self.stream_last().await;
        let what = format!("projection at seq {last}");
        self.when_projected_within(&what, WAIT * 2, || async {
            (self.committed().await >= last).then_some(())
        })
        .await;
        last
    }

    /// The projector consumer's ack floor (stream sequence) must never pass the checkpoint.
    pub(crate) async fn assert_acks_within_checkpoint(&self) {
        let info = self
            .broker
            .stream()
            .await
            .expect("stream")
            .consumer_info("projector")
            .await
            .expect("consumer info");
        let committed = self.committed().await;
        assert!(
            info.ack_floor.stream_sequence <= committed,
            "acked up to {} but committed only {committed}",
            info.ack_floor.stream_sequence
        );
    }
}
