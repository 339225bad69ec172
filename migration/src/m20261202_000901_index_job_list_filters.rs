//! Indexes for every filter of the job list (issue 9, cost that grows): each filter, with
//! or without the owner, finds its newest jobs by index, in id order, with no sort and no
//! scan of other rows, however many rows the projection holds.

use sea_orm_migration::prelude::*;

#[derive(DeriveIden)]
enum QueuedJobs {
    Table,
    Id,
    Owner,
    Status,
    Kind,
    Queue,
}

/// `(name, columns)` of each index; every one ends with `id`, the list's order and cursor.
fn indexes() -> [(&'static str, Vec<QueuedJobs>); 6] {
    use QueuedJobs::*;
    [
        ("idx_queued_jobs_status_id", vec![Status, Id]),
        ("idx_queued_jobs_kind_id", vec![Kind, Id]),
        ("idx_queued_jobs_queue_id", vec![Queue, Id]),
        ("idx_queued_jobs_owner_status_id", vec![Owner, Status, Id]),
        ("idx_queued_jobs_owner_kind_id", vec![Owner, Kind, Id]),
        ("idx_queued_jobs_owner_queue_id", vec![Owner, Queue, Id]),
    ]
}

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for (name, columns) in indexes() {
            let mut index = Index::create();
            index.name(name).table(QueuedJobs::Table).if_not_exists();
            for c in columns {
                index.col(c);
            }
            manager.create_index(index.to_owned()).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for (name, _) in indexes() {
            manager
                .drop_index(Index::drop().name(name).table(QueuedJobs::Table).to_owned())
                .await?;
        }
        Ok(())
    }
}
