//! `/ui/jobs`: the filtered job table, and retry / cancel over a selection or over
//! everything a filter matches (after a confirmation that shows the count).

use askama::Template;
use axum::extract::{OriginalUri, Query, State};
use axum::response::Html;
use jobstream_core::{JobState, JobStatus};
use serde::Deserialize;
use uuid::Uuid;

use super::when;
use crate::http::PageRequest;
use crate::http::page::link;
use crate::jobs::bulk::{BulkAction, MAX_BULK};
use crate::jobs::{FilterParams, JobFilter, JobsError};
use crate::state::AppState;
use crate::ui::form::{Action, FormFields};
use crate::ui::{Chrome, Session, UiError, render};

/// Rows per page.
const PAGE: u64 = 50;

/// The filters and cursor in the URL.
#[derive(Debug, Deserialize)]
pub(super) struct JobsQuery {
    #[serde(flatten)]
    filters: FilterParams,
    after: Option<String>,
    before: Option<String>,
}

/// One row of the table.
struct JobRow {
    id: String,
    kind: String,
    queue: String,
    owner: String,
    status: &'static str,
    attempt: String,
    created: String,
    updated: String,
}

impl From<&JobState> for JobRow {
    fn from(j: &JobState) -> Self {
        JobRow {
            id: j.id.to_string(),
            kind: j.spec.kind.clone(),
            queue: j.spec.queue.to_string(),
            owner: j.spec.owner.clone(),
            status: j.status.as_str(),
            attempt: format!("{}/{}", j.attempt, j.spec.max_attempts),
            created: when(j.created_at),
            updated: when(j.updated_at),
        }
    }
}

#[derive(Template)]
#[template(path = "jobs.html")]
struct JobsPage {
    chrome: Chrome,
    statuses: Vec<(&'static str, bool)>,
    filters: FilterParams,
    filter_pairs: Vec<(&'static str, String)>,
    jobs: Vec<JobRow>,
    self_url: String,
    prev: Option<String>,
    next: Option<String>,
    matching: String,
}

/// The filters a session may use (owner is an admin's filter), empty fields dropped.
fn filters_for(session: &Session, params: FilterParams) -> FilterParams {
    let mut params = params.non_empty();
    if !session.admin {
        params.owner = None;
    }
    params
}

/// The set filters as name/value pairs, for hidden fields and links.
fn set_pairs(params: &FilterParams) -> Vec<(&'static str, String)> {
    params
        .pairs()
        .into_iter()
        .filter_map(|(k, v)| v.clone().map(|v| (k, v)))
        .collect()
}

/// `/ui/jobs?<filters>` (a link that keeps the filters).
fn jobs_url(params: &FilterParams) -> String {
    let query: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(set_pairs(params))
        .finish();
    if query.is_empty() {
        "/ui/jobs".to_owned()
    } else {
        format!("/ui/jobs?{query}")
    }
}

/// `GET /ui/jobs`.
#[tracing::instrument(skip_all, fields(sub = %session.sub))]
pub(super) async fn page(
    State(state): State<AppState>,
    session: Session,
    OriginalUri(uri): OriginalUri,
    Query(q): Query<JobsQuery>,
) -> Result<Html<String>, UiError> {
    let params = filters_for(&session, q.filters);
    let filter = JobFilter::parse(&params)?;
    let page = PageRequest::parse(Some(PAGE), q.after.as_deref(), q.before.as_deref())
        .map_err(|e| JobsError::field("cursor", e.to_string()))?;
    let caller = session.caller();
    let service = state.jobs();
    let (jobs, more) = service.list(&caller, &filter, &page).await?;
    let matching = service
        .count_matching(&caller, &filter, MAX_BULK + 1)
        .await?;
    let pairs = params.pairs();
    let neighbour = |key: &str, cursor: Option<&JobState>| {
        cursor.map(|j| link("/ui/jobs", PAGE, key, &j.id.to_string(), &pairs))
    };
    let (has_next, has_prev) = if page.backwards() {
        (true, more)
    } else {
        (more, page.after.is_some())
    };
    let view = JobsPage {
        chrome: Chrome::new(&session, &state.console, "jobs"),
        statuses: JobStatus::ALL
            .iter()
            .map(|s| (s.as_str(), params.status.as_deref() == Some(s.as_str())))
            .collect(),
        filter_pairs: set_pairs(&params),
        prev: has_prev
            .then(|| neighbour("before", jobs.first()))
            .flatten(),
        next: has_next.then(|| neighbour("after", jobs.last())).flatten(),
        jobs: jobs.iter().map(JobRow::from).collect(),
        self_url: uri.to_string(),
        matching: if matching > MAX_BULK {
            format!("more than {MAX_BULK}")
        } else {
            matching.to_string()
        },
        filters: params,
    };
    render(&view)
}

#[derive(Template)]
#[template(path = "confirm.html")]
struct ConfirmPage {
    chrome: Chrome,
    action: &'static str,
    verb: &'static str,
    count: usize,
    all: bool,
    ids: Vec<Uuid>,
    filter_pairs: Vec<(&'static str, String)>,
    back: String,
}

/// A page saying what an action did.
#[derive(Template)]
#[template(path = "done.html")]
pub(super) struct DonePage {
    pub(super) chrome: Chrome,
    pub(super) title: String,
    pub(super) message: String,
    pub(super) back: String,
}

/// The filters a bulk form carries (`f_<name>` fields).
fn form_filters(form: &FormFields) -> FilterParams {
    let f = |name: &str| form.get(&format!("f_{name}")).map(str::to_owned);
    FilterParams {
        status: f("status"),
        kind: f("kind"),
        queue: f("queue"),
        owner: f("owner"),
        id_prefix: f("id_prefix"),
        q: f("q"),
        created_after: f("created_after"),
        created_before: f("created_before"),
    }
}

/// `POST /ui/jobs/bulk`: without `confirm`, the confirmation (with the count); with it,
/// the action itself.
#[tracing::instrument(skip_all, fields(sub = %action.session.sub))]
pub(super) async fn bulk(
    State(state): State<AppState>,
    action: Action,
) -> Result<Html<String>, UiError> {
    let Action {
        session,
        request_id,
        form,
    } = action;
    let what = BulkAction::parse(form.get("action").unwrap_or_default())?;
    let params = filters_for(&session, form_filters(&form));
    let all = form.get("all") == Some("1");
    let caller = session.caller();
    let service = state.jobs();
    let ids: Vec<Uuid> = if all {
        let filter = JobFilter::parse(&params)?;
        service.matching_ids(&caller, &filter, MAX_BULK).await?
    } else {
        form.all("id")
            .iter()
            .map(|i| Uuid::parse_str(i).map_err(|_| JobsError::field("id", "not a job id")))
            .collect::<Result<_, _>>()?
    };
    let verb = match what {
        BulkAction::Retry => "Retry",
        BulkAction::Cancel => "Cancel",
    };
    let chrome = Chrome::new(&session, &state.console, "jobs");
    let back = jobs_url(&params);
    if form.get("confirm") != Some("1") {
        return render(&ConfirmPage {
            chrome,
            action: what.as_str(),
            verb,
            count: ids.len(),
            all,
            ids,
            filter_pairs: set_pairs(&params),
            back,
        });
    }
    let outcome = service
        .bulk(&caller, &ids, what, request_id.as_deref())
        .await?;
    render(&DonePage {
        chrome,
        title: format!("{verb}: {} job(s)", ids.len()),
        message: format!(
            "{} requested, {} skipped (the action does not apply to them), {} failed (try again).",
            outcome.done, outcome.skipped, outcome.failed
        ),
        back,
    })
}
