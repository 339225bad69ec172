//! `queue_states`: each queue's pause state, folded from its `queues.<queue>` records.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum QueueStates {
    Table,
    Queue,
    Paused,
    ChangedBy,
    ChangedAt,
    LastSeq,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(QueueStates::Table)
                    .if_not_exists()
                    .col(string_len(QueueStates::Queue, 64).primary_key())
                    .col(boolean(QueueStates::Paused))
                    .col(text(QueueStates::ChangedBy))
                    .col(timestamp_with_time_zone(QueueStates::ChangedAt))
                    .col(big_integer(QueueStates::LastSeq))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(QueueStates::Table).to_owned())
            .await
    }
}
