//! The `job_counts` table: jobs per (queue, owner, status), moved in the same transaction
//! as the job rows, so overviews read a few rows instead of counting a million.
//!
//! Every write to `queued_jobs` goes through the fold or the sweep, and both move
//! `Deltas`, so the counts always equal a `GROUP BY` over the rows; replay
//! rebuilds them with the rows, and [`rebuild`] recounts them for anything that wrote
//! rows by hand (the bench's seeder).

use std::collections::HashMap;

use jobstream_core::{JobState, JobStatus};
use jobstream_entity::{job_count, queued_job};
use sea_orm::sea_query::{Alias, Expr, ExprTrait, OnConflict, Query};
use sea_orm::{ConnectionTrait, DbErr, EntityTrait, IntoActiveModel};

/// Count changes of one batch, by (queue, owner, status).
#[derive(Debug, Default)]
pub(crate) struct Deltas(HashMap<(String, String, &'static str), i64>);

impl Deltas {
    /// A job went from `before` (`None`: it is new) to its state in `after`.
    pub(crate) fn job_changed(&mut self, before: Option<JobStatus>, after: &JobState) {
        if before == Some(after.status) {
            return;
        }
        let key = |status: JobStatus| {
            (
                after.spec.queue.to_string(),
                after.spec.owner.clone(),
                status.as_str(),
            )
        };
        if let Some(before) = before {
            *self.0.entry(key(before)).or_default() -= 1;
        }
        *self.0.entry(key(after.status)).or_default() += 1;
    }

    /// A job row with these columns was deleted.
    pub(crate) fn job_deleted(&mut self, queue: String, owner: String, status: &str) {
        if let Some(status) = JobStatus::parse(status) {
            *self.0.entry((queue, owner, status.as_str())).or_default() -= 1;
        }
    }

    /// Adds the changes to the table: one upsert per statement of rows.
    pub(crate) async fn write<C: ConnectionTrait>(self, db: &C) -> Result<(), DbErr> {
        use job_count::Column as C;
        let mut rows: Vec<job_count::Model> = self
            .0
            .into_iter()
            .filter(|(_, n)| *n != 0)
            .map(|((queue, owner, status), jobs)| job_count::Model {
                queue,
                owner,
                status: status.to_owned(),
                jobs,
            })
            .collect();
        // The same order in every transaction: PostgreSQL never deadlocks two writers on it.
        rows.sort_by(|a, b| (&a.queue, &a.owner, &a.status).cmp(&(&b.queue, &b.owner, &b.status)));
        for chunk in rows.chunks(super::apply::ROWS_PER_STATEMENT) {
            job_count::Entity::insert_many(
                chunk
                    .iter()
                    .cloned()
                    .map(IntoActiveModel::into_active_model),
            )
            .on_conflict(
                OnConflict::columns([C::Queue, C::Owner, C::Status])
                    .value(
                        C::Jobs,
                        Expr::col((job_count::Entity, C::Jobs))
                            .add(Expr::col((Alias::new("excluded"), C::Jobs))),
                    )
                    .to_owned(),
            )
            .exec_without_returning(db)
            .await?;
        }
        Ok(())
    }
}

/// Recounts the table from `queued_jobs`, for rows written without the projector.
pub async fn rebuild<C: ConnectionTrait>(db: &C) -> Result<(), DbErr> {
    use queued_job::Column as Q;
    job_count::Entity::delete_many().exec(db).await?;
    let counted = Query::select()
        .columns([Q::Queue, Q::Owner, Q::Status])
        .expr(Expr::col(Q::Id).count())
        .from(queued_job::Entity)
        .group_by_columns([Q::Queue, Q::Owner, Q::Status])
        .to_owned();
    let fill = Query::insert()
        .into_table(job_count::Entity)
        .columns([
            job_count::Column::Queue,
            job_count::Column::Owner,
            job_count::Column::Status,
            job_count::Column::Jobs,
        ])
        .select_from(counted)
        .map_err(|e| DbErr::Custom(e.to_string()))?
        .to_owned();
    db.execute(&fill).await?;
    Ok(())
}
