//! `projector_status`: the projector's health, overwritten in place (not a projection).

use sea_orm::entity::prelude::*;

/// One projector's health.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "projector_status")]
pub struct Model {
    /// Projector name (its checkpoint name).
    #[sea_orm(primary_key, auto_increment = false)]
    pub name: String,
    /// Last time the projector was running and had folded everything the stream held.
    pub heartbeat_at: DateTimeUtc,
    /// Since when the database refuses its batches (`None` while healthy).
    pub failing_since: Option<DateTimeUtc>,
    /// The latest database error it got.
    #[sea_orm(column_type = "Text", nullable)]
    pub last_error: Option<String>,
    /// When it got it.
    pub last_error_at: Option<DateTimeUtc>,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
