//! `jobs submit`: one job from flags, or every line of a JSON-lines file with a
//! progress bar. The whole file is checked before anything is sent, so a typo on
//! line 900 does not leave 899 jobs submitted and the rest not.

use std::path::Path;

use anyhow::Context;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::Method;
use serde_json::{Value, json};

use super::{Client, table};

/// Submissions in flight at once while sending a file.
const IN_FLIGHT: usize = 16;

/// Submits one job.
pub(super) async fn one(
    client: &Client,
    kind: &str,
    payload: &str,
    queue: Option<String>,
) -> anyhow::Result<()> {
    let payload: Value = serde_json::from_str(payload).context("--payload is not JSON")?;
    let mut body = json!({ "kind": kind, "payload": payload });
    if let Some(q) = queue {
        body["queue"] = Value::String(q);
    }
    let job = client
        .call(client.request(Method::POST, "/v1/jobs").json(&body))
        .await?;
    client.print(&job, table::job_row);
    Ok(())
}

/// Submits every line of a JSON-lines file (blank lines skipped).
pub(super) async fn file(client: &Client, path: &Path) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let bodies = parse_lines(&text)?;
    let bar = if client.json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(bodies.len() as u64)
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} jobs submitted ({per_sec}, eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let results: Vec<(usize, anyhow::Result<Value>)> = futures::stream::iter(bodies)
        .map(|(line, body)| {
            let bar = &bar;
            async move {
                let res = client
                    .call(client.request(Method::POST, "/v1/jobs").json(&body))
                    .await;
                bar.inc(1);
                (line, res)
            }
        })
        .buffered(IN_FLIGHT)
        .collect()
        .await;
    bar.finish_and_clear();
    let mut ids = Vec::new();
    let mut failed = Vec::new();
    for (line, res) in results {
        match res {
            Ok(job) => ids.push(job["id"].clone()),
            Err(e) => failed.push((line, e)),
        }
    }
    if client.json {
        println!("{}", json!({ "submitted": ids.len(), "ids": ids }));
    } else {
        println!("submitted {} jobs from {}", ids.len(), path.display());
    }
    if let Some((line, first)) = failed.first() {
        anyhow::bail!(
            "{} of {} submissions refused; line {line}: {first:#}",
            failed.len(),
            failed.len() + ids.len()
        );
    }
    Ok(())
}

/// `(line number, body)` of each non-blank line; the first line that is not a JSON
/// object is an error naming it.
fn parse_lines(text: &str) -> anyhow::Result<Vec<(usize, Value)>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let body: Value = serde_json::from_str(line)
            .map_err(|e| anyhow::anyhow!("line {}: not JSON ({e}); nothing submitted", i + 1))?;
        anyhow::ensure!(
            body.is_object(),
            "line {}: not a JSON object; nothing submitted",
            i + 1
        );
        out.push((i + 1, body));
    }
    anyhow::ensure!(!out.is_empty(), "the file holds no jobs");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_numbered_and_a_bad_one_is_named() {
        let ok = parse_lines("{\"kind\":\"echo\"}\n\n{\"kind\":\"echo\"}\n").unwrap();
        assert_eq!(ok.iter().map(|(l, _)| *l).collect::<Vec<_>>(), [1, 3]);
        let err = parse_lines("{\"kind\":\"echo\"}\n[1]\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("line 2:"), "{err}");
        assert!(parse_lines("\n").is_err());
    }
}
