//! `projector_checkpoints`: how far each projector has folded the stream.

use sea_orm::entity::prelude::*;

/// One projector's position.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "projector_checkpoints")]
pub struct Model {
    /// Projector name (its durable consumer name).
    #[sea_orm(primary_key, auto_increment = false)]
    pub name: String,
    /// Last applied stream sequence.
    pub last_seq: i64,
    /// When the checkpoint last moved.
    pub updated_at: DateTimeUtc,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
