//! Every attempt's error and the time a running job was asked to cancel (issue 3).

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum QueuedJobs {
    Table,
    Errors,
    CancelRequestedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters one column at a time.
        manager
            .alter_table(
                Table::alter()
                    .table(QueuedJobs::Table)
                    .add_column(json_binary_null(QueuedJobs::Errors))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(QueuedJobs::Table)
                    .add_column(timestamp_with_time_zone_null(QueuedJobs::CancelRequestedAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(QueuedJobs::Table)
                    .drop_column(QueuedJobs::CancelRequestedAt)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(QueuedJobs::Table)
                    .drop_column(QueuedJobs::Errors)
                    .to_owned(),
            )
            .await
    }
}
