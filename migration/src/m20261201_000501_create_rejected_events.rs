//! `rejected_events`: the projector's dead letters (issue 15), and `projector_status`:
//! what an operator (or `/readyz`) needs to tell a stalled projector from an idle one.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum RejectedEvents {
    Table,
    Projector,
    Seq,
    Subject,
    JobId,
    EventType,
    Error,
    RejectedAt,
}

#[derive(DeriveIden)]
enum ProjectorStatus {
    Table,
    Name,
    HeartbeatAt,
    FailingSince,
    LastError,
    LastErrorAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // A projection table like the others: written in the transaction that moves the
        // checkpoint past the event, so a replay rebuilds exactly the same rows.
        manager
            .create_table(
                Table::create()
                    .table(RejectedEvents::Table)
                    .if_not_exists()
                    .col(string_len(RejectedEvents::Projector, 64))
                    .col(big_integer(RejectedEvents::Seq))
                    .col(text(RejectedEvents::Subject))
                    .col(string_len_null(RejectedEvents::JobId, 36))
                    .col(string_len_null(RejectedEvents::EventType, 64))
                    .col(text(RejectedEvents::Error))
                    .col(timestamp_with_time_zone(RejectedEvents::RejectedAt))
                    .primary_key(
                        Index::create()
                            .col(RejectedEvents::Projector)
                            .col(RejectedEvents::Seq),
                    )
                    .to_owned(),
            )
            .await?;
        // Not a projection: the projector's own health, overwritten in place.
        manager
            .create_table(
                Table::create()
                    .table(ProjectorStatus::Table)
                    .if_not_exists()
                    .col(string_len(ProjectorStatus::Name, 64).primary_key())
                    .col(timestamp_with_time_zone(ProjectorStatus::HeartbeatAt))
                    .col(timestamp_with_time_zone_null(ProjectorStatus::FailingSince))
                    .col(text_null(ProjectorStatus::LastError))
                    .col(timestamp_with_time_zone_null(ProjectorStatus::LastErrorAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ProjectorStatus::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(RejectedEvents::Table).to_owned())
            .await
    }
}
