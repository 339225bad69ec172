//! The trace id of each job (issue 11): its first event's W3C `traceparent` trace id.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum QueuedJobs {
    Table,
    TraceId,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(QueuedJobs::Table)
                    // 32 hex digits; null for rows folded before the column existed.
                    .add_column(string_len_null(QueuedJobs::TraceId, 32))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(QueuedJobs::Table)
                    .drop_column(QueuedJobs::TraceId)
                    .to_owned(),
            )
            .await
    }
}
