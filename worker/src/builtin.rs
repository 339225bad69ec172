//! Built-in kinds for tests, benchmarks and smoke checks. They do real (if
//! trivial) work and honour cancellation.

use std::time::Duration;

use serde_json::{Value, json};

use crate::handler::{JobContext, JobError, Registry};

/// Registers `echo`, `sleep` and `fail`.
pub fn register(r: &mut Registry) {
    r.register("echo", echo)
        .register("sleep", sleep)
        .register("fail", fail);
}

/// Result = payload.
async fn echo(ctx: JobContext) -> Result<Value, JobError> {
    Ok(ctx.payload)
}

/// Sleeps `payload.ms` milliseconds in four steps, reporting progress after each of
/// the first three; stops early when cancelled.
async fn sleep(ctx: JobContext) -> Result<Value, JobError> {
    let ms = ctx
        .payload
        .get("ms")
        .and_then(Value::as_u64)
        .ok_or_else(|| JobError::Fatal("payload.ms must be a non-negative integer".into()))?;
    const STEPS: u64 = 4;
    for step in 1..=STEPS {
        let until = ms * step / STEPS;
        let slept = ms * (step - 1) / STEPS;
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(until - slept)) => {}
            () = ctx.cancel.cancelled() => {
                return Err(JobError::Failed(format!("cancelled while sleeping, after {slept} of {ms} ms")));
            }
        }
        if step < STEPS {
            let percent = u8::try_from(step * 100 / STEPS).unwrap_or(100);
            ctx.progress(percent, format!("slept {until} of {ms} ms"))
                .await;
        }
    }
    Ok(json!({ "slept_ms": ms }))
}

/// Fails the first `payload.times` attempts, then succeeds.
async fn fail(ctx: JobContext) -> Result<Value, JobError> {
    let times = ctx
        .payload
        .get("times")
        .and_then(Value::as_u64)
        .ok_or_else(|| JobError::Fatal("payload.times must be a non-negative integer".into()))?;
    if u64::from(ctx.attempt) <= times {
        Err(JobError::Failed(format!(
            "failing as asked: attempt {} of the first {times}",
            ctx.attempt
        )))
    } else {
        Ok(json!({ "attempts": ctx.attempt }))
    }
}
