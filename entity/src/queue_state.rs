//! `queue_states`: each queue's pause state, folded from its `queues.<queue>` records.

use sea_orm::entity::prelude::*;

/// The control state of one queue (a queue never paused has no row).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "queue_states")]
pub struct Model {
    /// The queue name.
    #[sea_orm(primary_key, auto_increment = false)]
    pub queue: String,
    /// Whether its workers take no new jobs.
    pub paused: bool,
    /// `sub` of the admin who made the last change.
    #[sea_orm(column_type = "Text")]
    pub changed_by: String,
    /// When the last change happened.
    pub changed_at: DateTimeUtc,
    /// Stream sequence of the record folded last.
    pub last_seq: i64,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
