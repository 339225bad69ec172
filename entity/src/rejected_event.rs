//! `rejected_events`: events the projector could not apply (dead letters), and
//! `projector_status`: the projector's health as it last wrote it.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// One event the projection cannot hold, recorded instead of stopping the fold.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "rejected_events")]
pub struct Model {
    /// The projector that rejected it (its checkpoint name).
    #[sea_orm(primary_key, auto_increment = false)]
    pub projector: String,
    /// Stream sequence of the event.
    #[sea_orm(primary_key, auto_increment = false)]
    pub seq: i64,
    /// Subject it was stored under (control characters removed).
    #[sea_orm(column_type = "Text")]
    pub subject: String,
    /// The job (or schedule key, or user id) it belongs to, when it decoded.
    pub job_id: Option<String>,
    /// Event type (`queued`, `schedule.created`, …), when it decoded.
    pub event_type: Option<String>,
    /// Why the database refused it.
    #[sea_orm(column_type = "Text")]
    pub error: String,
    /// When the projector rejected it.
    pub rejected_at: DateTimeUtc,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

/// The dead letters of `projector`, oldest first: up to `limit` with a sequence above `after`.
pub async fn list<C: ConnectionTrait>(
    db: &C,
    projector: &str,
    after: u64,
    limit: u64,
) -> Result<Vec<Model>, DbErr> {
    use sea_orm::{QueryOrder, QuerySelect};
    Entity::find()
        .filter(Column::Projector.eq(projector))
        .filter(Column::Seq.gt(i64::try_from(after).unwrap_or(i64::MAX)))
        .order_by_asc(Column::Seq)
        .limit(limit.min(i64::MAX as u64))
        .all(db)
        .await
}
