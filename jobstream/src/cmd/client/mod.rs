//! The terminal client: `jobstream jobs|queues|workers …` against a running API over
//! HTTP (`JOBSTREAM_URL`, `JOBSTREAM_TOKEN`). It goes through the same REST operations
//! as every other client; tables by default, `--json` for JSON. A refused request is
//! one line (the problem document's `detail`) and a non-zero exit.
//!
//! Layout: this file (the HTTP client and its errors, dispatch), `table.rs` (output),
//! `submit.rs` (one job, or a JSON-lines file with a progress bar), `tail.rs` (SSE).

mod submit;
mod table;
mod tail;

use anyhow::Context;
use reqwest::{Method, RequestBuilder, Response};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use crate::cli::{ClientArgs, JobsArgs, JobsCommand, QueuesArgs, QueuesCommand, WorkersArgs};

/// The API at one base URL, as one caller.
pub(crate) struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<SecretString>,
    /// Print JSON instead of tables.
    pub(crate) json: bool,
}

impl Client {
    fn new(args: ClientArgs) -> anyhow::Result<Self> {
        let base = args.url.trim_end_matches('/').to_owned();
        reqwest::Url::parse(&base)
            .with_context(|| format!("JOBSTREAM_URL {base:?} is not a URL"))?;
        Ok(Client {
            http: reqwest::Client::new(),
            base,
            token: args.token,
            json: args.json,
        })
    }

    /// A request to `path` (under the base URL) with the bearer token.
    pub(crate) fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let rb = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => rb.bearer_auth(t.expose_secret()),
            None => rb,
        }
    }

    /// Sends a request; a success's JSON body, or the refusal as one line.
    pub(crate) async fn call(&self, rb: RequestBuilder) -> anyhow::Result<Value> {
        let res = self.send(rb).await?;
        if res.status() == reqwest::StatusCode::NO_CONTENT {
            return Ok(Value::Null);
        }
        res.json().await.context("reading the API's answer")
    }

    /// Sends a request; the response if it succeeded, else its refusal as an error.
    pub(crate) async fn send(&self, rb: RequestBuilder) -> anyhow::Result<Response> {
        let res = rb
            .send()
            .await
            .with_context(|| format!("cannot reach the API at {}", self.base))?;
        if res.status().is_success() {
            Ok(res)
        } else {
            Err(refusal(res).await)
        }
    }

    /// Prints `value` as JSON, or with `table` when no `--json`.
    fn print(&self, value: &Value, table: impl FnOnce(&Value)) {
        if self.json {
            println!(
                "{}",
                serde_json::to_string_pretty(value).unwrap_or_default()
            );
        } else {
            table(value);
        }
    }
}

/// A refused request as one line: status and the problem document's `detail` (or `title`).
pub(crate) async fn refusal(res: Response) -> anyhow::Error {
    let status = res.status();
    let body: Value = res.json().await.unwrap_or(Value::Null);
    let detail = body["detail"]
        .as_str()
        .or_else(|| body["title"].as_str())
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("request failed"));
    let fields: Vec<String> = body["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            Some(format!(
                "{}: {}",
                e["field"].as_str()?,
                e["message"].as_str()?
            ))
        })
        .collect();
    let detail = one_line(detail);
    if fields.is_empty() {
        anyhow::anyhow!("{} {detail}", status.as_u16())
    } else {
        anyhow::anyhow!(
            "{} {detail} ({})",
            status.as_u16(),
            one_line(&fields.join("; "))
        )
    }
}

/// Text on one line (a server's message may hold newlines).
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A path segment from user input (ids, queue names), percent-encoded.
fn segment(s: &str) -> String {
    let mut url = reqwest::Url::parse("http://x/").expect("static URL");
    url.path_segments_mut().expect("base URL").push(s);
    url.path()[1..].to_owned()
}

/// `jobstream jobs …`.
pub async fn jobs(args: JobsArgs) -> anyhow::Result<()> {
    let client = Client::new(args.client)?;
    match args.command {
        JobsCommand::List {
            status,
            queue,
            kind,
            limit,
            after,
        } => {
            let query: Vec<(&str, String)> = [
                ("status", status),
                ("queue", queue),
                ("kind", kind),
                ("limit", limit.map(|l| l.to_string())),
                ("after", after),
            ]
            .into_iter()
            .filter_map(|(k, v)| Some((k, v?)))
            .collect();
            let page = client
                .call(client.request(Method::GET, "/v1/jobs").query(&query))
                .await?;
            client.print(&page, table::job_page);
        }
        JobsCommand::Get { id } => {
            let job = client
                .call(client.request(Method::GET, &format!("/v1/jobs/{}", segment(&id))))
                .await?;
            client.print(&job, table::job_detail);
        }
        JobsCommand::Submit {
            kind,
            payload,
            queue,
            file,
        } => match (file, kind) {
            (Some(file), _) => submit::file(&client, &file).await?,
            (None, Some(kind)) => submit::one(&client, &kind, &payload, queue).await?,
            (None, None) => anyhow::bail!("give a kind, or --file"),
        },
        JobsCommand::Cancel { id, reason } => {
            let body = reason.map_or_else(|| json!({}), |r| json!({ "reason": r }));
            let job = client
                .call(
                    client
                        .request(Method::POST, &format!("/v1/jobs/{}/cancel", segment(&id)))
                        .json(&body),
                )
                .await?;
            client.print(&job, table::job_row);
        }
        JobsCommand::Retry { id } => {
            let job = client
                .call(client.request(Method::POST, &format!("/v1/jobs/{}/retry", segment(&id))))
                .await?;
            client.print(&job, table::job_row);
        }
        JobsCommand::Tail { job, queue, kind } => tail::follow(&client, job, queue, kind).await?,
    }
    Ok(())
}

/// `jobstream queues …`.
pub async fn queues(args: QueuesArgs) -> anyhow::Result<()> {
    let client = Client::new(args.client)?;
    let (name, action) = match args.command {
        QueuesCommand::List => {
            let queues = client
                .call(client.request(Method::GET, "/v1/queues"))
                .await?;
            client.print(&queues, table::queues);
            return Ok(());
        }
        QueuesCommand::Pause { name } => (name, "pause"),
        QueuesCommand::Resume { name } => (name, "resume"),
    };
    let path = format!("/v1/queues/{}/{action}", segment(&name));
    let state = client.call(client.request(Method::POST, &path)).await?;
    client.print(&state, table::queue_control);
    Ok(())
}

/// `jobstream workers`.
pub async fn workers(args: WorkersArgs) -> anyhow::Result<()> {
    let client = Client::new(args.client)?;
    let workers = client
        .call(client.request(Method::GET, "/v1/workers"))
        .await?;
    client.print(&workers, table::workers);
    Ok(())
}
