//! `schedules`: the active periodic schedules, projected from `schedules.<key>` records.

use jobstream_core::schedule::{ScheduleSpec, Timing};
use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// One active schedule.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "schedules")]
pub struct Model {
    /// Stream key (hash of owner and name).
    #[sea_orm(primary_key, auto_increment = false)]
    pub key: String,
    /// Name, unique per owner.
    pub name: String,
    /// Owner's subject.
    pub owner: String,
    /// Cron expression, when it is a cron schedule.
    pub cron: Option<String>,
    /// Interval (`<seconds>s`), when it is an `every` schedule.
    pub every: Option<String>,
    /// Kind of the jobs it produces.
    pub kind: String,
    /// Their queue.
    pub queue: String,
    /// Their payload.
    pub payload: Json,
    /// Their priority.
    pub priority: String,
    /// Their attempts.
    pub max_attempts: i32,
    /// Their per-attempt deadline, ms.
    pub timeout_ms: i64,
    /// When its current definition was created (a replaced schedule starts anew).
    pub created_at: DateTimeUtc,
    /// When its current record was stored.
    pub updated_at: DateTimeUtc,
    /// Stream sequence of its record.
    pub last_seq: i64,
    /// Paused: its record is stored without the schedule headers, so it does not fire.
    pub paused: bool,
    /// When it last fired (the stored time of its latest fired message), if ever.
    pub last_fired_at: Option<DateTimeUtc>,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

impl Model {
    /// The row of `spec`, stored at `seq` under `key`.
    pub fn from_spec(
        key: &str,
        spec: &ScheduleSpec,
        at: chrono::DateTime<chrono::Utc>,
        seq: u64,
    ) -> Self {
        let (cron, every) = match &spec.timing {
            Timing::Cron(c) => (Some(c.clone()), None),
            Timing::Every(e) => (None, Some(e.clone())),
        };
        Model {
            key: key.to_owned(),
            name: spec.name.clone(),
            owner: spec.owner.clone(),
            cron,
            every,
            kind: spec.job.kind.clone(),
            queue: spec.job.queue.to_string(),
            payload: spec.job.payload.clone(),
            priority: spec.job.priority.as_str().to_owned(),
            max_attempts: i32::try_from(spec.job.max_attempts).unwrap_or(i32::MAX),
            timeout_ms: i64::try_from(spec.job.timeout_ms).unwrap_or(i64::MAX),
            created_at: at,
            updated_at: at,
            last_seq: i64::try_from(seq).unwrap_or(i64::MAX),
            paused: false,
            last_fired_at: None,
        }
    }
}
