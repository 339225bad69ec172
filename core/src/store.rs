//! The SQL projection store: SQLite (embedded default) or PostgreSQL.

use std::time::Duration;

use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbErr};

/// Opens a pool on `url` (`sqlite://path?mode=rwc` or `postgres://…`).
///
/// SQLite gets WAL (readers never block the projector's writes), foreign keys
/// and a busy timeout, on every pooled connection.
///
/// `synchronous=NORMAL` in WAL mode may lose the last commits at a power cut, never
/// corrupt the file, and that is safe here: the projector's checkpoint commits in the
/// same transaction as the rows it covers, so a lost commit loses its checkpoint too and
/// the projector folds those events again from the stream, which is the truth.
pub async fn connect(url: &str) -> Result<DatabaseConnection, DbErr> {
    let mut opts = ConnectOptions::new(url.to_owned());
    opts.sqlx_logging(false)
        .acquire_timeout(Duration::from_secs(10));
    if url.starts_with("sqlite:") {
        opts.max_connections(8).map_sqlx_sqlite_opts(|o| {
            o.journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(10))
                .create_if_missing(true)
        });
    } else {
        opts.max_connections(16);
    }
    Database::connect(opts).await
}
