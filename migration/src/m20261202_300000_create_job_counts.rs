//! `job_counts`: how many jobs each (queue, owner, status) holds, kept by the projector
//! with every batch (the console's overview and `GET /v1/queues` read it instead of
//! counting a million rows); the index a user's overview counts their finished jobs of
//! the last hour by, and the ones the job list's queue + kind filter needs.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum JobCounts {
    Table,
    Queue,
    Owner,
    Status,
    Jobs,
}

#[derive(DeriveIden)]
enum QueuedJobs {
    Table,
    Id,
    Queue,
    Owner,
    Status,
    Kind,
    FinishedAt,
}

/// `(name, columns)` of the indexes added here.
fn indexes() -> [(&'static str, Vec<QueuedJobs>); 3] {
    use QueuedJobs::*;
    [
        // As `(status, finished_at)` does for an admin's, without reading the rows.
        (
            "idx_queued_jobs_owner_status_finished_at",
            vec![Owner, Status, FinishedAt],
        ),
        // The list's: like the others, ending with `id`, its order and cursor.
        ("idx_queued_jobs_queue_kind_id", vec![Queue, Kind, Id]),
        (
            "idx_queued_jobs_owner_queue_kind_id",
            vec![Owner, Queue, Kind, Id],
        ),
    ]
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(JobCounts::Table)
                    .if_not_exists()
                    .col(string_len(JobCounts::Queue, 64))
                    .col(string_len(JobCounts::Owner, 255))
                    .col(string_len(JobCounts::Status, 16))
                    .col(big_integer(JobCounts::Jobs))
                    .primary_key(
                        Index::create()
                            .col(JobCounts::Queue)
                            .col(JobCounts::Owner)
                            .col(JobCounts::Status),
                    )
                    .to_owned(),
            )
            .await?;
        // A projection that already holds jobs starts with their counts.
        let existing = Query::select()
            .columns([QueuedJobs::Queue, QueuedJobs::Owner, QueuedJobs::Status])
            .expr(Expr::col(QueuedJobs::Id).count())
            .from(QueuedJobs::Table)
            .group_by_columns([QueuedJobs::Queue, QueuedJobs::Owner, QueuedJobs::Status])
            .to_owned();
        let fill = Query::insert()
            .into_table(JobCounts::Table)
            .columns([
                JobCounts::Queue,
                JobCounts::Owner,
                JobCounts::Status,
                JobCounts::Jobs,
            ])
            .select_from(existing)
            .map_err(|e| DbErr::Migration(e.to_string()))?
            .to_owned();
        manager.exec_stmt(fill).await?;
        for (name, columns) in indexes() {
            let mut index = Index::create();
            index.name(name).table(QueuedJobs::Table).if_not_exists();
            for c in columns {
                index.col(c);
            }
            manager.create_index(index.to_owned()).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for (name, _) in indexes() {
            manager
                .drop_index(Index::drop().name(name).table(QueuedJobs::Table).to_owned())
                .await?;
        }
        manager
            .drop_table(Table::drop().table(JobCounts::Table).to_owned())
            .await
    }
}
