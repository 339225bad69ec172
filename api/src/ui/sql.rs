//! Read-only SQL for the console's data pages, on SQLite and PostgreSQL.
//!
//! A statement runs only if it is one `SELECT` (or `WITH … SELECT`), wrapped as a
//! subquery (`SELECT * FROM (<sql>) LIMIT cap+1`, which also refuses a second statement
//! and, on both backends, a data-modifying `WITH`), inside a transaction that is always
//! rolled back. PostgreSQL makes that transaction `READ ONLY` with a `statement_timeout`;
//! SQLite has neither, so its timeout ends the request (the statement itself is bounded
//! by the row cap only). Every value is shown as text.

use std::time::Duration;

use sea_orm::{ConnectionTrait, DatabaseBackend, DatabaseConnection, Statement, TransactionTrait};

/// Most rows a query returns.
pub const ROW_CAP: u64 = 1000;
/// Longest a query may run.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// A query's result: column names, rows as text, and whether rows were cut at the cap.
#[derive(Debug, Default)]
pub struct Grid {
    /// Column names.
    pub columns: Vec<String>,
    /// Rows, each value as text (`NULL` as `None`).
    pub rows: Vec<Vec<Option<String>>>,
    /// More rows than the cap matched.
    pub truncated: bool,
}

/// Why a statement did not run.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    /// Not a single SELECT.
    #[error("only one SELECT (or WITH … SELECT) statement is allowed")]
    NotSelect,
    /// The database refused or failed it.
    #[error("{0}")]
    Database(String),
    /// It ran longer than the timeout.
    #[error("the query ran longer than {}s", TIMEOUT.as_secs())]
    Timeout,
}

/// The statement without surrounding blanks and one trailing `;`, if it is a single
/// SELECT (or WITH) statement.
pub fn single_select(sql: &str) -> Result<&str, SqlError> {
    let sql = sql.trim();
    let sql = sql.strip_suffix(';').unwrap_or(sql).trim_end();
    let first: String = sql
        .chars()
        .take_while(char::is_ascii_alphabetic)
        .collect::<String>()
        .to_ascii_lowercase();
    // A `;` anywhere else could start a second statement; comments could hide one.
    if !matches!(first.as_str(), "select" | "with")
        || sql.contains(';')
        || sql.contains("--")
        || sql.contains("/*")
    {
        return Err(SqlError::NotSelect);
    }
    Ok(sql)
}

/// Runs one SELECT read-only, at most `cap` rows.
pub async fn query(db: &DatabaseConnection, sql: &str, cap: u64) -> Result<Grid, SqlError> {
    let sql = single_select(sql)?;
    let wrapped = format!("SELECT * FROM ({sql}) AS console_query LIMIT {}", cap + 1);
    tokio::time::timeout(TIMEOUT + Duration::from_secs(1), run(db, &wrapped, cap))
        .await
        .map_err(|_| SqlError::Timeout)?
}

async fn run(db: &DatabaseConnection, sql: &str, cap: u64) -> Result<Grid, SqlError> {
    let db_err = |e: sea_orm::DbErr| SqlError::Database(e.to_string());
    let backend = db.get_database_backend();
    let txn = db.begin().await.map_err(db_err)?;
    if backend == DatabaseBackend::Postgres {
        txn.execute_unprepared("SET TRANSACTION READ ONLY")
            .await
            .map_err(db_err)?;
        txn.execute_unprepared(&format!(
            "SET LOCAL statement_timeout = {}",
            TIMEOUT.as_millis()
        ))
        .await
        .map_err(db_err)?;
    }
    let result = txn
        .query_all_raw(Statement::from_string(backend, sql.to_owned()))
        .await;
    // Whatever the statement did, nothing of it stays.
    txn.rollback().await.map_err(db_err)?;
    let rows = result.map_err(|e| {
        if e.to_string().contains("statement timeout") {
            SqlError::Timeout
        } else {
            db_err(e)
        }
    })?;
    let mut grid = Grid {
        columns: rows.first().map(|r| r.column_names()).unwrap_or_default(),
        ..Grid::default()
    };
    grid.truncated = rows.len() as u64 > cap;
    grid.rows = rows
        .iter()
        .take(usize::try_from(cap).unwrap_or(usize::MAX))
        .map(|r| (0..grid.columns.len()).map(|i| text(r, i)).collect())
        .collect();
    Ok(grid)
}

/// A value as text, whatever its type on either backend.
fn text(row: &sea_orm::QueryResult, i: usize) -> Option<String> {
    macro_rules! try_as {
        ($($t:ty),*) => {
            $(if let Ok(v) = row.try_get_by_index::<Option<$t>>(i) {
                return v.map(|v| v.to_string());
            })*
        };
    }
    try_as!(
        String,
        i64,
        i32,
        i16,
        f64,
        bool,
        uuid::Uuid,
        chrono::DateTime<chrono::Utc>,
        chrono::NaiveDateTime
    );
    if let Ok(v) = row.try_get_by_index::<Option<serde_json::Value>>(i) {
        return v.map(|v| v.to_string());
    }
    Some("(not shown)".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_one_select_passes() {
        assert_eq!(single_select(" SELECT 1; ").unwrap(), "SELECT 1");
        assert!(single_select("with t as (select 1) select * from t").is_ok());
        for bad in [
            "DELETE FROM queued_jobs",
            "SELECT 1; DELETE FROM queued_jobs",
            "SELECT 1 -- ; drop",
            "update users set name = 'x'",
            "",
        ] {
            assert!(single_select(bad).is_err(), "{bad}");
        }
    }
}
