use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum Schedules {
    Table,
    Key,
    Name,
    Owner,
    Cron,
    Every,
    Kind,
    Queue,
    Payload,
    Priority,
    MaxAttempts,
    TimeoutMs,
    CreatedAt,
    UpdatedAt,
    LastSeq,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Schedules::Table)
                    .if_not_exists()
                    // Stream key of the schedule (hash of owner and name), the token of its subject.
                    .col(string_len(Schedules::Key, 64).primary_key())
                    .col(string_len(Schedules::Name, 64))
                    .col(string_len(Schedules::Owner, 255))
                    .col(string_len_null(Schedules::Cron, 255))
                    .col(string_len_null(Schedules::Every, 64))
                    .col(string_len(Schedules::Kind, 128))
                    .col(string_len(Schedules::Queue, 64))
                    .col(json_binary(Schedules::Payload))
                    .col(string_len(Schedules::Priority, 16))
                    .col(integer(Schedules::MaxAttempts))
                    .col(big_integer(Schedules::TimeoutMs))
                    .col(timestamp_with_time_zone(Schedules::CreatedAt))
                    .col(timestamp_with_time_zone(Schedules::UpdatedAt))
                    .col(big_integer(Schedules::LastSeq))
                    .to_owned(),
            )
            .await?;
        // A user's schedule names are unique; listing by owner.
        manager
            .create_index(
                Index::create()
                    .name("uq_schedules_owner_name")
                    .table(Schedules::Table)
                    .col(Schedules::Owner)
                    .col(Schedules::Name)
                    .unique()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Schedules::Table).to_owned())
            .await
    }
}
