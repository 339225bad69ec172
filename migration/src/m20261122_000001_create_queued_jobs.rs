use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum QueuedJobs {
    Table,
    Id,
    Queue,
    Kind,
    Owner,
    Status,
    Priority,
    Payload,
    Result,
    Error,
    Attempt,
    MaxAttempts,
    TimeoutMs,
    RunAt,
    IdempotencyKey,
    ResultTtlMs,
    Progress,
    ProgressMessage,
    CreatedAt,
    StartedAt,
    FinishedAt,
    UpdatedAt,
    LastSeq,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(QueuedJobs::Table)
                    .if_not_exists()
                    // UUIDv7 as text: time-ordered, so it doubles as the pagination cursor.
                    .col(string_len(QueuedJobs::Id, 36).primary_key())
                    .col(string_len(QueuedJobs::Queue, 64))
                    .col(string_len(QueuedJobs::Kind, 128))
                    .col(string_len(QueuedJobs::Owner, 255))
                    .col(string_len(QueuedJobs::Status, 16))
                    .col(string_len(QueuedJobs::Priority, 16))
                    .col(json_binary(QueuedJobs::Payload))
                    .col(json_binary_null(QueuedJobs::Result))
                    .col(text_null(QueuedJobs::Error))
                    .col(integer(QueuedJobs::Attempt))
                    .col(integer(QueuedJobs::MaxAttempts))
                    .col(big_integer(QueuedJobs::TimeoutMs))
                    .col(timestamp_with_time_zone_null(QueuedJobs::RunAt))
                    .col(string_len_null(QueuedJobs::IdempotencyKey, 255))
                    .col(big_integer_null(QueuedJobs::ResultTtlMs))
                    .col(small_integer_null(QueuedJobs::Progress))
                    .col(text_null(QueuedJobs::ProgressMessage))
                    .col(timestamp_with_time_zone(QueuedJobs::CreatedAt))
                    .col(timestamp_with_time_zone_null(QueuedJobs::StartedAt))
                    .col(timestamp_with_time_zone_null(QueuedJobs::FinishedAt))
                    .col(timestamp_with_time_zone(QueuedJobs::UpdatedAt))
                    .col(big_integer(QueuedJobs::LastSeq))
                    .to_owned(),
            )
            .await?;
        // Listing a user's jobs newest first.
        manager
            .create_index(
                Index::create()
                    .name("idx_queued_jobs_owner_id")
                    .table(QueuedJobs::Table)
                    .col(QueuedJobs::Owner)
                    .col(QueuedJobs::Id)
                    .to_owned(),
            )
            .await?;
        // Status filters and the TTL sweep (finished jobs by age).
        manager
            .create_index(
                Index::create()
                    .name("idx_queued_jobs_status_finished_at")
                    .table(QueuedJobs::Table)
                    .col(QueuedJobs::Status)
                    .col(QueuedJobs::FinishedAt)
                    .to_owned(),
            )
            .await?;
        // One job per (owner, idempotency key); NULL keys never collide.
        manager
            .create_index(
                Index::create()
                    .name("uq_queued_jobs_owner_idempotency_key")
                    .table(QueuedJobs::Table)
                    .col(QueuedJobs::Owner)
                    .col(QueuedJobs::IdempotencyKey)
                    .unique()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(QueuedJobs::Table).to_owned())
            .await
    }
}
