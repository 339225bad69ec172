//! `job_counts`: how many jobs of each (queue, owner, status) the projection holds.
//!
//! The projector moves these counts with every batch it folds and every sweep, in the
//! same transaction as the job rows, so they always equal a `GROUP BY` over
//! `queued_jobs` (replay rebuilds them with the rows; verify checks them). Overviews read
//! them instead of counting rows. A count that fell to zero stays as a zero row.

use sea_orm::entity::prelude::*;

/// The number of jobs of one owner in one queue with one status.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "job_counts")]
pub struct Model {
    /// Queue name.
    #[sea_orm(primary_key, auto_increment = false)]
    pub queue: String,
    /// Owner's subject.
    #[sea_orm(primary_key, auto_increment = false)]
    pub owner: String,
    /// Status name.
    #[sea_orm(primary_key, auto_increment = false)]
    pub status: String,
    /// How many jobs.
    pub jobs: i64,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
