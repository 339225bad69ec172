//! `jobs tail`: follows `GET /v1/events` (Server-Sent Events) and prints each event
//! as it comes; after a dropped connection it resumes after the last event seen
//! (`Last-Event-ID`), so nothing is lost or printed twice.

use std::time::Duration;

use futures::StreamExt;
use reqwest::Method;
use serde_json::Value;

use super::Client;

/// Wait before reconnecting after the stream ended.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

/// One SSE event.
#[derive(Debug, Default, PartialEq)]
struct SseEvent {
    id: Option<String>,
    event: Option<String>,
    data: String,
}

/// Follows the events matching the filters until interrupted.
pub(super) async fn follow(
    client: &Client,
    job: Option<String>,
    queue: Option<String>,
    kind: Option<String>,
) -> anyhow::Result<()> {
    let query: Vec<(&str, String)> = [("job_id", job), ("queue", queue), ("kind", kind)]
        .into_iter()
        .filter_map(|(k, v)| Some((k, v?)))
        .collect();
    let mut last_id: Option<String> = None;
    loop {
        let mut rb = client
            .request(Method::GET, "/v1/events")
            .query(&query)
            .header(reqwest::header::ACCEPT, "text/event-stream");
        if let Some(id) = &last_id {
            rb = rb.header("Last-Event-ID", id);
        }
        let res = match (client.send(rb).await, &last_id) {
            (Ok(res), _) => res,
            // A refusal at the start is the answer; after a drop, the server may be restarting.
            (Err(e), None) => return Err(e),
            (Err(e), Some(_)) => {
                tracing::warn!(error = %e, "event stream unavailable; reconnecting");
                tokio::time::sleep(RECONNECT_AFTER).await;
                continue;
            }
        };
        let mut body = res.bytes_stream();
        let mut buf = String::new();
        while let Some(chunk) = body.next().await {
            let chunk: bytes::Bytes = match chunk {
                Ok(c) => c,
                Err(_) => break,
            };
            buf.push_str(&String::from_utf8_lossy(&chunk).replace("\r\n", "\n"));
            while let Some(end) = buf.find("\n\n") {
                let block: String = buf.drain(..end + 2).collect();
                let ev = parse_block(&block);
                if ev.id.is_some() {
                    last_id.clone_from(&ev.id);
                }
                print_event(client, &ev);
            }
        }
        tokio::time::sleep(RECONNECT_AFTER).await;
    }
}

/// Parses one SSE block (lines up to a blank line); comments are ignored.
fn parse_block(block: &str) -> SseEvent {
    let mut ev = SseEvent::default();
    for line in block.lines() {
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" => ev.id = Some(value.to_owned()),
            "event" => ev.event = Some(value.to_owned()),
            "data" => {
                if !ev.data.is_empty() {
                    ev.data.push('\n');
                }
                ev.data.push_str(value);
            }
            _ => {}
        }
    }
    ev
}

/// Prints a job event (heartbeats and other control events have no id: skipped).
fn print_event(client: &Client, ev: &SseEvent) {
    let Some(seq) = &ev.id else { return };
    if client.json {
        println!("{}", ev.data);
        return;
    }
    let data: Value = serde_json::from_str(&ev.data).unwrap_or(Value::Null);
    let text = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_owned);
    println!(
        "{seq:>8}  {}  {:<16}  {}  attempt {}",
        text(&data["at"]),
        ev.event.as_deref().unwrap_or("-"),
        text(&data["job_id"]),
        text(&data["attempt"]),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_blocks_parse_into_events() {
        let ev = parse_block("id: 42\nevent: succeeded\ndata: {\"a\":1}\n\n");
        assert_eq!(ev.id.as_deref(), Some("42"));
        assert_eq!(ev.event.as_deref(), Some("succeeded"));
        assert_eq!(ev.data, "{\"a\":1}");
        assert_eq!(parse_block(": keep-alive\n\n"), SseEvent::default());
    }
}
