//! `workflows`: one row per workflow, folded from `workflows.*` events and its step jobs.

use jobstream_core::workflow::{StepState, WorkflowState, WorkflowStatus};
use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// One workflow's current state (its steps are in [`super::workflow_step`]).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "workflows")]
pub struct Model {
    /// Workflow id (UUIDv7, text).
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// Owner's subject.
    #[sea_orm(column_type = "Text")]
    pub owner: String,
    /// Display name.
    #[sea_orm(column_type = "Text")]
    pub name: String,
    /// `running`, `succeeded`, `failed` or `cancelled`.
    pub status: String,
    /// Retries so far.
    pub generation: i32,
    /// Number of steps.
    pub step_count: i32,
    /// Submitted at.
    pub created_at: DateTimeUtc,
    /// Latest change at.
    pub updated_at: DateTimeUtc,
    /// Ended at.
    pub finished_at: Option<DateTimeUtc>,
    /// Stream sequence of the latest event that changed it.
    pub last_seq: i64,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

impl Model {
    /// The workflow's state, with its `steps` rows (in position order).
    pub fn into_state(
        self,
        steps: Vec<super::workflow_step::Model>,
    ) -> Result<WorkflowState, String> {
        let bad = |what: &str| format!("workflow {}: bad {what}", self.id);
        Ok(WorkflowState {
            id: Uuid::parse_str(&self.id).map_err(|_| bad("id"))?,
            status: WorkflowStatus::parse(&self.status).ok_or_else(|| bad("status"))?,
            generation: u32::try_from(self.generation).map_err(|_| bad("generation"))?,
            last_seq: u64::try_from(self.last_seq).map_err(|_| bad("last_seq"))?,
            steps: steps
                .into_iter()
                .map(StepState::try_from)
                .collect::<Result<_, _>>()?,
            owner: self.owner,
            name: self.name,
            created_at: self.created_at,
            updated_at: self.updated_at,
            finished_at: self.finished_at,
        })
    }
}

impl From<&WorkflowState> for Model {
    fn from(wf: &WorkflowState) -> Self {
        Model {
            id: wf.id.to_string(),
            owner: wf.owner.clone(),
            name: wf.name.clone(),
            status: wf.status.as_str().to_owned(),
            generation: i32::try_from(wf.generation).unwrap_or(i32::MAX),
            step_count: i32::try_from(wf.steps.len()).unwrap_or(i32::MAX),
            created_at: wf.created_at,
            updated_at: wf.updated_at,
            finished_at: wf.finished_at,
            last_seq: i64::try_from(wf.last_seq).unwrap_or(i64::MAX),
        }
    }
}
