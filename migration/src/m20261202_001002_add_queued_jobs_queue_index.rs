//! An index for the queues overview: unfinished jobs of each queue by status, and the
//! oldest waiting one (`GET /v1/queues`), without scanning the whole table.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum QueuedJobs {
    Table,
    Queue,
    Status,
    UpdatedAt,
}

const NAME: &str = "idx_queued_jobs_queue_status_updated_at";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name(NAME)
                    .table(QueuedJobs::Table)
                    .if_not_exists()
                    .col(QueuedJobs::Queue)
                    .col(QueuedJobs::Status)
                    .col(QueuedJobs::UpdatedAt)
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
