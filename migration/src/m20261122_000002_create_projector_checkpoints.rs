use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum ProjectorCheckpoints {
    Table,
    Name,
    LastSeq,
    UpdatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ProjectorCheckpoints::Table)
                    .if_not_exists()
                    .col(string_len(ProjectorCheckpoints::Name, 64).primary_key())
                    // Last stream sequence folded into the tables, committed with the rows it covers.
                    .col(big_integer(ProjectorCheckpoints::LastSeq))
                    .col(timestamp_with_time_zone(ProjectorCheckpoints::UpdatedAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ProjectorCheckpoints::Table).to_owned())
            .await
    }
}
