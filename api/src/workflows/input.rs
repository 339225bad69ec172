//! The request body of `POST /v1/workflows` and its validation: the DAG form
//! (`steps`) and the `chain` / `group` / `chord` shorthands, each checked for unknown
//! kinds, payloads, dangling references, cycles and size, naming the steps at fault.

use std::collections::HashSet;

use jobstream_core::catalogue::FieldError;
use jobstream_core::kinds::Catalogue;
use jobstream_core::subject::validate_token;
use jobstream_core::workflow::{MAX_STEPS, OnFailure, StepDef, references, topological_order};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::input::{Field, Unknown, parse_object};
use crate::jobs::SubmitJob;

crate::input::impl_body!(SubmitWorkflow);

/// Longest workflow name.
pub const MAX_NAME_LEN: usize = 200;

/// A workflow submission: exactly one of `steps`, `chain`, `group` or `chord`.
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitWorkflow {
    /// Display name (at most 200 characters; default `workflow`).
    #[schema(value_type = Option<String>)]
    pub name: Option<Field<String>>,
    /// The DAG: each step is a job submission (as for `POST /v1/jobs`) plus `id`,
    /// `after` (step ids it waits for) and `on_failure` (`fail`, the default, or
    /// `continue`). A payload value `{"$from": "<step>.result.<field>"}` is replaced by
    /// that field of a dependency's result, `{"$text": "… {<step>.result.<field>} …"}` by
    /// the text with the value filled in.
    #[schema(value_type = Option<Vec<Object>>)]
    pub steps: Option<Field<Vec<Value>>>,
    /// Shorthand: each step after the one before (ids default to `0`, `1`, …).
    #[schema(value_type = Option<Vec<Object>>)]
    pub chain: Option<Field<Vec<Value>>>,
    /// Shorthand: steps that run in parallel.
    #[schema(value_type = Option<Vec<Object>>)]
    pub group: Option<Field<Vec<Value>>>,
    /// Shorthand: `{"header": [steps], "callback": step}`: the callback after every header step.
    #[schema(value_type = Option<Object>)]
    pub chord: Option<Field<Map<String, Value>>>,
    /// Names sent that are not fields of a workflow.
    #[serde(skip)]
    pub unknown: Unknown,
}

/// A valid workflow: its name and steps in dependency order.
#[derive(Debug)]
pub struct ValidWorkflow {
    /// Display name.
    pub name: String,
    /// Steps, each after its dependencies.
    pub steps: Vec<StepDef>,
}

/// Gives shorthand steps ids (`0`, `1`, …) where they have none, and their `after`.
fn shorthand(steps: Vec<Value>, after: impl Fn(usize, &[String]) -> Vec<String>) -> Vec<Value> {
    let mut ids: Vec<String> = Vec::new();
    steps
        .into_iter()
        .enumerate()
        .map(|(i, mut step)| {
            if let Value::Object(m) = &mut step {
                let id = m
                    .get("id")
                    .and_then(Value::as_str)
                    .map_or_else(|| i.to_string(), str::to_owned);
                m.insert("id".into(), Value::String(id.clone()));
                m.entry("after")
                    .or_insert_with(|| serde_json::json!(after(i, &ids)));
                ids.push(id);
            }
            step
        })
        .collect()
}

impl SubmitWorkflow {
    /// The steps in DAG form, whichever form was sent.
    fn into_steps(self, errors: &mut Vec<FieldError>) -> Option<Vec<Value>> {
        let mut forms = Vec::new();
        let mut take = |name: &str, v: Option<Field<Vec<Value>>>| match v {
            Some(Field::Valid(s)) => forms.push((name.to_owned(), s)),
            Some(Field::Invalid(_)) => {
                errors.push(FieldError::new(name, "must be an array of steps"));
            }
            None => {}
        };
        take("steps", self.steps);
        take(
            "chain",
            self.chain.map(|c| match c {
                Field::Valid(s) => Field::Valid(shorthand(s, |i, ids| {
                    ids.get(i.wrapping_sub(1)).cloned().into_iter().collect()
                })),
                other @ Field::Invalid(_) => other,
            }),
        );
        take(
            "group",
            self.group.map(|g| match g {
                Field::Valid(s) => Field::Valid(shorthand(s, |_, _| Vec::new())),
                other @ Field::Invalid(_) => other,
            }),
        );
        match self.chord {
            Some(Field::Valid(mut c)) => {
                let header = c.remove("header");
                let callback = c.remove("callback");
                match (header, callback) {
                    (Some(Value::Array(h)), Some(cb @ Value::Object(_))) => {
                        let mut steps = shorthand(h, |_, _| Vec::new());
                        let ids: Vec<Value> =
                            steps.iter().filter_map(|s| s.get("id").cloned()).collect();
                        let mut cb = cb;
                        if let Value::Object(m) = &mut cb {
                            m.entry("id")
                                .or_insert_with(|| Value::String("callback".into()));
                            m.insert("after".into(), Value::Array(ids));
                        }
                        steps.push(cb);
                        forms.push(("chord".to_owned(), steps));
                    }
                    _ => errors.push(FieldError::new(
                        "chord",
                        "must be {\"header\": [steps], \"callback\": step}",
                    )),
                }
            }
            Some(Field::Invalid(_)) => errors.push(FieldError::new(
                "chord",
                "must be {\"header\": [steps], \"callback\": step}",
            )),
            None => {}
        }
        match forms.len() {
            1 => forms.pop().map(|(_, s)| s),
            0 if errors.is_empty() => {
                errors.push(FieldError::new(
                    "steps",
                    "required (or one of chain, group, chord)",
                ));
                None
            }
            0 => None,
            _ => {
                errors.push(FieldError::new(
                    "steps",
                    "give exactly one of steps, chain, group, chord",
                ));
                None
            }
        }
    }

    /// Validates the workflow of `owner`; each error names its step as `steps[<id>].<field>`.
    pub fn validate(
        mut self,
        owner: &str,
        kinds: &Catalogue,
    ) -> Result<ValidWorkflow, Vec<FieldError>> {
        let mut errors = Vec::new();
        self.unknown.report(&mut errors);
        let name = match self.name.take() {
            None => "workflow".to_owned(),
            Some(Field::Valid(n)) if !n.is_empty() && n.chars().count() <= MAX_NAME_LEN => n,
            Some(_) => {
                errors.push(FieldError::new(
                    "name",
                    format!("must be a string of 1 to {MAX_NAME_LEN} characters"),
                ));
                String::new()
            }
        };
        let Some(raw) = self.into_steps(&mut errors) else {
            return Err(errors);
        };
        if raw.is_empty() || raw.len() > MAX_STEPS {
            errors.push(FieldError::new(
                "steps",
                format!("must hold 1 to {MAX_STEPS} steps (found {})", raw.len()),
            ));
            return Err(errors);
        }
        let mut steps = Vec::with_capacity(raw.len());
        let mut seen = HashSet::new();
        for (i, step) in raw.into_iter().enumerate() {
            if let Some(s) = validate_step(i, step, owner, kinds, &mut seen, &mut errors) {
                steps.push(s);
            }
        }
        check_graph(&steps, &seen, &mut errors);
        if !errors.is_empty() {
            return Err(errors);
        }
        let graph: Vec<(String, Vec<String>)> = steps
            .iter()
            .map(|s| (s.id.clone(), s.after.clone()))
            .collect();
        let order = topological_order(&graph).map_err(|cycle| {
            cycle
                .into_iter()
                .map(|id| FieldError::new(format!("steps[{id}].after"), "part of a cycle"))
                .collect::<Vec<_>>()
        })?;
        let mut by_index: Vec<Option<StepDef>> = steps.into_iter().map(Some).collect();
        Ok(ValidWorkflow {
            name,
            steps: order
                .into_iter()
                .filter_map(|i| by_index[i].take())
                .collect(),
        })
    }
}

/// One step: its own fields, then the job submission it holds.
fn validate_step(
    i: usize,
    step: Value,
    owner: &str,
    kinds: &Catalogue,
    seen: &mut HashSet<String>,
    errors: &mut Vec<FieldError>,
) -> Option<StepDef> {
    let Value::Object(mut m) = step else {
        errors.push(FieldError::new(
            format!("steps[{i}]"),
            "must be a JSON object",
        ));
        return None;
    };
    let id = match m.remove("id") {
        Some(Value::String(id)) if validate_token(&id).is_ok() => id,
        _ => {
            errors.push(FieldError::new(
                format!("steps[{i}].id"),
                "required: 1-64 letters, digits, '-' or '_'",
            ));
            return None;
        }
    };
    let at = |field: &str| format!("steps[{id}].{field}");
    if !seen.insert(id.clone()) {
        errors.push(FieldError::new(at("id"), "used by another step"));
    }
    let after: Vec<String> = match m.remove("after") {
        None => Vec::new(),
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => a
            .into_iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        Some(_) => {
            errors.push(FieldError::new(at("after"), "must be an array of step ids"));
            Vec::new()
        }
    };
    let on_failure = match m.remove("on_failure") {
        None => OnFailure::Fail,
        Some(v) => serde_json::from_value(v).unwrap_or_else(|_| {
            errors.push(FieldError::new(
                at("on_failure"),
                "must be fail or continue",
            ));
            OnFailure::Fail
        }),
    };
    for unsupported in ["idempotency_key", "run_at", "delay_ms"] {
        if m.remove(unsupported).is_some() {
            errors.push(FieldError::new(
                at(unsupported),
                "not supported in a workflow step",
            ));
        }
    }
    let payload = m.get("payload").cloned().unwrap_or(Value::Null);
    let refs = references(&payload);
    for (field, r) in &refs {
        match r {
            Err(message) => errors.push(FieldError::new(at(field), message.clone())),
            Ok(r) if !after.contains(&r.step) => errors.push(FieldError::new(
                at(field),
                format!(
                    "dangling reference: step {:?} is not in this step's after",
                    r.step
                ),
            )),
            Ok(_) => {}
        }
    }
    let unchecked: Vec<String> = refs.into_iter().map(|(f, _)| f).collect();
    let job = match parse_object::<SubmitJob>(Value::Object(m)) {
        Ok(job) => job,
        Err(crate::input::BodyError::Fields(errs)) => {
            errors.extend(
                errs.into_iter()
                    .map(|e| FieldError::new(at(&e.field), e.message)),
            );
            return None;
        }
        Err(crate::input::BodyError::NotObject) => return None,
    };
    match job.validate_except(owner, kinds, &unchecked) {
        Ok(spec) => Some(StepDef {
            id,
            after,
            on_failure,
            spec,
        }),
        Err(errs) => {
            errors.extend(
                errs.into_iter()
                    .map(|e| FieldError::new(at(&e.field), e.message)),
            );
            None
        }
    }
}

/// Every `after` names a step of the workflow.
fn check_graph(steps: &[StepDef], ids: &HashSet<String>, errors: &mut Vec<FieldError>) {
    for s in steps {
        for d in &s.after {
            if !ids.contains(d) {
                errors.push(FieldError::new(
                    format!("steps[{}].after", s.id),
                    format!("dangling reference: no step {d:?}"),
                ));
            }
        }
    }
}
