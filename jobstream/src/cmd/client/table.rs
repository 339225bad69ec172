//! Tables for the terminal: aligned columns from the API's JSON answers.

use serde_json::Value;

/// Prints `rows` under `headers`, each column as wide as its widest cell.
fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// A JSON value as a cell: strings bare, absent values as `-`.
fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

const JOB_HEADERS: [&str; 6] = ["ID", "KIND", "QUEUE", "STATUS", "ATTEMPT", "CREATED"];

fn job_cells(job: &Value) -> Vec<String> {
    vec![
        cell(&job["id"]),
        cell(&job["kind"]),
        cell(&job["queue"]),
        cell(&job["status"]),
        format!("{}/{}", cell(&job["attempt"]), cell(&job["max_attempts"])),
        cell(&job["created_at"]),
    ]
}

/// One job as a one-row table.
pub(super) fn job_row(job: &Value) {
    print_table(&JOB_HEADERS, &[job_cells(job)]);
}

/// A page of jobs, and how to get the next one.
pub(super) fn job_page(page: &Value) {
    let rows: Vec<Vec<String>> = page["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(job_cells)
        .collect();
    print_table(&JOB_HEADERS, &rows);
    if let Some(next) = page["next_cursor"].as_str() {
        println!("more: --after {next}");
    }
}

/// One job, field by field.
pub(super) fn job_detail(job: &Value) {
    let Some(fields) = job.as_object() else {
        return;
    };
    let width = fields.keys().map(String::len).max().unwrap_or(0);
    for (k, v) in fields {
        println!("{k:<width$}  {}", cell(v));
    }
}

/// The queues overview.
pub(super) fn queues(queues: &Value) {
    let rows: Vec<Vec<String>> = queues
        .as_array()
        .into_iter()
        .flatten()
        .map(|q| {
            let depth = |s: &str| q["depth"][s].as_u64().unwrap_or(0).to_string();
            vec![
                cell(&q["name"]),
                if q["paused"] == true {
                    "paused"
                } else {
                    "running"
                }
                .to_owned(),
                depth("queued"),
                depth("running"),
                depth("retrying"),
                depth("scheduled"),
                q["oldest_waiting_ms"]
                    .as_u64()
                    .map_or_else(|| "-".to_owned(), |ms| format!("{}s", ms / 1000)),
                cell(&q["consumer"]["pending"]),
                cell(&q["consumer"]["ack_pending"]),
                cell(&q["consumer"]["redelivered"]),
                cell(&q["global_limit"]),
            ]
        })
        .collect();
    print_table(
        &[
            "QUEUE",
            "STATE",
            "QUEUED",
            "RUNNING",
            "RETRYING",
            "SCHEDULED",
            "OLDEST",
            "PENDING",
            "ACK_PENDING",
            "REDELIVERED",
            "LIMIT",
        ],
        &rows,
    );
}

/// A queue's state after a pause or resume.
pub(super) fn queue_control(state: &Value) {
    let verb = if state["paused"] == true {
        "paused"
    } else {
        "resumed"
    };
    println!(
        "queue {} {verb} by {}",
        cell(&state["queue"]),
        cell(&state["changed_by"])
    );
}

/// The workers registry.
pub(super) fn workers(workers: &Value) {
    let rows: Vec<Vec<String>> = workers
        .as_array()
        .into_iter()
        .flatten()
        .map(|w| {
            let queues: Vec<String> = w["queues"]
                .as_array()
                .into_iter()
                .flatten()
                .map(cell)
                .collect();
            vec![
                cell(&w["id"]),
                cell(&w["host"]),
                queues.join(","),
                format!("{}/{}", cell(&w["in_flight"]), cell(&w["concurrency"])),
                cell(&w["started_at"]),
                cell(&w["heartbeat_at"]),
                if w["stale"] == true { "stale" } else { "live" }.to_owned(),
            ]
        })
        .collect();
    print_table(
        &[
            "WORKER",
            "HOST",
            "QUEUES",
            "IN_FLIGHT",
            "STARTED",
            "LAST_HEARTBEAT",
            "STATE",
        ],
        &rows,
    );
}
