//! Workflows as a client (`/v1/workflows`), and a system whose `echo` is a test handler.

use jobstream_testkit::{Backend, eventually};
use jobstream_worker::{JobContext, JobError, Registry};
use reqwest::StatusCode;
use serde_json::Value;

use super::{Options, TestApp, WAIT};

impl TestApp {
    /// A system whose worker runs the built-ins with `echo` replaced by `handler`.
    pub(crate) async fn with_echo<F, Fut>(backend: Backend, handler: F) -> TestApp
    where
        F: Fn(JobContext) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<Value, JobError>> + Send + 'static,
    {
        let mut app = TestApp::with(backend, Options::without_worker()).await;
        let mut registry = Registry::with_builtins();
        registry.register("echo", handler);
        app.start_worker_with(registry).await;
        app
    }

    /// `POST /v1/workflows`: status and body.
    pub(crate) async fn submit_workflow(&self, token: &str, body: &Value) -> (StatusCode, Value) {
        let res = self
            .http
            .post(format!("{}/v1/workflows", self.base))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("POST /v1/workflows");
        let status = res.status();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// `POST /v1/workflows`, asserting `202`; returns the workflow and its id.
    pub(crate) async fn workflow_ok(&self, token: &str, body: &Value) -> (String, Value) {
        let (status, wf) = self.submit_workflow(token, body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{wf}");
        (wf["id"].as_str().expect("an id").to_owned(), wf)
    }

    /// `POST /v1/workflows/{id}/<action>`: status and body.
    pub(crate) async fn workflow_action(
        &self,
        token: &str,
        id: &str,
        action: &str,
    ) -> (StatusCode, Value) {
        let res = self
            .http
            .post(format!("{}/v1/workflows/{id}/{action}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .expect("POST workflow action");
        let status = res.status();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// The workflow once `GET /v1/workflows/{id}` says `status`.
    pub(crate) async fn wait_for_workflow(&self, token: &str, id: &str, status: &str) -> Value {
        eventually(&format!("workflow {id} {status}"), WAIT, || async {
            let (code, wf) = self.get(token, &format!("/v1/workflows/{id}")).await;
            (code == StatusCode::OK && wf["status"] == status).then_some(wf)
        })
        .await
    }
}
