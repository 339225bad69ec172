//! `/ui/data` (admins): a read-only browser of the projection tables and a read-only
//! SQL console, both through [`crate::ui::sql`].

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::Html;
use jobstream_entity::{
    projector_checkpoint, projector_status, queued_job, rejected_event, schedule, user,
};
use sea_orm::{EntityTrait, IdenStatic, Iterable};
use serde::Deserialize;

use crate::state::AppState;
use crate::ui::form::Action;
use crate::ui::sql::{self, Grid, SqlError};
use crate::ui::{Chrome, Session, UiError, render};

/// Rows per page of the table browser.
const PAGE: u64 = 50;
/// Row counts above this are shown as "more than".
const COUNT_CAP: u64 = 100_000;

/// The projection's tables and their columns.
fn tables() -> Vec<(&'static str, Vec<&'static str>)> {
    fn of<E: EntityTrait + Default>() -> (&'static str, Vec<&'static str>) {
        (
            E::default().table_name(),
            E::Column::iter().map(|c| c.as_str()).collect(),
        )
    }
    vec![
        of::<queued_job::Entity>(),
        of::<user::Entity>(),
        of::<schedule::Entity>(),
        of::<rejected_event::Entity>(),
        of::<projector_checkpoint::Entity>(),
        of::<projector_status::Entity>(),
    ]
}

struct TableRow {
    name: &'static str,
    rows: String,
}

#[derive(Template)]
#[template(path = "data.html")]
struct TablesPage {
    chrome: Chrome,
    tables: Vec<TableRow>,
}

/// `GET /ui/data`: each table with its row count (counted up to a cap).
pub(super) async fn tables_page(
    State(state): State<AppState>,
    session: Session,
) -> Result<Html<String>, UiError> {
    session.require_admin()?;
    let mut rows = Vec::new();
    for (name, _) in tables() {
        let sql = format!(
            "SELECT COUNT(*) AS n FROM (SELECT 1 AS one FROM \"{name}\" LIMIT {}) AS capped",
            COUNT_CAP + 1
        );
        let grid = sql::query(&state.db, &sql, 1).await?;
        let n: u64 = grid
            .rows
            .first()
            .and_then(|r| r.first().cloned().flatten())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        rows.push(TableRow {
            name,
            rows: if n > COUNT_CAP {
                format!("more than {COUNT_CAP}")
            } else {
                n.to_string()
            },
        });
    }
    render(&TablesPage {
        chrome: Chrome::new(&session, &state.console, "data"),
        tables: rows,
    })
}

/// Sorting and paging of a table.
#[derive(Debug, Deserialize)]
pub(super) struct RowsQuery {
    sort: Option<String>,
    desc: Option<bool>,
    page: Option<u64>,
}

struct SortLink {
    column: &'static str,
    href: String,
    current: &'static str,
}

#[derive(Template)]
#[template(path = "data_rows.html")]
struct RowsPage {
    chrome: Chrome,
    table: &'static str,
    columns: Vec<SortLink>,
    grid: Grid,
    prev: Option<String>,
    next: Option<String>,
}

/// `GET /ui/data/{table}?sort=&desc=&page=`: a page of rows, sorted by any column.
pub(super) async fn rows(
    State(state): State<AppState>,
    session: Session,
    Path(table): Path<String>,
    Query(q): Query<RowsQuery>,
) -> Result<Html<String>, UiError> {
    session.require_admin()?;
    let all = tables();
    let Some((name, columns)) = all.into_iter().find(|(n, _)| *n == table) else {
        return Err(crate::jobs::JobsError::NotFound(format!("no table {table:?}")).into());
    };
    // Names come from the entities, never from the request: the SQL is built from them.
    let sort = q
        .sort
        .as_deref()
        .and_then(|s| columns.iter().find(|c| **c == s).copied())
        .unwrap_or(columns[0]);
    let desc = q.desc.unwrap_or(false);
    let page = q.page.unwrap_or(0).min(10_000);
    let sql = format!(
        "SELECT * FROM \"{name}\" ORDER BY \"{sort}\" {} LIMIT {} OFFSET {}",
        if desc { "DESC" } else { "ASC" },
        PAGE + 1,
        page * PAGE
    );
    let mut grid = sql::query(&state.db, &sql, PAGE).await?;
    grid.columns = columns.iter().map(|c| (*c).to_owned()).collect();
    let href = |sort: &str, desc: bool, page: u64| {
        format!("/ui/data/{name}?sort={sort}&desc={desc}&page={page}")
    };
    render(&RowsPage {
        chrome: Chrome::new(&session, &state.console, "data"),
        table: name,
        columns: columns
            .iter()
            .map(|c| SortLink {
                column: c,
                href: href(c, *c == sort && !desc, 0),
                current: match (*c == sort, desc) {
                    (true, false) => "ascending",
                    (true, true) => "descending",
                    _ => "none",
                },
            })
            .collect(),
        prev: (page > 0).then(|| href(sort, desc, page - 1)),
        next: grid.truncated.then(|| href(sort, desc, page + 1)),
        grid,
    })
}

#[derive(Template)]
#[template(path = "data_sql.html")]
struct SqlPage {
    chrome: Chrome,
    sql: String,
    grid: Option<Grid>,
    error: Option<String>,
    cap: u64,
}

/// `GET /ui/data/sql`: the SQL console.
pub(super) async fn sql_form(
    State(state): State<AppState>,
    session: Session,
) -> Result<Html<String>, UiError> {
    session.require_admin()?;
    render(&SqlPage {
        chrome: Chrome::new(&session, &state.console, "data"),
        sql: "SELECT status, COUNT(*) FROM queued_jobs GROUP BY status".into(),
        grid: None,
        error: None,
        cap: sql::ROW_CAP,
    })
}

/// `POST /ui/data/sql`: runs one SELECT read-only. A refused statement is a `422` page.
pub(super) async fn sql_run(
    State(state): State<AppState>,
    action: Action,
) -> Result<(axum::http::StatusCode, Html<String>), UiError> {
    action.session.require_admin()?;
    let text = action.form.get("sql").unwrap_or_default().to_owned();
    let (status, grid, error) = match sql::query(&state.db, &text, sql::ROW_CAP).await {
        Ok(g) => (axum::http::StatusCode::OK, Some(g), None),
        Err(e) => {
            tracing::info!(error = %e, "console SQL refused");
            (
                axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                None,
                Some(e.to_string()),
            )
        }
    };
    let page = render(&SqlPage {
        chrome: Chrome::new(&action.session, &state.console, "data"),
        sql: text,
        grid,
        error,
        cap: sql::ROW_CAP,
    })?;
    Ok((status, page))
}

impl From<SqlError> for UiError {
    /// The data pages' own queries are built from the entities: a failure is unexpected.
    fn from(e: SqlError) -> Self {
        UiError::Unexpected(anyhow::Error::new(e).context("data page query"))
    }
}
