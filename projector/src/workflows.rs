//! Workflow events and the events of step jobs → the `workflows` and `workflow_steps`
//! tables, inside the batch's transaction, in stream order (so any batching of the
//! same stream folds to the same rows). The design (who enqueues the next step, and
//! why it is exactly once) is in `jobstream_core::workflow`; the publishing half is
//! [`crate::conductor`].

use std::collections::{HashMap, HashSet};

use jobstream_core::workflow::{
    JobUpdate, StepGraph, WorkflowEnvelope, WorkflowEvent, WorkflowRejected, WorkflowState,
    step_job_id,
};
use jobstream_core::{Envelope, Event, JobState};
use jobstream_entity::{workflow, workflow_step};
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, IntoActiveModel, QueryFilter, QuerySelect,
};
use uuid::Uuid;

/// Rows per statement (well under the databases' parameter limits).
const ROWS_PER_STATEMENT: usize = 200;

/// One thing that happened to a workflow, in stream order.
enum Change<'a> {
    Workflow(&'a WorkflowEnvelope),
    Job(Uuid, JobUpdate, chrono::DateTime<chrono::Utc>),
}

/// The workflows one batch touches: loaded before the job events are folded, so the
/// fold can note each step job's state after each of its events.
pub(crate) struct BatchFlows<'a> {
    workflows: HashMap<Uuid, WorkflowState>,
    /// Each workflow's step graph, built once per batch: a step event then looks only
    /// at its step and the steps after it.
    graphs: HashMap<Uuid, StepGraph>,
    /// Step job id → (workflow id, step index).
    steps_of_jobs: HashMap<Uuid, (Uuid, usize)>,
    changes: Vec<(u64, Change<'a>)>,
}

impl<'a> BatchFlows<'a> {
    /// Loads the workflows of `events` and of the step jobs among `job_ids`.
    pub(crate) async fn load<C: ConnectionTrait>(
        db: &C,
        events: &[(u64, &'a WorkflowEnvelope)],
        job_ids: impl Iterator<Item = Uuid>,
    ) -> Result<Self, DbErr> {
        let mut flows = BatchFlows {
            workflows: HashMap::new(),
            graphs: HashMap::new(),
            steps_of_jobs: HashMap::new(),
            changes: events
                .iter()
                .map(|(seq, e)| (*seq, Change::Workflow(e)))
                .collect(),
        };
        let mut ids: HashSet<String> = events
            .iter()
            .map(|(_, e)| e.workflow_id.to_string())
            .collect();
        let job_ids: Vec<String> = job_ids
            .collect::<HashSet<_>>()
            .into_iter()
            .map(|id| id.to_string())
            .collect();
        for chunk in job_ids.chunks(ROWS_PER_STATEMENT) {
            // Only the workflow ids: the rows (with their specs) are read once per workflow below.
            let owners: Vec<String> = workflow_step::Entity::find()
                .select_only()
                .column(workflow_step::Column::WorkflowId)
                .filter(workflow_step::Column::JobId.is_in(chunk.iter().cloned()))
                .into_tuple()
                .all(db)
                .await?;
            ids.extend(owners);
        }
        let ids: Vec<String> = ids.into_iter().collect();
        for chunk in ids.chunks(ROWS_PER_STATEMENT) {
            let rows = workflow::Entity::find()
                .filter(workflow::Column::Id.is_in(chunk.iter().cloned()))
                .all(db)
                .await?;
            for row in rows {
                match load_steps(db, row).await? {
                    Ok(wf) => flows.insert(wf),
                    Err(e) => {
                        tracing::error!(error = %e, "unreadable workflow rows: its events are ignored until the projection is rebuilt");
                    }
                }
            }
        }
        // Workflows submitted in this batch: their step jobs may follow in it.
        for (_, e) in events {
            if let WorkflowEvent::Submitted { steps, .. } = &e.event {
                for (i, s) in steps.iter().enumerate() {
                    flows
                        .steps_of_jobs
                        .entry(step_job_id(e.workflow_id, &s.id))
                        .or_insert((e.workflow_id, i));
                }
            }
        }
        Ok(flows)
    }

    fn insert(&mut self, wf: WorkflowState) {
        for (i, s) in wf.steps.iter().enumerate() {
            self.steps_of_jobs.insert(s.job_id, (wf.id, i));
        }
        self.graphs.insert(wf.id, StepGraph::of(&wf.steps));
        self.workflows.insert(wf.id, wf);
    }

    /// Notes a step job's state after one of its events (any other job is no concern).
    pub(crate) fn job_changed(&mut self, seq: u64, env: &Envelope, job: Option<&JobState>) {
        let (Some(job), true) = (job, self.steps_of_jobs.contains_key(&env.job_id)) else {
            return;
        };
        let update = JobUpdate {
            status: job.status,
            result: job.result.clone(),
            error: job.error.clone(),
            retry_requested: matches!(env.event, Event::RetryRequested { .. }),
            cancel_requested: matches!(env.event, Event::CancelRequested { .. })
                || job.cancel_requested(),
        };
        self.changes
            .push((seq, Change::Job(env.job_id, update, env.at)));
    }

    /// Folds everything noted, in stream order, and writes the rows that changed.
    /// Returns `(applied, ignored)` workflow events.
    pub(crate) async fn write<C: ConnectionTrait>(
        mut self,
        db: &C,
    ) -> Result<(usize, usize), DbErr> {
        self.changes.sort_by_key(|(seq, _)| *seq);
        let (mut applied, mut ignored) = (0, 0);
        let mut dirty: HashSet<Uuid> = HashSet::new();
        for (seq, change) in std::mem::take(&mut self.changes) {
            match change {
                Change::Workflow(env) => match self.fold_event(env, seq) {
                    Ok(()) => {
                        applied += 1;
                        dirty.insert(env.workflow_id);
                    }
                    Err(e) => {
                        tracing::info!(workflow_id = %env.workflow_id, seq, error = %e, "workflow event ignored");
                        ignored += 1;
                    }
                },
                Change::Job(job_id, update, at) => {
                    let Some(&(wf_id, index)) = self.steps_of_jobs.get(&job_id) else {
                        continue;
                    };
                    if let (Some(wf), Some(graph)) =
                        (self.workflows.get_mut(&wf_id), self.graphs.get(&wf_id))
                    {
                        wf.on_job_in(graph, index, &update, seq, at);
                        dirty.insert(wf_id);
                    }
                }
            }
        }
        let touched: Vec<&WorkflowState> = dirty
            .iter()
            .filter_map(|id| self.workflows.get(id))
            .collect();
        upsert(db, &touched).await?;
        Ok((applied, ignored))
    }

    fn fold_event(&mut self, env: &WorkflowEnvelope, seq: u64) -> Result<(), WorkflowRejected> {
        match self.workflows.get_mut(&env.workflow_id) {
            Some(wf) => wf.apply(env, seq),
            None => {
                let wf = WorkflowState::submitted(env, seq)
                    .ok_or(WorkflowRejected::Unknown(env.workflow_id))?;
                self.insert(wf);
                Ok(())
            }
        }
    }
}

/// A workflow row with its steps, as state.
async fn load_steps<C: ConnectionTrait>(
    db: &C,
    row: workflow::Model,
) -> Result<Result<WorkflowState, String>, DbErr> {
    use sea_orm::QueryOrder;
    let steps = workflow_step::Entity::find()
        .filter(workflow_step::Column::WorkflowId.eq(row.id.clone()))
        .order_by_asc(workflow_step::Column::Position)
        .all(db)
        .await?;
    Ok(row.into_state(steps))
}

/// Writes the workflows and their changed steps.
async fn upsert<C: ConnectionTrait>(db: &C, workflows: &[&WorkflowState]) -> Result<(), DbErr> {
    if workflows.is_empty() {
        return Ok(());
    }
    use workflow::Column as W;
    for chunk in workflows.chunks(ROWS_PER_STATEMENT) {
        workflow::Entity::insert_many(
            chunk
                .iter()
                .map(|wf| workflow::Model::from(*wf).into_active_model()),
        )
        .on_conflict(
            OnConflict::column(W::Id)
                .update_columns([
                    W::Status,
                    W::Generation,
                    W::UpdatedAt,
                    W::FinishedAt,
                    W::LastSeq,
                ])
                .to_owned(),
        )
        .exec_without_returning(db)
        .await?;
    }
    use workflow_step::Column as S;
    let steps: Vec<workflow_step::Model> = workflows
        .iter()
        .flat_map(|wf| {
            wf.steps
                .iter()
                .filter(|s| s.dirty)
                .map(|s| workflow_step::Model::of(wf, s))
        })
        .collect();
    for chunk in steps.chunks(ROWS_PER_STATEMENT) {
        workflow_step::Entity::insert_many(
            chunk
                .iter()
                .cloned()
                .map(IntoActiveModel::into_active_model),
        )
        .on_conflict(
            OnConflict::columns([S::WorkflowId, S::StepId])
                .update_columns([
                    S::Status,
                    S::Result,
                    S::Error,
                    S::Action,
                    S::HasJob,
                    S::CancelRequested,
                ])
                .to_owned(),
        )
        .exec_without_returning(db)
        .await?;
    }
    Ok(())
}
