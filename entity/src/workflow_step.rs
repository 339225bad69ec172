//! `workflow_steps`: one row per step of a workflow; `action` is the conductor's outbox.

use jobstream_core::workflow::{StepAction, StepState, WorkflowState};
use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// One step's current state.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "workflow_steps")]
pub struct Model {
    /// Workflow id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub workflow_id: String,
    /// Step id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub step_id: String,
    /// Position in dependency order.
    pub position: i32,
    /// Its job's id (derived from the workflow and step ids).
    pub job_id: String,
    /// Step ids it waits for (a JSON array).
    pub after: Json,
    /// `fail` or `continue`.
    pub on_failure: String,
    /// The job spec (payload with references unresolved).
    pub spec: Json,
    /// `pending`, `skipped`, or its job's status.
    pub status: String,
    /// Its job's result.
    pub result: Option<Json>,
    /// Its job's error.
    #[sea_orm(column_type = "Text", nullable)]
    pub error: Option<String>,
    /// What the conductor must publish (`enqueue`, `retry`, `cancel`), if anything.
    pub action: Option<String>,
    /// Whether its job exists.
    pub has_job: bool,
    /// Whether a cancel of its job was stored.
    pub cancel_requested: bool,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

impl Model {
    /// The row of step `s` of workflow `wf`.
    pub fn of(wf: &WorkflowState, s: &StepState) -> Self {
        Model {
            workflow_id: wf.id.to_string(),
            step_id: s.step_id.clone(),
            position: i32::try_from(s.position).unwrap_or(i32::MAX),
            job_id: s.job_id.to_string(),
            after: serde_json::json!(s.after),
            on_failure: serde_json::to_value(s.on_failure)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            spec: serde_json::to_value(&s.spec).unwrap_or_default(),
            status: s.status.clone(),
            result: s.result.clone(),
            error: s.error.clone(),
            action: s.action.map(|a| a.as_str().to_owned()),
            has_job: s.has_job,
            cancel_requested: s.cancel_requested,
        }
    }
}

impl TryFrom<Model> for StepState {
    type Error = String;
    fn try_from(m: Model) -> Result<Self, String> {
        let bad = |what: &str| format!("workflow step {}/{}: bad {what}", m.workflow_id, m.step_id);
        Ok(StepState {
            position: usize::try_from(m.position).map_err(|_| bad("position"))?,
            job_id: Uuid::parse_str(&m.job_id).map_err(|_| bad("job_id"))?,
            after: serde_json::from_value(m.after.clone()).map_err(|_| bad("after"))?,
            on_failure: serde_json::from_value(Json::String(m.on_failure.clone()))
                .map_err(|_| bad("on_failure"))?,
            spec: serde_json::from_value(m.spec.clone()).map_err(|_| bad("spec"))?,
            action: match m.action.as_deref() {
                None => None,
                Some(a) => Some(StepAction::parse(a).ok_or_else(|| bad("action"))?),
            },
            step_id: m.step_id,
            status: m.status,
            result: m.result,
            error: m.error,
            has_job: m.has_job,
            cancel_requested: m.cancel_requested,
            dirty: false,
        })
    }
}
