//! `users`: one row per user, folded from `user.*` events.

use jobstream_core::user::{UserProfile, UserState};
use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// One user's current state.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "users")]
pub struct Model {
    /// User id (UUID, text).
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// Identity provider subject.
    #[sea_orm(column_type = "Text", nullable)]
    pub sub: Option<String>,
    /// E-mail address.
    pub email: Option<String>,
    /// Display name.
    #[sea_orm(column_type = "Text", nullable)]
    pub name: Option<String>,
    /// Who created the user (`None`: registered by their first request).
    #[sea_orm(column_type = "Text", nullable)]
    pub created_by: Option<String>,
    /// Registered at.
    pub created_at: DateTimeUtc,
    /// Latest change at.
    pub updated_at: DateTimeUtc,
    /// Stream sequence of the latest applied event.
    pub last_seq: i64,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

impl From<&UserState> for Model {
    fn from(s: &UserState) -> Self {
        Model {
            id: s.id.to_string(),
            sub: s.profile.sub.clone(),
            email: s.profile.email.clone(),
            name: s.profile.name.clone(),
            created_by: s.created_by.clone(),
            created_at: s.created_at,
            updated_at: s.updated_at,
            last_seq: i64::try_from(s.last_seq).unwrap_or(i64::MAX),
        }
    }
}

/// A row that does not read back as a user.
#[derive(Debug, thiserror::Error)]
#[error("users row {0}: id is not a UUID")]
pub struct BadUserRow(String);

impl TryFrom<Model> for UserState {
    type Error = BadUserRow;
    fn try_from(m: Model) -> Result<Self, Self::Error> {
        let id = Uuid::parse_str(&m.id).map_err(|_| BadUserRow(m.id.clone()))?;
        Ok(UserState {
            id,
            profile: UserProfile {
                sub: m.sub,
                email: m.email,
                name: m.name,
            },
            created_by: m.created_by,
            created_at: m.created_at,
            updated_at: m.updated_at,
            last_seq: u64::try_from(m.last_seq).unwrap_or(0),
        })
    }
}
