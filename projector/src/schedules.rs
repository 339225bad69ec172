//! Folding schedule records into the `schedules` table (same transaction as the job rows).

use jobstream_core::schedule::{ScheduleEvent, ScheduleRecord};
use jobstream_entity::schedule;
use sea_orm::sea_query::OnConflict;
use sea_orm::{ConnectionTrait, DbErr, EntityTrait, IntoActiveModel};

/// Applies one schedule record stored at `seq`: a created (or replaced) schedule is
/// upserted, a deleted one removed. Idempotent, so a replay converges to the same rows.
pub(crate) async fn apply_schedule_record<C: ConnectionTrait>(
    db: &C,
    seq: u64,
    rec: &ScheduleRecord,
) -> Result<(), DbErr> {
    match &rec.event {
        ScheduleEvent::Created(spec) => {
            use schedule::Column as C;
            let row = schedule::Model::from_spec(&rec.schedule_key, spec, rec.at, seq);
            schedule::Entity::insert_many([row.into_active_model()])
                .on_conflict(
                    // A replaced schedule's older record is rolled up in the stream, so the row
                    // is exactly the latest record: what a replay rebuilds.
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
                        ])
                        .to_owned(),
                )
                .exec_without_returning(db)
                .await?;
            tracing::info!(schedule = %spec.name, owner = %spec.owner, seq, "schedule projected");
        }
        ScheduleEvent::Deleted { name, owner } => {
            schedule::Entity::delete_by_id(rec.schedule_key.clone())
                .exec(db)
                .await?;
            tracing::info!(schedule = %name, %owner, seq, "schedule deleted from the projection");
        }
    }
    Ok(())
}
