//! Schedules that can be paused, and their last firing (issue 10): `paused` and
//! `last_fired_at` on `schedules`. The next firing is computed when read, never stored.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum Schedules {
    Table,
    Paused,
    LastFiredAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters a table one column at a time.
        manager
            .alter_table(
                Table::alter()
                    .table(Schedules::Table)
                    .add_column(boolean(Schedules::Paused).default(false))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Schedules::Table)
                    // Null until the schedule's first firing is projected.
                    .add_column(timestamp_with_time_zone_null(Schedules::LastFiredAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [Schedules::LastFiredAt, Schedules::Paused] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Schedules::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
