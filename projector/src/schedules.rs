//! Folding schedule records into the `schedules` table (same transaction as the job rows).

use chrono::{DateTime, Utc};
use jobstream_core::schedule::{ScheduleEvent, ScheduleRecord};
use jobstream_entity::schedule;
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveModelTrait, ActiveValue, ConnectionTrait, DbErr, EntityTrait, IntoActiveModel,
};

/// Applies one schedule record stored at `seq`: a created (or replaced), paused or
/// resumed schedule is upserted, a deleted one removed. Idempotent, so a replay
/// converges to the same rows.
pub(crate) async fn apply_schedule_record<C: ConnectionTrait>(
    db: &C,
    seq: u64,
    rec: &ScheduleRecord,
) -> Result<(), DbErr> {
    let row = match &rec.event {
        // A replaced schedule starts anew: its creation time, no firing yet.
        ScheduleEvent::Created(spec) => {
            schedule::Model::from_spec(&rec.schedule_key, spec, rec.at, seq)
        }
        // The rollup removed the earlier records: what the row keeps across a pause or
        // resume travels in this one, so a replay that sees only it rebuilds the same row.
        ScheduleEvent::Paused(u) | ScheduleEvent::Resumed(u) => schedule::Model {
            updated_at: rec.at,
            paused: matches!(rec.event, ScheduleEvent::Paused(_)),
            last_fired_at: u.last_fired_at,
            ..schedule::Model::from_spec(&rec.schedule_key, &u.spec, u.created_at, seq)
        },
        ScheduleEvent::Deleted { name, owner } => {
            schedule::Entity::delete_by_id(rec.schedule_key.clone())
                .exec(db)
                .await?;
            tracing::info!(schedule = %name, %owner, seq, "schedule deleted from the projection");
            return Ok(());
        }
    };
    use schedule::Column as C;
    schedule::Entity::insert_many([row.clone().into_active_model()])
        .on_conflict(
            // The stream keeps only the latest record of a schedule (rollup), so the row is
            // exactly that record: what a replay rebuilds.
            OnConflict::column(C::Key)
                .update_columns([
                    C::Cron,
                    C::Every,
                    C::Kind,
                    C::Queue,
                    C::Payload,
                    C::Priority,
                    C::MaxAttempts,
                    C::TimeoutMs,
                    C::CreatedAt,
                    C::UpdatedAt,
                    C::LastSeq,
                    C::Paused,
                    C::LastFiredAt,
                ])
                .to_owned(),
        )
        .exec_without_returning(db)
        .await?;
    tracing::info!(schedule = %row.name, owner = %row.owner, seq, event = rec.event.type_name(), "schedule projected");
    Ok(())
}

/// Records a firing of schedule `key` (its fired message, stored at `seq` at `at`) as
/// the schedule's last firing. Only a firing stored after the schedule's current record
/// counts (an earlier one is already in the time that record carries, or belongs to a
/// replaced definition), and only a later time: so the result does not depend on how
/// the stream is cut into batches, and a replay gives the same row.
pub(crate) async fn record_firing<C: ConnectionTrait>(
    db: &C,
    key: &str,
    seq: u64,
    at: DateTime<Utc>,
) -> Result<(), DbErr> {
    let Some(row) = schedule::Entity::find_by_id(key.to_owned()).one(db).await? else {
        // Deleted since (or never projected): nothing to show the firing on.
        return Ok(());
    };
    let seq = i64::try_from(seq).unwrap_or(i64::MAX);
    if row.last_seq >= seq || row.last_fired_at.is_some_and(|t| t >= at) {
        return Ok(());
    }
    schedule::ActiveModel {
        key: ActiveValue::Unchanged(row.key),
        last_fired_at: ActiveValue::Set(Some(at)),
        ..Default::default()
    }
    .update(db)
    .await?;
    Ok(())
}
