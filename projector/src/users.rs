//! User events → the `users` table, inside the batch's transaction.

use std::collections::HashMap;

use jobstream_core::user::{UserEnvelope, UserRejected, UserState};
use jobstream_entity::user;
use sea_orm::sea_query::OnConflict;
use sea_orm::{ColumnTrait, ConnectionTrait, DbErr, EntityTrait, IntoActiveModel, QueryFilter};
use uuid::Uuid;

/// Applies user events in stream order; returns `(applied, ignored)`.
pub(crate) async fn apply_user_events<C: ConnectionTrait>(
    db: &C,
    events: &[(u64, &UserEnvelope)],
) -> Result<(usize, usize), DbErr> {
    if events.is_empty() {
        return Ok((0, 0));
    }
    let ids: Vec<String> = events.iter().map(|(_, e)| e.user_id.to_string()).collect();
    let mut users: HashMap<Uuid, UserState> = HashMap::new();
    for row in user::Entity::find()
        .filter(user::Column::Id.is_in(ids))
        .all(db)
        .await?
    {
        match UserState::try_from(row) {
            Ok(s) => {
                users.insert(s.id, s);
            }
            Err(e) => {
                tracing::error!(error = %e, "unreadable users row: its events are ignored until the projection is rebuilt");
            }
        }
    }
    let (mut applied, mut ignored) = (0, 0);
    let mut dirty = Vec::new();
    for (seq, env) in events {
        let current = users.get(&env.user_id).cloned();
        match UserState::fold(current, env, *seq) {
            Ok(s) => {
                users.insert(s.id, s);
                dirty.push(env.user_id);
                applied += 1;
            }
            Err(e @ UserRejected::AlreadyRegistered(_)) => {
                tracing::debug!(seq, error = %e, "user event ignored");
                ignored += 1;
            }
            Err(e @ UserRejected::Unknown(_)) => {
                tracing::warn!(seq, error = %e, "user event ignored");
                ignored += 1;
            }
        }
    }
    dirty.sort();
    dirty.dedup();
    let rows: Vec<user::Model> = dirty
        .iter()
        .filter_map(|id| users.get(id))
        .map(user::Model::from)
        .collect();
    if rows.is_empty() {
        return Ok((applied, ignored));
    }
    use user::Column as C;
    user::Entity::insert_many(rows.into_iter().map(IntoActiveModel::into_active_model))
        .on_conflict(
            OnConflict::column(C::Id)
                .update_columns([
                    C::Sub,
                    C::Email,
                    C::Name,
                    C::CreatedBy,
                    C::CreatedAt,
                    C::UpdatedAt,
                    C::LastSeq,
                ])
                .to_owned(),
        )
        .exec_without_returning(db)
        .await?;
    Ok((applied, ignored))
}
