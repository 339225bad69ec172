//! Child jobs from a handler: fan out, then continue when every child has finished,
//! without holding a worker slot while waiting.
//!
//! A handler that needs children calls [`Children::fan_out`] with the child steps and a
//! *continuation* step, and returns at once (its result names the children's workflow).
//! The children and the continuation form a workflow (a chord): the continuation is a job
//! that starts when every child has succeeded, with the children's results in its payload
//! through `$from` references; it does the "after the wait" half of the work. No slot is
//! held idle during the wait, and nothing is lost if a worker dies meanwhile: the wait is
//! the workflow's state in the stream, not a task in memory.
//!
//! Exactly once: the workflow id is derived from the parent job's id, and its
//! `workflow.submitted` is appended only while the subject is empty (and de-duplicated
//! by its `Nats-Msg-Id`), so a parent re-run after a crash finds its children instead
//! of making new ones.

use jobstream_core::atomic::{EXPECTED_LAST_SUBJECT_SEQUENCE, Outgoing};
use jobstream_core::broker::Broker;
use jobstream_core::workflow::{StepDef, WorkflowEnvelope, WorkflowEvent, children_workflow_id};
use uuid::Uuid;

use crate::handler::{JobContext, JobError};

/// Enqueues child jobs for handlers (cheap to clone: hold one in the handler).
#[derive(Clone, Debug)]
pub struct Children {
    broker: Broker,
}

impl Children {
    /// Child jobs published through `broker`.
    pub fn new(broker: Broker) -> Self {
        Children { broker }
    }

    /// Enqueues `children` and `continuation` (which runs after all of them, whatever its
    /// `after` says) as one workflow owned by the parent's owner; returns its id. Calling it
    /// again for the same parent job returns the same id and enqueues nothing new.
    pub async fn fan_out(
        &self,
        parent: &JobContext,
        children: Vec<StepDef>,
        mut continuation: StepDef,
    ) -> Result<Uuid, JobError> {
        let workflow_id = children_workflow_id(parent.job_id);
        continuation.after = children.iter().map(|c| c.id.clone()).collect();
        let mut steps = children;
        steps.push(continuation);
        for s in &mut steps {
            s.spec.owner.clone_from(&parent.owner);
        }
        let mut env = WorkflowEnvelope::new(
            workflow_id,
            WorkflowEvent::Submitted {
                owner: parent.owner.clone(),
                name: format!("children of {}", parent.job_id),
                steps,
            },
        );
        env.event_id = workflow_id;
        let msg = Outgoing::new(env.subject(), env.to_bytes())
            .with_header("Nats-Msg-Id", &env.event_id.to_string())
            .with_header(EXPECTED_LAST_SUBJECT_SEQUENCE, "0");
        match self.broker.publish_atomic(vec![msg]).await {
            Ok(_) => {
                tracing::info!(job_id = %parent.job_id, %workflow_id, "children enqueued");
                Ok(workflow_id)
            }
            // Stored before (an earlier run of this parent): the same children.
            Err(e) if e.is_wrong_last_sequence() => Ok(workflow_id),
            Err(e) => Err(JobError::Failed(format!("children not enqueued: {e}"))),
        }
    }
}
