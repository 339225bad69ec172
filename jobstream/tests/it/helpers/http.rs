//! Requests to the API as a client sends them, and their answers: status, headers and
//! body, typed as the API's view types where a test reads a job or a created user.

use std::time::Duration;

use futures::StreamExt;
use jobstream_api::jobs::JobView;
use jobstream_api::routes::schedules::ScheduleView;
use jobstream_api::routes::users::CreatedUser;
use jobstream_testkit::eventually;
use reqwest::header::HeaderMap;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::Value;

use super::{TestApp, WAIT};

/// The `Content-Type` of a response ("" without one).
pub(crate) fn content_type(headers: &HeaderMap) -> &str {
    headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// An answer of the API: status, headers and JSON body (`Null` when there is none).
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Value,
}

impl Answer {
    /// Sends `req` and reads the answer.
    pub(crate) async fn of(req: RequestBuilder) -> Answer {
        let res = req.send().await.expect("request sent");
        let (status, headers) = (res.status(), res.headers().clone());
        let body = res.json().await.unwrap_or(Value::Null);
        Answer {
            status,
            headers,
            body,
        }
    }

    /// The `Content-Type` header ("" without one).
    pub(crate) fn content_type(&self) -> &str {
        content_type(&self.headers)
    }

    /// Asserts an error answer is `application/problem+json`.
    pub(crate) fn problem_if_error(self) -> Self {
        if self.status.is_client_error() || self.status.is_server_error() {
            assert_eq!(
                self.content_type(),
                "application/problem+json",
                "a {} is problem+json: {}",
                self.status,
                self.body
            );
        }
        self
    }

    /// Asserts a problem document with `status`; returns it.
    pub(crate) fn problem(self, status: StatusCode) -> Value {
        assert_eq!(self.status, status, "{}", self.body);
        let answer = self.problem_if_error();
        assert_eq!(answer.body["status"], status.as_u16(), "{}", answer.body);
        answer.body
    }

    /// Status and body, the shape most tests match on.
    pub(crate) fn pair(self) -> (StatusCode, Value) {
        (self.status, self.body)
    }
}

impl TestApp {
    /// `POST /v1/jobs/{id}/cancel` without a body; returns the status.
    pub(crate) async fn cancel(&self, token: &str, id: &str) -> StatusCode {
        let res = self
            .http
            .post(format!("{}/v1/jobs/{id}/cancel", self.base))
            .bearer_auth(token)
            .send()
            .await
            .expect("cancel");
        res.status()
    }

    /// A token for `sub`.
    pub(crate) fn token(&self, sub: &str, admin: bool) -> String {
        jobstream_api::auth::mint_hs256(&self.auth, sub, admin, Duration::from_secs(600))
            .expect("token")
    }

    /// A request to the API at `base` (this system's, or another instance's) with a token.
    pub(crate) fn request_at(
        &self,
        base: &str,
        method: Method,
        path: &str,
        token: &str,
    ) -> RequestBuilder {
        self.http
            .request(method, format!("{base}{path}"))
            .bearer_auth(token)
    }

    /// `method path` on this system's API with a JSON body.
    pub(crate) async fn send_json(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: &Value,
    ) -> Answer {
        Answer::of(self.request_at(&self.base, method, path, token).json(body)).await
    }

    /// `POST /v1/jobs`.
    pub(crate) async fn submit(&self, token: &str, body: &Value) -> reqwest::Response {
        self.request_at(&self.base, Method::POST, "/v1/jobs", token)
            .json(body)
            .send()
            .await
            .expect("POST /v1/jobs")
    }

    /// `POST /v1/jobs`, asserting `202`; returns the job as the API shows it.
    pub(crate) async fn submit_job(&self, token: &str, body: &Value) -> JobView {
        let res = self.submit(token, body).await;
        assert_eq!(res.status(), StatusCode::ACCEPTED, "submit {body}");
        res.json().await.expect("a job as the API shows it")
    }

    /// Submits each `body(i)` of `range`, 16 at a time; returns the ids of those answered
    /// `202` (a submission during an outage may be refused with a 503).
    pub(crate) async fn submit_accepted(
        &self,
        token: &str,
        range: std::ops::Range<u64>,
        body: impl Fn(u64) -> Value,
    ) -> Vec<String> {
        futures::stream::iter(range)
            .map(|i| {
                let b = body(i);
                async move {
                    let res = self.submit(token, &b).await;
                    if res.status() != StatusCode::ACCEPTED {
                        return None;
                    }
                    let job: JobView = res.json().await.ok()?;
                    Some(job.id.to_string())
                }
            })
            .buffer_unordered(16)
            .filter_map(|id| async move { id })
            .collect()
            .await
    }

    /// `POST {base}/v1/jobs` with an `Idempotency-Key` header: status and body.
    pub(crate) async fn submit_keyed(
        &self,
        base: &str,
        token: &str,
        key: &str,
        body: &Value,
    ) -> (StatusCode, Value) {
        let req = self.request_at(base, Method::POST, "/v1/jobs", token);
        Answer::of(req.header("Idempotency-Key", key).json(body))
            .await
            .pair()
    }

    /// `POST /v1/jobs/batch`, with an `Idempotency-Key` when given: status and body.
    pub(crate) async fn submit_batch(
        &self,
        token: &str,
        key: Option<&str>,
        body: &Value,
    ) -> (StatusCode, Value) {
        let mut req = self.request_at(&self.base, Method::POST, "/v1/jobs/batch", token);
        if let Some(k) = key {
            req = req.header("Idempotency-Key", k);
        }
        Answer::of(req.json(body)).await.pair()
    }

    /// `GET <path>` with a token; returns status and JSON body.
    pub(crate) async fn get(&self, token: &str, path: &str) -> (StatusCode, Value) {
        Answer::of(self.request_at(&self.base, Method::GET, path, token))
            .await
            .pair()
    }

    /// `GET /v1/jobs/{id}`: the job, when the caller may see it and it exists.
    pub(crate) async fn job(&self, token: &str, id: &str) -> Option<JobView> {
        let (status, body) = self.get(token, &format!("/v1/jobs/{id}")).await;
        (status == StatusCode::OK)
            .then(|| serde_json::from_value(body).expect("a job as the API shows it"))
    }

    /// `POST <path>` with a token and an optional JSON body: status, content type, body.
    pub(crate) async fn post(
        &self,
        token: &str,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, String, Value) {
        let mut req = self.request_at(&self.base, Method::POST, path, token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let answer = Answer::of(req).await;
        let content_type = answer.content_type().to_owned();
        (answer.status, content_type, answer.body)
    }

    /// `POST {base}{path}`: status, `Retry-After` (seconds) and body; an error is problem+json.
    pub(crate) async fn post_to(
        &self,
        base: &str,
        path: &str,
        token: &str,
        body: &Value,
    ) -> (StatusCode, Option<u64>, Value) {
        let req = self.request_at(base, Method::POST, path, token).json(body);
        let answer = Answer::of(req).await.problem_if_error();
        let retry_after = answer
            .headers
            .get("retry-after")
            .map(|v| v.to_str().unwrap().parse().expect("Retry-After in seconds"));
        (answer.status, retry_after, answer.body)
    }

    /// `POST {base}/v1/schedules`: status and body.
    pub(crate) async fn create_schedule(
        &self,
        base: &str,
        token: &str,
        body: &Value,
    ) -> (StatusCode, Value) {
        let req = self.request_at(base, Method::POST, "/v1/schedules", token);
        Answer::of(req.json(body)).await.pair()
    }

    /// `GET /v1/schedules`: the schedules the caller sees.
    pub(crate) async fn schedules(&self, token: &str) -> Vec<ScheduleView> {
        let (status, list) = self.get(token, "/v1/schedules").await;
        assert_eq!(status, StatusCode::OK, "{list}");
        serde_json::from_value(list).expect("schedules as the API shows them")
    }

    /// `DELETE {base}/v1/schedules/{path}`: status.
    pub(crate) async fn delete_schedule(&self, base: &str, token: &str, path: &str) -> StatusCode {
        let path = format!("/v1/schedules/{path}");
        Answer::of(self.request_at(base, Method::DELETE, &path, token))
            .await
            .status
    }

    /// `POST /v1/users`: status and body; an error is problem+json.
    pub(crate) async fn post_user(&self, token: &str, body: &Value) -> (StatusCode, Value) {
        self.send_json(Method::POST, "/v1/users", token, body)
            .await
            .problem_if_error()
            .pair()
    }

    /// `POST /v1/users`, asserting `201`: the user and its registration e-mail job.
    pub(crate) async fn create_user(&self, token: &str, body: &Value) -> CreatedUser {
        let (status, created) = self.post_user(token, body).await;
        assert_eq!(status, StatusCode::CREATED, "create user {body}: {created}");
        serde_json::from_value(created).expect("a created user as the API shows it")
    }

    /// `/readyz`: its status and body; an error is problem+json.
    pub(crate) async fn readyz(&self) -> (StatusCode, Value) {
        let req = self.http.get(format!("{}/readyz", self.base));
        Answer::of(req).await.problem_if_error().pair()
    }

    /// `POST /v1/files` with a content type.
    pub(crate) async fn upload(
        &self,
        token: &str,
        content_type: &str,
        bytes: Vec<u8>,
    ) -> reqwest::Response {
        self.request_at(&self.base, Method::POST, "/v1/files", token)
            .header("content-type", content_type)
            .body(bytes)
            .send()
            .await
            .expect("POST /v1/files")
    }

    /// `POST /v1/files`, asserting `201` and its `Location`; returns the file's id.
    pub(crate) async fn upload_ok(
        &self,
        token: &str,
        content_type: &str,
        bytes: Vec<u8>,
    ) -> String {
        let res = self.upload(token, content_type, bytes).await;
        assert_eq!(res.status(), StatusCode::CREATED);
        let location = res.headers()["location"].to_str().unwrap().to_owned();
        let body: Value = res.json().await.unwrap();
        let id = body["id"].as_str().unwrap().to_owned();
        assert_eq!(location, format!("/v1/files/{id}"));
        id
    }

    /// Sends only the head of a `POST /v1/files` announcing `len` bytes; returns the response head.
    pub(crate) async fn raw_upload_head(
        &self,
        token: &str,
        content_type: &str,
        len: usize,
    ) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = self.base.trim_start_matches("http://");
        let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let head = format!(
            "POST /v1/files HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: {content_type}\r\nContent-Length: {len}\r\n\r\n"
        );
        conn.write_all(head.as_bytes()).await.expect("write head");
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(WAIT, conn.read(&mut buf))
            .await
            .expect("an answer before the body is sent")
            .expect("read");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    /// `GET /v1/files/{id}`: status, content type, bytes.
    pub(crate) async fn download(&self, token: &str, id: &str) -> (StatusCode, String, Vec<u8>) {
        let path = format!("/v1/files/{id}");
        let res = self
            .request_at(&self.base, Method::GET, &path, token)
            .send()
            .await
            .expect("GET /v1/files");
        let (status, ct) = (res.status(), content_type(res.headers()).to_owned());
        (status, ct, res.bytes().await.unwrap().to_vec())
    }

    /// Waits until `/readyz` is 503 with a failed check named `check`; returns its reason.
    pub(crate) async fn wait_not_ready(&self, check: &str) -> String {
        let what = format!("/readyz to fail its {check} check");
        eventually(&what, WAIT, || async {
            let (status, body) = self.readyz().await;
            let failed = body["checks"]
                .as_array()?
                .iter()
                .find(|c| c["check"] == check)?;
            (status == StatusCode::SERVICE_UNAVAILABLE)
                .then(|| failed["reason"].as_str().unwrap_or_default().to_owned())
        })
        .await
    }

    /// Waits until `/readyz` is 200.
    pub(crate) async fn wait_ready(&self) {
        eventually("/readyz to be 200", WAIT, || async {
            (self.readyz().await.0 == StatusCode::OK).then_some(())
        })
        .await;
    }
}
