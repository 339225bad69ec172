//! Folding queue control records (`queues.<queue>`) into the `queue_states` table
//! (same transaction as the job rows).

use jobstream_core::queue::QueueRecord;
use jobstream_entity::queue_state;
use sea_orm::sea_query::OnConflict;
use sea_orm::{ConnectionTrait, DbErr, EntityTrait, IntoActiveModel};

/// Applies one queue record stored at `seq`: the queue's row becomes that record.
/// Records arrive in stream order, so the last one wins, in a replay too.
pub(crate) async fn apply_queue_record<C: ConnectionTrait>(
    db: &C,
    seq: u64,
    rec: &QueueRecord,
) -> Result<(), DbErr> {
    use queue_state::Column as C;
    let row = queue_state::Model {
        queue: rec.queue.to_string(),
        paused: rec.event.paused(),
        changed_by: rec.event.by().to_owned(),
        changed_at: rec.at,
        last_seq: i64::try_from(seq).unwrap_or(i64::MAX),
    };
    queue_state::Entity::insert_many([row.into_active_model()])
        .on_conflict(
            OnConflict::column(C::Queue)
                .update_columns([C::Paused, C::ChangedBy, C::ChangedAt, C::LastSeq])
                .to_owned(),
        )
        .exec_without_returning(db)
        .await?;
    tracing::info!(queue = %rec.queue, paused = rec.event.paused(), seq, "queue state projected");
    Ok(())
}
