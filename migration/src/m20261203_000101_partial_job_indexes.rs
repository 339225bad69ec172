//! Three indexes of `queued_jobs` hold only the rows their queries can match (issue 9,
//! the projector's cost per job): the idempotency key's only the jobs that have one, and
//! the two `finished_at` ones only finished jobs. Every query on them compares the column
//! (`= key`, `>= since`, `< cutoff`), which implies `IS NOT NULL`, so SQLite and
//! PostgreSQL still use them; a job's `queued` row then writes three B-trees fewer, and
//! its outcome adds two entries instead of moving them.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden, Clone, Copy)]
enum QueuedJobs {
    Table,
    Owner,
    Status,
    FinishedAt,
    IdempotencyKey,
}

/// `(name, unique, columns, the column the index leaves out when NULL)`.
type Spec = (&'static str, bool, &'static [QueuedJobs], QueuedJobs);

const INDEXES: [Spec; 3] = {
    use QueuedJobs::*;
    [
        (
            "uq_queued_jobs_owner_idempotency_key",
            true,
            &[Owner, IdempotencyKey],
            IdempotencyKey,
        ),
        (
            "idx_queued_jobs_status_finished_at",
            false,
            &[Status, FinishedAt],
            FinishedAt,
        ),
        (
            "idx_queued_jobs_owner_status_finished_at",
            false,
            &[Owner, Status, FinishedAt],
            FinishedAt,
        ),
    ]
};

/// The index as it was (`partial: false`) or as it is now.
fn create(spec: &Spec, partial: bool) -> IndexCreateStatement {
    let (name, unique, columns, nullable) = *spec;
    let mut index = Index::create();
    index.name(name).table(QueuedJobs::Table).if_not_exists();
    for c in columns {
        index.col(*c);
    }
    if unique {
        index.unique();
    }
    if partial {
        index.and_where(Expr::col(nullable).is_not_null());
    }
    index.to_owned()
}

/// Drops and creates each index, both in one call: one connection of the pool, which on
/// SQLite matters (a connection whose schema is older than another's drop still sees the
/// index when it prepares the create). Every process of a fresh system may run the
/// migrations at once: whatever the interleaving, each drop is followed by its own
/// create, so the last statement on each index creates it in the wanted form.
async fn replace(manager: &SchemaManager<'_>, partial: bool) -> Result<(), DbErr> {
    let backend = manager.get_database_backend();
    for spec in &INDEXES {
        let drop = Index::drop()
            .name(spec.0)
            .table(QueuedJobs::Table)
            .if_exists()
            .to_owned();
        let sql = format!(
            "{}; {}",
            backend.build(&drop).sql,
            backend.build(&create(spec, partial)).sql
        );
        manager.get_connection().execute_unprepared(&sql).await?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        replace(manager, true).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        replace(manager, false).await
    }
}
