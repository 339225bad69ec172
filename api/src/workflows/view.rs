//! Workflows as clients see them.

use chrono::{DateTime, Utc};
use jobstream_core::workflow::WorkflowState;
use jobstream_entity::workflow;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

/// A workflow with its steps.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WorkflowView {
    /// Workflow id (UUIDv7).
    pub id: Uuid,
    /// Display name.
    pub name: String,
    /// Owner (`sub` of the submitter).
    pub owner: String,
    /// `running`, `succeeded`, `failed` or `cancelled`.
    pub status: String,
    /// Retries so far.
    pub generation: u32,
    /// Submitted at.
    pub created_at: DateTime<Utc>,
    /// Latest change at.
    pub updated_at: DateTime<Utc>,
    /// Ended at.
    pub finished_at: Option<DateTime<Utc>>,
    /// Number of steps.
    pub step_count: usize,
    /// The steps in dependency order (empty in lists).
    pub steps: Vec<StepView>,
}

/// One step of a workflow.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct StepView {
    /// Step id.
    pub id: String,
    /// Kind of its job.
    pub kind: String,
    /// Its job's id (derived from the workflow and step ids; see `GET /v1/jobs/{id}`).
    pub job_id: Uuid,
    /// Steps it waits for.
    pub after: Vec<String>,
    /// `fail` or `continue`.
    pub on_failure: String,
    /// `pending`, `skipped`, or its job's status.
    pub status: String,
    /// Its job's result.
    pub result: Option<Value>,
    /// Its job's latest error.
    pub error: Option<String>,
}

impl From<&WorkflowState> for WorkflowView {
    fn from(wf: &WorkflowState) -> Self {
        WorkflowView {
            id: wf.id,
            name: wf.name.clone(),
            owner: wf.owner.clone(),
            status: wf.status.as_str().to_owned(),
            generation: wf.generation,
            created_at: wf.created_at,
            updated_at: wf.updated_at,
            finished_at: wf.finished_at,
            step_count: wf.steps.len(),
            steps: wf
                .steps
                .iter()
                .map(|s| StepView {
                    id: s.step_id.clone(),
                    kind: s.spec.kind.clone(),
                    job_id: s.job_id,
                    after: s.after.clone(),
                    on_failure: serde_json::to_value(s.on_failure)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default(),
                    status: s.status.clone(),
                    result: s.result.clone(),
                    error: s.error.clone(),
                })
                .collect(),
        }
    }
}

impl From<&workflow::Model> for WorkflowView {
    fn from(m: &workflow::Model) -> Self {
        WorkflowView {
            id: Uuid::parse_str(&m.id).unwrap_or_default(),
            name: m.name.clone(),
            owner: m.owner.clone(),
            status: m.status.clone(),
            generation: u32::try_from(m.generation).unwrap_or(0),
            created_at: m.created_at,
            updated_at: m.updated_at,
            finished_at: m.finished_at,
            step_count: usize::try_from(m.step_count).unwrap_or(0),
            steps: Vec::new(),
        }
    }
}
