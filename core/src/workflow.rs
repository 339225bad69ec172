//! Workflows (DAGs of jobs), event-sourced like jobs: a closed, versioned enum of
//! workflow events under `workflows.<workflow_id>.<event>`, the deterministic ids of
//! step jobs, `$from` references, and the pure workflow fold.
//!
//! # Design: who enqueues the next step
//! The fold decides, the conductor publishes. When the projector folds a step job's
//! outcome it also folds the workflow ([`WorkflowState::on_job`]), and a step whose
//! dependencies all succeeded gets a pending [`StepAction`] in its row, in the same
//! transaction as the checkpoint (an outbox). A small conductor in the projector process
//! publishes each pending action and the fold clears it when the matching job event
//! arrives. Why there and not in the worker that finished the previous step: the fan-in
//! decision needs every dependency's outcome, which only the fold sees in order (two
//! workers finishing the last two dependencies at once would each see the other's step
//! unfinished, or both finished); and a worker dying between its outcome and the
//! enqueue would lose the step, while the outbox row survives any crash.
//!
//! Exactly once: a step's job id is derived from (workflow id, step id)
//! ([`step_job_id`]) and every event the conductor publishes has a derived event id
//! ([`derived_event_id`]), the `Nats-Msg-Id`; so a conductor that publishes twice
//! (a crash before the fold cleared the action, two projectors during a hand-over) is
//! de-duplicated by the stream, and a replay folds to the same ids and rows.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::event::{DecodeError, JobSpec, SCHEMA_VERSION, now};
use crate::fold::JobStatus;

/// Prefix of every workflow event subject.
pub use crate::subject::WORKFLOWS_PREFIX as PREFIX;

/// Most steps in one workflow.
pub const MAX_STEPS: usize = 1000;

/// Every workflow event, wrapped with what all of them share.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkflowEnvelope {
    /// Schema version.
    pub v: u16,
    /// Unique id of the event; its `Nats-Msg-Id`.
    pub event_id: Uuid,
    /// The workflow (UUIDv7, also the subject token).
    pub workflow_id: Uuid,
    /// When it happened (microseconds).
    pub at: DateTime<Utc>,
    /// The event, tagged by `type`.
    #[serde(flatten)]
    pub event: WorkflowEvent,
}

/// What a step does when its job fails for good.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// The workflow fails; its steps not yet started are cancelled.
    #[default]
    Fail,
    /// The workflow goes on; the steps that depend on this one are skipped.
    Continue,
}

/// One step as submitted: a job spec whose payload may hold references.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepDef {
    /// Step id, unique in the workflow.
    pub id: String,
    /// Steps that must succeed first.
    #[serde(default)]
    pub after: Vec<String>,
    /// What a failure of this step does.
    #[serde(default)]
    pub on_failure: OnFailure,
    /// The job to run; `payload` may hold `{"$from": ..}` / `{"$text": ..}` references.
    pub spec: JobSpec,
}

/// What happened to a workflow. A closed set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum WorkflowEvent {
    /// The workflow exists from now on, with every step (in dependency order).
    #[serde(rename = "workflow.submitted")]
    Submitted {
        /// `sub` of its owner.
        owner: String,
        /// Display name.
        name: String,
        /// The steps, each after the steps it depends on.
        steps: Vec<StepDef>,
    },
    /// Cancel the running and pending steps.
    #[serde(rename = "workflow.cancel_requested")]
    CancelRequested {
        /// Who asked.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
    },
    /// Run the failed or cancelled steps again, and those after them.
    #[serde(rename = "workflow.retry_requested")]
    RetryRequested {
        /// Who asked.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
    },
}

impl WorkflowEvent {
    /// The subject token.
    pub fn token(&self) -> &'static str {
        match self {
            WorkflowEvent::Submitted { .. } => "submitted",
            WorkflowEvent::CancelRequested { .. } => "cancel_requested",
            WorkflowEvent::RetryRequested { .. } => "retry_requested",
        }
    }
}

impl WorkflowEnvelope {
    /// A new event of `workflow_id`, stamped now.
    pub fn new(workflow_id: Uuid, event: WorkflowEvent) -> Self {
        WorkflowEnvelope {
            v: SCHEMA_VERSION,
            event_id: Uuid::now_v7(),
            workflow_id,
            at: now(),
            event,
        }
    }

    /// JSON bytes for the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads a workflow event, refusing unknown schema versions.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let env: WorkflowEnvelope = serde_json::from_slice(bytes)?;
        if env.v > SCHEMA_VERSION {
            return Err(DecodeError::UnsupportedVersion(env.v));
        }
        Ok(env)
    }

    /// The subject it is stored under.
    pub fn subject(&self) -> String {
        crate::subject::workflow_event(self.workflow_id, self.event.token())
    }
}

/// A UUIDv7-shaped id: the time bits of `base` (so step jobs sort with their workflow
/// in the jobs list), the rest from SHA-256 over `parts`.
fn derived_v7(base: Uuid, parts: &[&str]) -> Uuid {
    let mut h = Sha256::new();
    h.update(base.as_bytes());
    for p in parts {
        h.update([0u8]);
        h.update(p.as_bytes());
    }
    let h = h.finalize();
    let mut b = [0u8; 16];
    b[..6].copy_from_slice(&base.as_bytes()[..6]);
    b[6..].copy_from_slice(&h[..10]);
    b[6] = 0x70 | (b[6] & 0x0f);
    b[8] = 0x80 | (b[8] & 0x3f);
    Uuid::from_bytes(b)
}

/// The job id of step `step_id` of workflow `workflow_id`: the same for every process and every replay.
pub fn step_job_id(workflow_id: Uuid, step_id: &str) -> Uuid {
    derived_v7(workflow_id, &["workflow-step", step_id])
}

/// The id of the workflow of child jobs a handler enqueues for job `parent` (one per parent job).
pub fn children_workflow_id(parent: Uuid) -> Uuid {
    derived_v7(parent, &["children"])
}

/// The event id (`Nats-Msg-Id`) of the conductor's `what` for a step job in round `generation`.
pub fn derived_event_id(job_id: Uuid, what: &str, generation: u32) -> Uuid {
    derived_v7(job_id, &[what, &generation.to_string()])
}

/// A reference in a step payload: `{"$from": "<step>.result.<path>"}` is replaced by that
/// value of a dependency's result; `{"$text": "a {<step>.result.<path>} b"}` by the text
/// with each `{…}` replaced (strings as they are, other values as JSON).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// The step referred to.
    pub step: String,
    /// Keys (or array indices) inside its result.
    pub path: Vec<String>,
}

impl Reference {
    /// Parses `<step>.result[.<key>…]`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut parts = s.split('.');
        let step = parts.next().unwrap_or_default();
        if step.is_empty() || parts.next() != Some("result") {
            return Err(format!(
                "reference {s:?} must look like \"<step>.result.<field>\""
            ));
        }
        Ok(Reference {
            step: step.to_owned(),
            path: parts.map(str::to_owned).collect(),
        })
    }

    fn resolve<'a>(&self, results: &'a HashMap<&str, &'a Value>) -> Value {
        let mut v = results.get(self.step.as_str()).copied();
        for key in &self.path {
            v = v.and_then(|v| match v {
                Value::Array(a) => key.parse::<usize>().ok().and_then(|i| a.get(i)),
                other => other.get(key),
            });
        }
        v.cloned().unwrap_or(Value::Null)
    }
}

/// Placeholders `{…}` of a `$text` template.
fn template_refs(t: &str) -> Vec<(usize, usize, &str)> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(open) = t[from..].find('{').map(|i| i + from) {
        let Some(close) = t[open..].find('}').map(|i| i + open) else {
            break;
        };
        out.push((open, close + 1, &t[open + 1..close]));
        from = close + 1;
    }
    out
}

/// Every reference in `payload`, with the payload field (`payload.a.b`) it sits at.
pub fn references(payload: &Value) -> Vec<(String, Result<Reference, String>)> {
    fn walk(v: &Value, at: String, out: &mut Vec<(String, Result<Reference, String>)>) {
        match v {
            Value::Object(m) if m.len() == 1 && m.contains_key("$from") => {
                let r = match &m["$from"] {
                    Value::String(s) => Reference::parse(s),
                    _ => Err("$from must be a string".to_owned()),
                };
                out.push((at, r));
            }
            Value::Object(m) if m.len() == 1 && m.contains_key("$text") => match &m["$text"] {
                Value::String(t) => {
                    for (_, _, r) in template_refs(t) {
                        out.push((at.clone(), Reference::parse(r)));
                    }
                }
                _ => out.push((at, Err("$text must be a string".to_owned()))),
            },
            Value::Object(m) => {
                for (k, v) in m {
                    walk(v, format!("{at}.{k}"), out);
                }
            }
            Value::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    walk(v, format!("{at}.{i}"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(payload, "payload".to_owned(), &mut out);
    out
}

/// `payload` with every reference replaced from `results` (step id → result); a missing value is `null`.
pub fn resolve(payload: &Value, results: &HashMap<&str, &Value>) -> Value {
    match payload {
        Value::Object(m) if m.len() == 1 && m.contains_key("$from") => m["$from"]
            .as_str()
            .and_then(|s| Reference::parse(s).ok())
            .map_or(Value::Null, |r| r.resolve(results)),
        Value::Object(m) if m.len() == 1 && m.contains_key("$text") => {
            let t = m["$text"].as_str().unwrap_or_default();
            let mut out = String::new();
            let mut last = 0;
            for (start, end, r) in template_refs(t) {
                out.push_str(&t[last..start]);
                let v = Reference::parse(r).map_or(Value::Null, |r| r.resolve(results));
                match v {
                    Value::String(s) => out.push_str(&s),
                    other => out.push_str(&other.to_string()),
                }
                last = end;
            }
            out.push_str(&t[last..]);
            Value::String(out)
        }
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), resolve(v, results)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(|v| resolve(v, results)).collect()),
        other => other.clone(),
    }
}

/// Where a workflow is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkflowStatus {
    /// Steps run or wait.
    Running,
    /// Every step ended, none failed the workflow.
    Succeeded,
    /// A step failed (without `on_failure: continue`).
    Failed,
    /// Cancelled by a client.
    Cancelled,
}

impl WorkflowStatus {
    /// Every status.
    pub const ALL: [WorkflowStatus; 4] = [
        WorkflowStatus::Running,
        WorkflowStatus::Succeeded,
        WorkflowStatus::Failed,
        WorkflowStatus::Cancelled,
    ];

    /// The wire/SQL name.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkflowStatus::Running => "running",
            WorkflowStatus::Succeeded => "succeeded",
            WorkflowStatus::Failed => "failed",
            WorkflowStatus::Cancelled => "cancelled",
        }
    }

    /// Parses the wire/SQL name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

/// Status of a step: its job's status, or `pending` (no job yet) / `skipped` (never runs).
pub const STEP_PENDING: &str = "pending";
/// A step that never runs: a dependency failed with `on_failure: continue`, or the workflow ended first.
pub const STEP_SKIPPED: &str = "skipped";

/// What the conductor must publish for a step (the outbox).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepAction {
    /// Publish the step job's `queued` event.
    Enqueue,
    /// Publish `retry_requested` for the step's (failed or cancelled) job.
    Retry,
    /// Publish `cancel_requested` for the step's job.
    Cancel,
}

impl StepAction {
    /// The SQL name.
    pub fn as_str(self) -> &'static str {
        match self {
            StepAction::Enqueue => "enqueue",
            StepAction::Retry => "retry",
            StepAction::Cancel => "cancel",
        }
    }

    /// Parses the SQL name.
    pub fn parse(s: &str) -> Option<Self> {
        [StepAction::Enqueue, StepAction::Retry, StepAction::Cancel]
            .into_iter()
            .find(|a| a.as_str() == s)
    }
}

/// One step's current state.
#[derive(Debug, Clone, PartialEq)]
pub struct StepState {
    /// Step id.
    pub step_id: String,
    /// Position in dependency order.
    pub position: usize,
    /// Its job's id ([`step_job_id`]).
    pub job_id: Uuid,
    /// Steps it waits for.
    pub after: Vec<String>,
    /// What its failure does.
    pub on_failure: OnFailure,
    /// The job to run (payload with references unresolved).
    pub spec: JobSpec,
    /// `pending`, `skipped`, or its job's status.
    pub status: String,
    /// Its job's result.
    pub result: Option<Value>,
    /// Its job's error.
    pub error: Option<String>,
    /// What the conductor must publish, if anything.
    pub action: Option<StepAction>,
    /// Whether its job exists (its `queued` event was folded).
    pub has_job: bool,
    /// Whether a cancel of its job was stored (so it is not asked twice).
    pub cancel_requested: bool,
    /// Whether this row changed in the current fold (not stored).
    pub dirty: bool,
}

impl StepState {
    fn ended(&self) -> bool {
        self.status == STEP_SKIPPED
            || JobStatus::parse(&self.status).is_some_and(|s| s.is_terminal())
    }

    fn succeeded(&self) -> bool {
        self.status == JobStatus::Succeeded.as_str()
    }

    /// Whether this step, as it is, fails a running workflow.
    fn fails_workflow(&self) -> bool {
        self.on_failure == OnFailure::Fail
            && self.action.is_none()
            && matches!(
                JobStatus::parse(&self.status),
                Some(JobStatus::Failed | JobStatus::Cancelled)
            )
    }

    /// In a failed or cancelled workflow: a pending step never starts; a job not yet
    /// started (and, when `cancelled`, a running one) is asked to stop.
    fn stop(&mut self, cancelled: bool) {
        if self.status == STEP_PENDING {
            self.set_action(None);
            self.set_status(STEP_SKIPPED);
            return;
        }
        let stoppable = match JobStatus::parse(&self.status) {
            Some(JobStatus::Running) => cancelled,
            Some(status) => !status.is_terminal(),
            None => false,
        };
        if stoppable && !self.cancel_requested && self.action.is_none() {
            self.set_action(Some(StepAction::Cancel));
        }
    }

    fn set_action(&mut self, action: Option<StepAction>) {
        if self.action != action {
            self.action = action;
            self.dirty = true;
        }
    }

    fn set_status(&mut self, status: &str) {
        if self.status != status {
            self.status = status.to_owned();
            self.dirty = true;
        }
    }
}

/// Who depends on whom in a workflow, by step index: derived from the steps (never
/// stored), so a fold of many step events looks only at the steps each one concerns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepGraph {
    /// The steps each step waits for.
    deps: Vec<Vec<usize>>,
    /// The steps that wait for each step.
    dependents: Vec<Vec<usize>>,
    /// Steps waiting for a step that is not before them (never ready, as in the full
    /// evaluation; validation refuses such workflows, so only an odd row has one).
    unresolved: Vec<bool>,
}

impl StepGraph {
    /// The graph of `steps`.
    pub fn of(steps: &[StepState]) -> Self {
        let index: HashMap<&str, usize> = steps
            .iter()
            .enumerate()
            .map(|(i, s)| (s.step_id.as_str(), i))
            .collect();
        let mut graph = StepGraph {
            deps: vec![Vec::new(); steps.len()],
            dependents: vec![Vec::new(); steps.len()],
            unresolved: vec![false; steps.len()],
        };
        for (i, s) in steps.iter().enumerate() {
            for d in &s.after {
                match index.get(d.as_str()) {
                    Some(&j) if j < i => {
                        graph.deps[i].push(j);
                        graph.dependents[j].push(i);
                    }
                    _ => graph.unresolved[i] = true,
                }
            }
        }
        graph
    }
}

/// A workflow's current state, with its steps in dependency order.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowState {
    /// Workflow id.
    pub id: Uuid,
    /// Owner's `sub`.
    pub owner: String,
    /// Display name.
    pub name: String,
    /// Where it is.
    pub status: WorkflowStatus,
    /// Retries so far (derived event ids differ per round).
    pub generation: u32,
    /// Submitted at.
    pub created_at: DateTime<Utc>,
    /// Latest change at.
    pub updated_at: DateTime<Utc>,
    /// Ended at.
    pub finished_at: Option<DateTime<Utc>>,
    /// Stream sequence of the latest event that changed it.
    pub last_seq: u64,
    /// The steps, in dependency order.
    pub steps: Vec<StepState>,
}

/// Why a workflow event was not applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkflowRejected {
    /// Submitted twice (the second is ignored).
    #[error("workflow {0} already exists")]
    AlreadySubmitted(Uuid),
    /// An event for a workflow never submitted.
    #[error("unknown workflow {0}")]
    Unknown(Uuid),
    /// The request does not fit the workflow's status.
    #[error("workflow {id} is {status}: {event} ignored")]
    Impossible {
        /// The workflow.
        id: Uuid,
        /// Its status.
        status: &'static str,
        /// The event.
        event: &'static str,
    },
}

/// A step job's state after one of its events, as the workflow fold needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct JobUpdate {
    /// The job's status after the event.
    pub status: JobStatus,
    /// The job's result.
    pub result: Option<Value>,
    /// The job's error.
    pub error: Option<String>,
    /// Whether the event was a `retry_requested`.
    pub retry_requested: bool,
    /// Whether the event was a `cancel_requested`.
    pub cancel_requested: bool,
}

impl WorkflowState {
    /// A new workflow from its `workflow.submitted` event.
    pub fn submitted(env: &WorkflowEnvelope, seq: u64) -> Option<Self> {
        let WorkflowEvent::Submitted { owner, name, steps } = &env.event else {
            return None;
        };
        let steps = steps
            .iter()
            .enumerate()
            .map(|(position, s)| StepState {
                step_id: s.id.clone(),
                position,
                job_id: step_job_id(env.workflow_id, &s.id),
                after: s.after.clone(),
                on_failure: s.on_failure,
                spec: s.spec.clone(),
                status: STEP_PENDING.to_owned(),
                result: None,
                error: None,
                action: None,
                has_job: false,
                cancel_requested: false,
                dirty: true,
            })
            .collect();
        let mut wf = WorkflowState {
            id: env.workflow_id,
            owner: owner.clone(),
            name: name.clone(),
            status: WorkflowStatus::Running,
            generation: 0,
            created_at: env.at,
            updated_at: env.at,
            finished_at: None,
            last_seq: seq,
            steps,
        };
        wf.advance(env.at);
        Some(wf)
    }

    /// Applies a cancel or retry request.
    pub fn apply(&mut self, env: &WorkflowEnvelope, seq: u64) -> Result<(), WorkflowRejected> {
        let impossible = |event| WorkflowRejected::Impossible {
            id: self.id,
            status: self.status.as_str(),
            event,
        };
        match &env.event {
            WorkflowEvent::Submitted { .. } => {
                return Err(WorkflowRejected::AlreadySubmitted(self.id));
            }
            WorkflowEvent::CancelRequested { .. } => {
                if self.status != WorkflowStatus::Running {
                    return Err(impossible("workflow.cancel_requested"));
                }
                self.status = WorkflowStatus::Cancelled;
                self.finished_at = Some(env.at);
            }
            WorkflowEvent::RetryRequested { .. } => {
                if !matches!(
                    self.status,
                    WorkflowStatus::Failed | WorkflowStatus::Cancelled
                ) {
                    return Err(impossible("workflow.retry_requested"));
                }
                self.status = WorkflowStatus::Running;
                self.finished_at = None;
                self.generation += 1;
                for s in &mut self.steps {
                    // Succeeded steps keep their results; running ones keep running.
                    if s.succeeded() || (!s.ended() && s.has_job) {
                        continue;
                    }
                    s.set_status(STEP_PENDING);
                    s.set_action(None);
                    s.cancel_requested = false;
                    s.error = None;
                }
            }
        }
        self.last_seq = seq;
        self.updated_at = env.at;
        self.advance(env.at);
        Ok(())
    }

    /// Folds one event of the job of step `index` (building the step graph for this one
    /// event; a caller folding many events of a workflow keeps one and calls [`Self::on_job_in`]).
    pub fn on_job(&mut self, index: usize, job: &JobUpdate, seq: u64, at: DateTime<Utc>) {
        let graph = StepGraph::of(&self.steps);
        self.on_job_in(&graph, index, job, seq, at);
    }

    /// Folds one event of the job of step `index`, with `graph` (this workflow's
    /// [`StepGraph`]): only that step and the steps after it are looked at, so folding
    /// every step of a wide chord costs the sum of their dependencies, not steps².
    /// It decides exactly what a full re-evaluation of every step would (a unit
    /// test compares the two), because after each fold no other step is left decidable:
    /// a running workflow has no failed step that fails it, and no pending step whose
    /// dependencies all succeeded or one ended otherwise.
    pub fn on_job_in(
        &mut self,
        graph: &StepGraph,
        index: usize,
        job: &JobUpdate,
        seq: u64,
        at: DateTime<Utc>,
    ) {
        let Some(s) = self.steps.get_mut(index) else {
            return;
        };
        s.has_job = true;
        s.set_status(job.status.as_str());
        s.result = job.result.clone();
        s.error = job.error.clone();
        s.dirty = true;
        if job.cancel_requested {
            s.cancel_requested = true;
        }
        let cleared = match s.action {
            Some(StepAction::Enqueue) => true,
            Some(StepAction::Retry) => job.retry_requested,
            Some(StepAction::Cancel) => job.cancel_requested || s.ended(),
            None => false,
        };
        if cleared {
            s.set_action(None);
        }
        let fails = s.fails_workflow();
        self.last_seq = seq;
        self.updated_at = at;
        if graph.deps.len() != self.steps.len() {
            // Not this workflow's graph: decide over every step.
            self.advance(at);
            return;
        }
        match self.status {
            WorkflowStatus::Running if fails => {
                self.status = WorkflowStatus::Failed;
                self.finished_at = Some(at);
                self.stop_steps();
            }
            WorkflowStatus::Running => {
                let mut ended = self.steps[index].ended();
                // The steps after this one, in dependency order (positions are one); a
                // skipped step passes the look on to its own dependants.
                let mut todo: std::collections::BTreeSet<usize> =
                    graph.dependents[index].iter().copied().collect();
                while let Some(d) = todo.pop_first() {
                    if self.decide(graph, d) {
                        ended = true;
                        todo.extend(graph.dependents[d].iter().copied());
                    }
                }
                if ended && self.steps.iter().all(StepState::ended) {
                    self.status = WorkflowStatus::Succeeded;
                    self.finished_at = Some(at);
                }
            }
            WorkflowStatus::Failed | WorkflowStatus::Cancelled => {
                let cancelled = self.status == WorkflowStatus::Cancelled;
                self.steps[index].stop(cancelled);
            }
            WorkflowStatus::Succeeded => {}
        }
    }

    /// Decides a pending step from its dependencies: enqueue (or retry) when all
    /// succeeded, skip when one ended otherwise. Returns whether it was skipped.
    fn decide(&mut self, graph: &StepGraph, d: usize) -> bool {
        let s = &self.steps[d];
        if s.status != STEP_PENDING || s.action.is_some() {
            return false;
        }
        let mut all_succeeded = !graph.unresolved[d];
        for &j in &graph.deps[d] {
            let dep = &self.steps[j];
            if !dep.succeeded() {
                if dep.ended() {
                    self.steps[d].set_status(STEP_SKIPPED);
                    return true;
                }
                all_succeeded = false;
            }
        }
        if all_succeeded {
            let s = &mut self.steps[d];
            let action = if s.has_job {
                StepAction::Retry
            } else {
                StepAction::Enqueue
            };
            s.set_action(Some(action));
        }
        false
    }

    /// Moves the workflow on: ends it when a step failed it or every step ended, marks
    /// steps whose dependencies succeeded for enqueueing, skips or cancels the rest.
    fn advance(&mut self, at: DateTime<Utc>) {
        if self.status == WorkflowStatus::Running
            && self.steps.iter().any(StepState::fails_workflow)
        {
            self.status = WorkflowStatus::Failed;
            self.finished_at = Some(at);
        }
        match self.status {
            WorkflowStatus::Running => self.schedule_ready(),
            WorkflowStatus::Failed | WorkflowStatus::Cancelled => self.stop_steps(),
            WorkflowStatus::Succeeded => {}
        }
        if self.status == WorkflowStatus::Running && self.steps.iter().all(StepState::ended) {
            self.status = WorkflowStatus::Succeeded;
            self.finished_at = Some(at);
        }
    }

    /// Steps in dependency order: each sees its dependencies' final say of this round.
    fn schedule_ready(&mut self) {
        let mut state: HashMap<String, (bool, bool)> = HashMap::new();
        for s in &mut self.steps {
            if s.status == STEP_PENDING && s.action.is_none() {
                let deps: Vec<(bool, bool)> = s
                    .after
                    .iter()
                    .map(|d| state.get(d).copied().unwrap_or((false, false)))
                    .collect();
                if deps.iter().all(|(ok, _)| *ok) {
                    s.set_action(Some(if s.has_job {
                        StepAction::Retry
                    } else {
                        StepAction::Enqueue
                    }));
                } else if deps.iter().any(|(ok, ended)| *ended && !ok) {
                    s.set_status(STEP_SKIPPED);
                }
            }
            state.insert(s.step_id.clone(), (s.succeeded(), s.ended()));
        }
    }

    /// A failed or cancelled workflow: pending steps never start; jobs not yet started
    /// (and, when cancelled, running ones) are asked to stop.
    fn stop_steps(&mut self) {
        let cancelled = self.status == WorkflowStatus::Cancelled;
        for s in &mut self.steps {
            s.stop(cancelled);
        }
    }

    /// Results of the succeeded steps, by step id (what references resolve against).
    pub fn results(&self) -> HashMap<&str, &Value> {
        self.steps
            .iter()
            .filter(|s| s.succeeded())
            .filter_map(|s| s.result.as_ref().map(|r| (s.step_id.as_str(), r)))
            .collect()
    }
}

/// Orders steps so each comes after its dependencies; `Err` names the steps on a cycle
/// (or depending on one).
pub fn topological_order(steps: &[(String, Vec<String>)]) -> Result<Vec<usize>, Vec<String>> {
    let index: HashMap<&str, usize> = steps
        .iter()
        .enumerate()
        .map(|(i, (id, _))| (id.as_str(), i))
        .collect();
    let mut indegree: Vec<usize> = steps.iter().map(|(_, after)| after.len()).collect();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); steps.len()];
    for (i, (_, after)) in steps.iter().enumerate() {
        for d in after {
            if let Some(&j) = index.get(d.as_str()) {
                dependents[j].push(i);
            }
        }
    }
    let mut ready: Vec<usize> = (0..steps.len()).filter(|&i| indegree[i] == 0).collect();
    ready.reverse();
    let mut order = Vec::with_capacity(steps.len());
    while let Some(i) = ready.pop() {
        order.push(i);
        for &j in dependents[i].iter().rev() {
            indegree[j] -= 1;
            if indegree[j] == 0 {
                ready.push(j);
            }
        }
    }
    if order.len() == steps.len() {
        return Ok(order);
    }
    let placed: HashSet<usize> = order.into_iter().collect();
    Err((0..steps.len())
        .filter(|i| !placed.contains(i))
        .map(|i| steps[i].0.clone())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn step(id: &str, after: &[&str], on_failure: OnFailure) -> StepDef {
        StepDef {
            id: id.into(),
            after: after.iter().map(|s| s.to_string()).collect(),
            on_failure,
            spec: serde_json::from_value(
                json!({"kind": "echo", "queue": "default", "owner": "alice",
                "payload": {"f": {"$from": "a.result.x"}}, "max_attempts": 1, "timeout_ms": 1000}),
            )
            .unwrap(),
        }
    }

    fn submitted(steps: Vec<StepDef>) -> WorkflowState {
        let env = WorkflowEnvelope::new(
            Uuid::now_v7(),
            WorkflowEvent::Submitted {
                owner: "alice".into(),
                name: "t".into(),
                steps,
            },
        );
        WorkflowState::submitted(&env, 1).unwrap()
    }

    fn job(status: JobStatus) -> JobUpdate {
        JobUpdate {
            status,
            result: (status == JobStatus::Succeeded).then(|| json!({"x": 7})),
            error: None,
            retry_requested: false,
            cancel_requested: false,
        }
    }

    fn actions(wf: &WorkflowState) -> Vec<Option<StepAction>> {
        wf.steps.iter().map(|s| s.action).collect()
    }

    #[test]
    fn a_chord_starts_its_callback_once_every_header_step_succeeded() {
        use StepAction::Enqueue;
        let f = OnFailure::Fail;
        let mut wf = submitted(vec![
            step("a", &[], f),
            step("b", &["a"], f),
            step("c", &["a"], f),
            step("d", &["b", "c"], f),
        ]);
        assert_eq!(actions(&wf), [Some(Enqueue), None, None, None]);
        let at = now();
        wf.on_job(0, &job(JobStatus::Queued), 2, at);
        wf.on_job(0, &job(JobStatus::Succeeded), 3, at);
        assert_eq!(actions(&wf), [None, Some(Enqueue), Some(Enqueue), None]);
        assert_eq!(
            resolve(&wf.steps[1].spec.payload, &wf.results()),
            json!({"f": 7})
        );
        for i in [1, 2] {
            wf.on_job(i, &job(JobStatus::Queued), 4, at);
        }
        wf.on_job(1, &job(JobStatus::Succeeded), 5, at);
        assert_eq!(wf.steps[3].action, None, "the callback waits for c");
        wf.on_job(2, &job(JobStatus::Succeeded), 6, at);
        assert_eq!(wf.steps[3].action, Some(Enqueue));
        wf.on_job(3, &job(JobStatus::Queued), 7, at);
        wf.on_job(3, &job(JobStatus::Succeeded), 8, at);
        assert_eq!(wf.status, WorkflowStatus::Succeeded);
    }

    #[test]
    fn a_failure_fails_the_workflow_and_a_retry_reruns_only_the_failed_part() {
        let f = OnFailure::Fail;
        let mut wf = submitted(vec![
            step("a", &[], f),
            step("b", &["a"], f),
            step("c", &["b"], f),
        ]);
        let at = now();
        wf.on_job(0, &job(JobStatus::Succeeded), 2, at);
        wf.on_job(1, &job(JobStatus::Failed), 3, at);
        assert_eq!(wf.status, WorkflowStatus::Failed);
        assert_eq!(wf.steps[2].status, STEP_SKIPPED);
        let retry = WorkflowEnvelope::new(wf.id, WorkflowEvent::RetryRequested { by: None });
        wf.apply(&retry, 4).unwrap();
        assert_eq!(wf.status, WorkflowStatus::Running);
        assert_eq!(actions(&wf), [None, Some(StepAction::Retry), None]);
        assert!(
            wf.apply(&retry, 5).is_err(),
            "a running workflow is not retried"
        );
    }

    #[test]
    fn continue_skips_dependents_and_cancel_stops_running_steps() {
        let mut wf = submitted(vec![
            step("a", &[], OnFailure::Continue),
            step("b", &["a"], OnFailure::Fail),
            step("c", &[], OnFailure::Fail),
        ]);
        let at = now();
        wf.on_job(0, &job(JobStatus::Failed), 2, at);
        assert_eq!(wf.status, WorkflowStatus::Running);
        assert_eq!(wf.steps[1].status, STEP_SKIPPED);
        wf.on_job(2, &job(JobStatus::Running), 3, at);
        let cancel = WorkflowEnvelope::new(wf.id, WorkflowEvent::CancelRequested { by: None });
        wf.apply(&cancel, 4).unwrap();
        assert_eq!(wf.steps[2].action, Some(StepAction::Cancel));
    }

    #[test]
    fn the_fold_of_a_step_event_decides_what_a_full_evaluation_would() {
        use rand::rngs::StdRng;
        use rand::{Rng, SeedableRng};
        let mut rng = StdRng::seed_from_u64(14);
        let statuses = [
            JobStatus::Queued,
            JobStatus::Running,
            JobStatus::Retrying,
            JobStatus::Succeeded,
            JobStatus::Failed,
            JobStatus::Cancelled,
        ];
        let mut events = 0;
        for _ in 0..300 {
            let n = rng.random_range(1..14);
            let steps: Vec<StepDef> = (0..n)
                .map(|i| {
                    let after: Vec<String> = (0..i)
                        .filter(|_| rng.random_bool(0.3))
                        .map(|j| format!("s{j}"))
                        .collect();
                    let after: Vec<&str> = after.iter().map(String::as_str).collect();
                    let on_failure = if rng.random_bool(0.3) {
                        OnFailure::Continue
                    } else {
                        OnFailure::Fail
                    };
                    step(&format!("s{i}"), &after, on_failure)
                })
                .collect();
            let mut incremental = submitted(steps);
            let mut full = incremental.clone();
            let graph = StepGraph::of(&incremental.steps);
            let at = now();
            for seq in 2..40 {
                if rng.random_bool(0.05) {
                    let event = if rng.random_bool(0.5) {
                        WorkflowEvent::CancelRequested { by: None }
                    } else {
                        WorkflowEvent::RetryRequested { by: None }
                    };
                    let env = WorkflowEnvelope::new(incremental.id, event);
                    assert_eq!(incremental.apply(&env, seq), full.apply(&env, seq));
                } else {
                    // Mostly what the conductor asked for, sometimes anything at all.
                    let i = rng.random_range(0..n);
                    let s = &incremental.steps[i];
                    let update = match s.action {
                        Some(StepAction::Enqueue) if rng.random_bool(0.8) => job(JobStatus::Queued),
                        Some(StepAction::Retry) if rng.random_bool(0.8) => JobUpdate {
                            retry_requested: true,
                            ..job(JobStatus::Queued)
                        },
                        Some(StepAction::Cancel) if rng.random_bool(0.8) => JobUpdate {
                            cancel_requested: true,
                            ..job(JobStatus::Cancelled)
                        },
                        _ => job(statuses[rng.random_range(0..statuses.len())]),
                    };
                    incremental.on_job_in(&graph, i, &update, seq, at);
                    full.on_job_in(&StepGraph::default(), i, &update, seq, at);
                }
                events += 1;
                assert_eq!(incremental, full, "after event {seq}");
            }
        }
        assert!(events > 10_000);
    }

    #[test]
    fn ids_are_derived_and_cycles_named() {
        let w = Uuid::now_v7();
        assert_eq!(step_job_id(w, "a"), step_job_id(w, "a"));
        assert_ne!(step_job_id(w, "a"), step_job_id(w, "b"));
        assert_eq!(step_job_id(w, "a").get_version_num(), 7);
        let s = |id: &str, after: &[&str]| {
            (
                id.to_owned(),
                after.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            )
        };
        assert_eq!(
            topological_order(&[s("b", &["a"]), s("a", &[])]),
            Ok(vec![1, 0])
        );
        assert_eq!(
            topological_order(&[s("a", &["b"]), s("b", &["a"]), s("c", &[])]),
            Err(vec!["a".to_owned(), "b".to_owned()])
        );
        let text = json!({"$text": "ids: {a.result.x}, {a.result.y}"});
        let r = json!({"x": "f1", "y": 2});
        let results = HashMap::from([("a", &r)]);
        assert_eq!(resolve(&text, &results), json!("ids: f1, 2"));
        assert_eq!(references(&text).len(), 2);
    }
}
