//! The console's overview counts jobs per queue and status and finds each queue's oldest
//! waiting job: one index answers both without reading the rows (issue 10).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum QueuedJobs {
    Table,
    Queue,
    Status,
    CreatedAt,
}

const NAME: &str = "idx_queued_jobs_queue_status_created_at";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name(NAME)
                    .table(QueuedJobs::Table)
                    .col(QueuedJobs::Queue)
                    .col(QueuedJobs::Status)
                    .col(QueuedJobs::CreatedAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(Index::drop().name(NAME).table(QueuedJobs::Table).to_owned())
            .await
    }
}
