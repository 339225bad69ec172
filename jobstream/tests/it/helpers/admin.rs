//! The operators' endpoints as a client: queue pause/resume and listing, the workers registry.

use jobstream_testkit::eventually;
use reqwest::StatusCode;
use serde_json::Value;

use super::{TestApp, WAIT};

impl TestApp {
    /// `POST /v1/queues/{queue}/{action}`: status and body.
    pub(crate) async fn queue_action(
        &self,
        token: &str,
        queue: &str,
        action: &str,
    ) -> (StatusCode, Option<String>, Value) {
        let res = self
            .http
            .post(format!("{}/v1/queues/{queue}/{action}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .expect("POST queue action");
        let status = res.status();
        let content_type = res
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        (
            status,
            content_type,
            res.json().await.unwrap_or(Value::Null),
        )
    }

    /// `GET /v1/queues`, once the entry of `queue` satisfies `pred`.
    pub(crate) async fn wait_for_queue(
        &self,
        token: &str,
        queue: &str,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        eventually(what, WAIT, || async {
            let (status, body) = self.get(token, "/v1/queues").await;
            assert_eq!(status, StatusCode::OK, "{body}");
            body.as_array()?
                .iter()
                .find(|q| q["name"] == queue)
                .filter(|q| pred(q))
                .cloned()
        })
        .await
    }

    /// The projected status of a job.
    pub(crate) async fn rows_with_status(&self, id: &str) -> String {
        self.wait_for_row(id, "job projected", |_| true)
            .await
            .status
    }

    /// The registry's entry of worker `id`, once it satisfies `pred`.
    pub(crate) async fn wait_for_worker(
        &self,
        id: &str,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let admin = self.token("ops", true);
        eventually(what, WAIT, || async {
            let (status, body) = self.get(&admin, "/v1/workers").await;
            assert_eq!(status, StatusCode::OK, "{body}");
            body.as_array()?
                .iter()
                .find(|w| w["id"] == id)
                .filter(|w| pred(w))
                .cloned()
        })
        .await
    }
}
