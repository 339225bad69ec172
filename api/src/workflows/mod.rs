//! The workflows service: submit, read, cancel and retry workflows (DAGs of jobs).
//!
//! A submission is one `workflow.submitted` event: stored whole or not at all. The
//! projector folds it (and its step jobs' events) into `workflows` / `workflow_steps`
//! and its conductor enqueues the steps; see `jobstream_core::workflow` for the design.
//! Reads come from the projection, or from the stream right after the submission.
//! Errors are [`JobsError`]s (the same problems as for jobs). HTTP glue: `routes/workflows.rs`.

pub mod input;
pub mod view;

use std::collections::HashMap;

use jobstream_core::broker::Broker;
use jobstream_core::workflow::{WorkflowEnvelope, WorkflowEvent, WorkflowState, WorkflowStatus};
use jobstream_core::{atomic::Outgoing, kinds::Catalogue};
use jobstream_entity::{workflow, workflow_step};
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use uuid::Uuid;

pub use input::SubmitWorkflow;
pub use view::{StepView, WorkflowView};

use crate::auth::Caller;
use crate::http::PageRequest;
use crate::jobs::JobsError;
use crate::state::AppState;

/// The workflows service: cheap to clone, built from the API's state.
#[derive(Clone)]
pub struct WorkflowService {
    broker: Broker,
    db: DatabaseConnection,
    kinds: Catalogue,
}

fn no_workflow(id: impl std::fmt::Display) -> JobsError {
    JobsError::NotFound(format!("no workflow {id}"))
}

/// A workflow id as a caller gives it: anything that is not a UUID names no workflow.
pub fn parse_id(id: &str) -> Result<Uuid, JobsError> {
    Uuid::parse_str(id).map_err(|_| no_workflow(id))
}

impl WorkflowService {
    /// The service over the API's broker, projection and kinds catalogue.
    pub fn new(state: &AppState) -> Self {
        WorkflowService {
            broker: state.broker.clone(),
            db: state.db.clone(),
            kinds: state.kinds.clone(),
        }
    }

    /// Validates and stores a workflow as one event; returns it as just submitted.
    pub async fn submit(
        &self,
        caller: &Caller,
        body: SubmitWorkflow,
        request_id: Option<&str>,
    ) -> Result<WorkflowState, JobsError> {
        let valid = body
            .validate(&caller.sub, &self.kinds)
            .map_err(JobsError::Invalid)?;
        let env = WorkflowEnvelope::new(
            Uuid::now_v7(),
            WorkflowEvent::Submitted {
                owner: caller.sub.clone(),
                name: valid.name,
                steps: valid.steps,
            },
        );
        self.append(&env, request_id).await?;
        WorkflowState::submitted(&env, 0)
            .ok_or_else(|| anyhow::anyhow!("a submitted event folds into a workflow").into())
    }

    /// One workflow (the caller's, or any for an admin).
    pub async fn get(&self, caller: &Caller, id: Uuid) -> Result<WorkflowState, JobsError> {
        let wf = match self.projected(id).await? {
            Some(wf) => wf,
            // Submitted, not folded yet: the stream has it.
            None => self
                .submitted_in_stream(id)
                .await?
                .ok_or_else(|| no_workflow(id))?,
        };
        if caller.may_see(&wf.owner) {
            Ok(wf)
        } else {
            Err(no_workflow(id))
        }
    }

    /// A page of workflows (without their steps), newest first.
    pub async fn list(
        &self,
        caller: &Caller,
        status: Option<WorkflowStatus>,
        page: &PageRequest,
    ) -> Result<(Vec<workflow::Model>, bool), JobsError> {
        let mut select = workflow::Entity::find();
        if !caller.is_admin {
            select = select.filter(workflow::Column::Owner.eq(caller.sub.as_str()));
        }
        if let Some(s) = status {
            select = select.filter(workflow::Column::Status.eq(s.as_str()));
        }
        if let Some(after) = &page.after {
            select = select.filter(workflow::Column::Id.lt(after.as_str()));
        }
        if let Some(before) = &page.before {
            select = select.filter(workflow::Column::Id.gt(before.as_str()));
        }
        let order = if page.backwards() {
            sea_orm::Order::Asc
        } else {
            sea_orm::Order::Desc
        };
        let rows = select
            .order_by(workflow::Column::Id, order)
            .limit(page.fetch())
            .all(&self.db)
            .await?;
        Ok(page.trim(rows))
    }

    /// Which workflow step each of `job_ids` is, from the projection (the step rows exist
    /// from the workflow's submission on, before any step job): job id → (workflow id, step id).
    /// Jobs that are no step are left out.
    pub async fn steps_of_jobs(
        &self,
        job_ids: &[Uuid],
    ) -> Result<HashMap<Uuid, (Uuid, String)>, JobsError> {
        if job_ids.is_empty() {
            return Ok(HashMap::new());
        }
        let rows = workflow_step::Entity::find()
            .select_only()
            .column(workflow_step::Column::JobId)
            .column(workflow_step::Column::WorkflowId)
            .column(workflow_step::Column::StepId)
            .filter(workflow_step::Column::JobId.is_in(job_ids.iter().map(Uuid::to_string)))
            .into_tuple::<(String, String, String)>()
            .all(&self.db)
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(job, wf, step)| {
                Some((
                    Uuid::parse_str(&job).ok()?,
                    (Uuid::parse_str(&wf).ok()?, step),
                ))
            })
            .collect())
    }

    /// Cancels a running workflow: its pending steps never start, its running ones are stopped.
    pub async fn cancel(
        &self,
        caller: &Caller,
        id: Uuid,
        request_id: Option<&str>,
    ) -> Result<WorkflowState, JobsError> {
        self.request(caller, id, request_id, WorkflowStatus::Running, |by| {
            WorkflowEvent::CancelRequested { by }
        })
        .await
    }

    /// Runs a failed or cancelled workflow's failed and cancelled steps again, and those after them.
    pub async fn retry(
        &self,
        caller: &Caller,
        id: Uuid,
        request_id: Option<&str>,
    ) -> Result<WorkflowState, JobsError> {
        let wf = self.get(caller, id).await?;
        let allowed = if wf.status == WorkflowStatus::Failed {
            WorkflowStatus::Failed
        } else {
            WorkflowStatus::Cancelled
        };
        self.request(caller, id, request_id, allowed, |by| {
            WorkflowEvent::RetryRequested { by }
        })
        .await
    }

    /// Appends a request the workflow's status allows, and returns the workflow with it folded.
    async fn request(
        &self,
        caller: &Caller,
        id: Uuid,
        request_id: Option<&str>,
        allowed: WorkflowStatus,
        event: impl FnOnce(Option<String>) -> WorkflowEvent,
    ) -> Result<WorkflowState, JobsError> {
        let mut wf = self.get(caller, id).await?;
        if wf.status != allowed {
            return Err(JobsError::Conflict(format!(
                "workflow {id} is {}",
                wf.status.as_str()
            )));
        }
        let env = WorkflowEnvelope::new(id, event(Some(caller.sub.clone())));
        let seq = self.append(&env, request_id).await?;
        wf.apply(&env, seq)
            .map_err(|e| JobsError::Conflict(e.to_string()))?;
        Ok(wf)
    }

    async fn append(
        &self,
        env: &WorkflowEnvelope,
        request_id: Option<&str>,
    ) -> Result<u64, JobsError> {
        let mut msg = Outgoing::new(env.subject(), env.to_bytes())
            .with_header("Nats-Msg-Id", &env.event_id.to_string());
        if let Some(rid) = request_id {
            msg = msg.with_header(jobstream_core::event::REQUEST_ID_HEADER, rid);
        }
        let ack = self.broker.publish_atomic(vec![msg]).await?;
        tracing::info!(workflow_id = %env.workflow_id, stream_seq = ack.last_seq, event = env.event.token(), "workflow event stored");
        Ok(ack.last_seq)
    }

    async fn projected(&self, id: Uuid) -> Result<Option<WorkflowState>, JobsError> {
        let Some(row) = workflow::Entity::find_by_id(id.to_string())
            .one(&self.db)
            .await?
        else {
            return Ok(None);
        };
        let steps = workflow_step::Entity::find()
            .filter(workflow_step::Column::WorkflowId.eq(id.to_string()))
            .order_by_asc(workflow_step::Column::Position)
            .all(&self.db)
            .await?;
        row.into_state(steps)
            .map(Some)
            .map_err(|e| anyhow::anyhow!(e).into())
    }

    async fn submitted_in_stream(&self, id: Uuid) -> Result<Option<WorkflowState>, JobsError> {
        let subject = jobstream_core::subject::workflow_event(id, "submitted");
        let Some(msg) = self.broker.last_on_subject(&subject).await? else {
            return Ok(None);
        };
        let env = WorkflowEnvelope::decode(&msg.payload).map_err(anyhow::Error::from)?;
        Ok(WorkflowState::submitted(&env, msg.sequence))
    }
}
