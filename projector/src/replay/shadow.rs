//! The shadow projection a live replay builds beside the live tables, and the atomic swap.

use migration::MigratorTrait;
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, DbErr, SqliteTransactionMode,
    TransactionOptions, TransactionTrait,
};

use super::{PROJECTION_TABLES, ReplayError, SHADOW_SCHEMA};
use crate::apply;

/// Checkpoint row in the shadow recording where the replay started (for resuming).
pub(super) const ORIGIN_MARKER: &str = "replay-origin";

/// The shadow projection beside the live database.
pub(super) struct Shadow {
    pub(super) db: DatabaseConnection,
    /// SQLite: the shadow file (attached for the swap). PostgreSQL: `None` (a schema).
    file: Option<std::path::PathBuf>,
}

impl Shadow {
    pub(super) async fn open(live: &DatabaseConnection, fresh: bool) -> Result<Self, ReplayError> {
        match live.get_database_backend() {
            DbBackend::Postgres => {
                if fresh {
                    live.execute_unprepared(&format!(
                        "DROP SCHEMA IF EXISTS {SHADOW_SCHEMA} CASCADE"
                    ))
                    .await?;
                }
                live.execute_unprepared(&format!("CREATE SCHEMA IF NOT EXISTS {SHADOW_SCHEMA}"))
                    .await?;
                let opts = (*live.get_postgres_connection_pool().connect_options())
                    .clone()
                    .options([("search_path", SHADOW_SCHEMA)]);
                let pool = sea_orm::sqlx::postgres::PgPoolOptions::new()
                    .max_connections(4)
                    .connect_with(opts)
                    .await
                    .map_err(|e| DbErr::Conn(sea_orm::RuntimeErr::SqlxError(e.into())))?;
                let db = sea_orm::SqlxPostgresConnector::from_sqlx_postgres_pool(pool);
                migration::Migrator::up(&db, None).await?;
                Ok(Shadow { db, file: None })
            }
            DbBackend::Sqlite => {
                let live_file = live
                    .get_sqlite_connection_pool()
                    .connect_options()
                    .get_filename()
                    .to_path_buf();
                if live_file.as_os_str().is_empty() || live_file.to_string_lossy() == ":memory:" {
                    return Err(ReplayError::Unsupported(
                        "replay into an in-memory SQLite database is not possible; use --into"
                            .into(),
                    ));
                }
                let mut name = live_file.as_os_str().to_owned();
                name.push(".replay");
                let file = std::path::PathBuf::from(name);
                if fresh {
                    remove_sqlite_files(&file);
                }
                let db = jobstream_core::store::connect(&format!(
                    "sqlite://{}?mode=rwc",
                    file.display()
                ))
                .await?;
                migration::Migrator::up(&db, None).await?;
                Ok(Shadow {
                    db,
                    file: Some(file),
                })
            }
            other => Err(ReplayError::Unsupported(format!(
                "replay does not support {other:?}"
            ))),
        }
    }

    /// Empties the shadow's projection tables and checkpoints.
    pub(super) async fn clear(&self) -> Result<(), DbErr> {
        for t in PROJECTION_TABLES.iter().chain(&["projector_checkpoints"]) {
            self.db
                .execute_unprepared(&format!("DELETE FROM {t}"))
                .await?;
        }
        Ok(())
    }

    pub(super) async fn drop_it(self, live: &DatabaseConnection) -> Result<(), DbErr> {
        self.db.close().await.ok();
        match self.file {
            Some(file) => remove_sqlite_files(&file),
            None => {
                live.execute_unprepared(&format!("DROP SCHEMA IF EXISTS {SHADOW_SCHEMA} CASCADE"))
                    .await?;
            }
        }
        Ok(())
    }
}

fn remove_sqlite_files(file: &std::path::Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = file.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(std::path::PathBuf::from(p));
    }
}

/// Records where the replay building the shadow started.
pub(super) async fn save_marker(db: &DatabaseConnection, origin: u64) -> Result<(), DbErr> {
    let backend = db.get_database_backend();
    db.execute_unprepared(&format!(
        "DELETE FROM projector_checkpoints WHERE name = '{ORIGIN_MARKER}'"
    ))
    .await?;
    db.execute_raw(sea_orm::Statement::from_sql_and_values(
        backend,
        match backend {
            DbBackend::Postgres => {
                "INSERT INTO projector_checkpoints (name, last_seq, updated_at) VALUES ($1, $2, $3)"
            }
            _ => "INSERT INTO projector_checkpoints (name, last_seq, updated_at) VALUES (?, ?, ?)",
        },
        [
            ORIGIN_MARKER.into(),
            i64::try_from(origin).unwrap_or(i64::MAX).into(),
            jobstream_core::event::now().into(),
        ],
    ))
    .await?;
    Ok(())
}

/// Copies the shadow into the live tables in one transaction, if the shadow is at or
/// beyond the live checkpoint (so the running projector loses nothing). `false` when
/// the projector is ahead: fold further and try again.
pub(super) async fn swap(
    live: &DatabaseConnection,
    shadow: &Shadow,
    name: &str,
) -> Result<bool, ReplayError> {
    let shadow_seq = apply::load_checkpoint(&shadow.db, name).await?;
    match &shadow.file {
        None => {
            let txn = live.begin().await?;
            // The checkpoint first, exclusively: a projector batch in flight (it read the
            // checkpoint at its start) finishes before the swap, the next one waits for it
            // and then reads the carried checkpoint. Readers of the job tables are not blocked:
            // they see the old rows until the commit.
            txn.execute_unprepared("LOCK TABLE projector_checkpoints IN ACCESS EXCLUSIVE MODE")
                .await?;
            txn.execute_unprepared(&format!(
                "LOCK TABLE {} IN EXCLUSIVE MODE",
                PROJECTION_TABLES.join(", ")
            ))
            .await?;
            let live_seq = apply::load_checkpoint(&txn, name).await?;
            if live_seq > shadow_seq {
                txn.rollback().await?;
                return Ok(false);
            }
            copy_tables(&txn, &format!("{SHADOW_SCHEMA}."), name).await?;
            txn.commit().await?;
            Ok(true)
        }
        Some(file) => {
            // A dedicated connection to the live file with the shadow attached.
            let opts = (*live.get_sqlite_connection_pool().connect_options()).clone();
            let pool = sea_orm::sqlx::sqlite::SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(opts)
                .await
                .map_err(|e| DbErr::Conn(sea_orm::RuntimeErr::SqlxError(e.into())))?;
            let conn = sea_orm::SqlxSqliteConnector::from_sqlx_sqlite_pool(pool);
            let path = file.to_string_lossy().replace('\'', "''");
            conn.execute_unprepared(&format!("ATTACH DATABASE '{path}' AS shadow"))
                .await?;
            let txn = conn
                .begin_with_options(TransactionOptions {
                    isolation_level: None,
                    access_mode: None,
                    sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                })
                .await?;
            let live_seq = apply::load_checkpoint(&txn, name).await?;
            let ok = live_seq <= shadow_seq;
            if ok {
                copy_tables(&txn, "shadow.", name).await?;
                txn.commit().await?;
            } else {
                txn.rollback().await?;
            }
            conn.execute_unprepared("DETACH DATABASE shadow").await?;
            conn.close().await.ok();
            Ok(ok)
        }
    }
}

async fn copy_tables<C: ConnectionTrait>(txn: &C, shadow: &str, name: &str) -> Result<(), DbErr> {
    for t in PROJECTION_TABLES {
        txn.execute_unprepared(&format!("DELETE FROM {t}")).await?;
        txn.execute_unprepared(&format!("INSERT INTO {t} SELECT * FROM {shadow}{t}"))
            .await?;
    }
    let name = name.replace('\'', "''");
    txn.execute_unprepared(&format!(
        "DELETE FROM projector_checkpoints WHERE name = '{name}'"
    ))
    .await?;
    txn.execute_unprepared(&format!(
        "INSERT INTO projector_checkpoints SELECT * FROM {shadow}projector_checkpoints WHERE name = '{name}'"
    ))
    .await?;
    Ok(())
}
