//! # jobstream-testkit
//!
//! What integration tests need, real and isolated: a nats-server of our own
//! (free port, temporary store, killed on drop) and a fresh database per test
//! (a SQLite file, or a PostgreSQL database created and dropped per test when
//! `TEST_DATABASE_URL` is set). Never a mock.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jobstream_core::nats_server::{self, NatsServerProcess, ServerOptions};
use migration::MigratorTrait;
use sea_orm::{ConnectionTrait, DatabaseConnection};
use tempfile::TempDir;

/// The workspace root (where `nats.conf` and `.tools/` live).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// A real nats-server on a free port with a temporary store, using the project's `nats.conf`.
pub struct NatsServer {
    process: NatsServerProcess,
    options: ServerOptions,
    _store: TempDir,
}

impl NatsServer {
    /// Starts a server; panics with instructions when no nats-server is installed.
    pub async fn start() -> Self {
        Self::start_with_config(None).await
    }

    /// Starts a server with the project's `nats.conf`, or with `config` (the text of
    /// a whole configuration file) instead, e.g. to give JetStream a tiny store.
    pub async fn start_with_config(config: Option<&str>) -> Self {
        let root = workspace_root();
        let env_bin = std::env::var("NATS_SERVER_BIN").ok();
        let bin = nats_server::locate(env_bin.as_deref(), &root).unwrap_or_else(|e| panic!("{e}"));
        let store = tempfile::tempdir().expect("temporary store dir");
        let config = match config {
            Some(text) => {
                let path = store.path().join("custom-nats.conf");
                std::fs::write(&path, text).expect("writing the test's nats config");
                path
            }
            None => root.join("nats.conf"),
        };
        let mut options = ServerOptions {
            bin,
            config: Some(config),
            store_dir: store.path().to_path_buf(),
            port: None,
            log_file: Some(store.path().join("nats-server.log")),
        };
        let process = NatsServerProcess::start(&options)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        // A restart must come back on the same port so clients reconnect.
        options.port = Some(process.port());
        NatsServer {
            process,
            options,
            _store: store,
        }
    }

    /// Client URL.
    pub fn url(&self) -> String {
        self.process.url()
    }

    /// SIGKILL: a crash, no clean shutdown.
    pub async fn kill(&mut self) {
        self.process.kill().await;
    }

    /// Starts the server again on the same port and store (after [`kill`](Self::kill)).
    pub async fn restart(&mut self) {
        self.process = NatsServerProcess::start(&self.options)
            .await
            .unwrap_or_else(|e| panic!("restart: {e}"));
    }
}

/// Which SQL store a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file in a temporary directory.
    Sqlite,
    /// A fresh database on the server of `TEST_DATABASE_URL`.
    Postgres,
}

/// A fresh, migrated database for one test; dropped afterwards.
pub struct TestDb {
    /// Connection URL.
    pub url: String,
    /// A migrated connection pool.
    pub conn: DatabaseConnection,
    _dir: Option<TempDir>,
    pg_cleanup: Option<(String, String)>,
}

impl TestDb {
    /// Creates the database, or `None` for PostgreSQL when `TEST_DATABASE_URL` is unset.
    pub async fn create(backend: Backend) -> Option<Self> {
        let (url, dir, pg_cleanup) = match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!(
                    "sqlite://{}?mode=rwc",
                    dir.path().join("jobstream.db").display()
                );
                (url, Some(dir), None)
            }
            Backend::Postgres => {
                let admin = std::env::var("TEST_DATABASE_URL")
                    .ok()
                    .filter(|u| !u.is_empty())?;
                let name = format!("jobstream_test_{}", uuid::Uuid::new_v4().simple());
                let conn = jobstream_core::store::connect(&admin)
                    .await
                    .expect("connect to TEST_DATABASE_URL");
                conn.execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
                    .await
                    .expect("create test database");
                conn.close().await.ok();
                (with_database(&admin, &name), None, Some((admin, name)))
            }
        };
        let conn = jobstream_core::store::connect(&url)
            .await
            .expect("connect to test database");
        migration::Migrator::up(&conn, None)
            .await
            .expect("migrations");
        Some(TestDb {
            url,
            conn,
            _dir: dir,
            pg_cleanup,
        })
    }

    /// Another fresh, empty database on the same backend (for "fold into a clean database" checks).
    pub async fn sibling(&self) -> Self {
        let backend = if self.pg_cleanup.is_some() {
            Backend::Postgres
        } else {
            Backend::Sqlite
        };
        Self::create(backend).await.expect("sibling database")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((admin, name)) = self.pg_cleanup.take() {
            // Drop runs outside async: use a short-lived runtime on its own thread.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .ok()?;
                rt.block_on(async {
                    let conn = jobstream_core::store::connect(&admin).await.ok()?;
                    conn.execute_unprepared(&format!(
                        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                    ))
                    .await
                    .ok()
                })
            })
            .join();
        }
    }
}

/// `postgres://u@h:p/db?x` with `db` replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let root = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{root}/{name}?{q}"),
        None => format!("{root}/{name}"),
    }
}

/// Waits until `check` yields `Some`, re-checking every 20 ms; panics after `timeout`
/// with `what` so a failing test says what it was waiting for.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_name_is_replaced() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "t1"),
            "postgres://postgres@127.0.0.1:5432/t1"
        );
        assert_eq!(
            with_database("postgres://u:p@h/db?sslmode=disable", "t2"),
            "postgres://u:p@h/t2?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h", "t3"), "postgres://h/t3");
    }
}
