//! # jobstream-testkit
//!
//! What integration tests need, real and isolated: a nats-server of our own
//! (free port, temporary store, killed on drop) and a fresh database per test
//! (a SQLite file, or a PostgreSQL database created and dropped per test when
//! `TEST_DATABASE_URL` is set). Never a mock.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jobstream_core::nats_cluster;
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
            cluster: None,
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

/// A real three-node nats-server cluster on loopback with the project's `nats.conf`
/// (free ports outside the ephemeral range, stores in a temporary directory on
/// `/dev/shm` so the shared disk is spared; a `kill -9` behaves the same there).
/// Every node is killed, and its store deleted, on drop.
pub struct NatsTestCluster {
    cluster: nats_cluster::NatsCluster,
    _dir: TempDir,
}

/// Lame duck mode cannot be shorter than 30 s; the grace period before it starts to
/// close clients can, so a rolling restart stays as short as nats-server allows.
const LAME_DUCK_SETTINGS: &str = "\nlame_duck_duration: 30s\nlame_duck_grace_period: 1s\n";

/// How long a fresh or restarted cluster may take to elect its JetStream meta leader.
pub const CLUSTER_READY: Duration = Duration::from_secs(30);

impl NatsTestCluster {
    /// Starts three nodes and waits until each answers `/healthz?js-meta-only=true`.
    pub async fn start() -> Self {
        let root = workspace_root();
        let env_bin = std::env::var("NATS_SERVER_BIN").ok();
        let bin = nats_server::locate(env_bin.as_deref(), &root).unwrap_or_else(|e| panic!("{e}"));
        let shm = Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            tempfile::tempdir_in(shm)
        } else {
            tempfile::tempdir()
        }
        .expect("temporary cluster dir");
        let config = dir.path().join("nats.conf");
        std::fs::write(
            &config,
            format!("{}{LAME_DUCK_SETTINGS}", nats_server::EMBEDDED_CONFIG),
        )
        .expect("writing the cluster's nats.conf");
        let cluster = nats_cluster::NatsCluster::start(&nats_cluster::ClusterOptions {
            bin,
            config,
            base_dir: dir.path().to_path_buf(),
            size: 3,
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        cluster
            .wait_healthy(CLUSTER_READY)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        NatsTestCluster { cluster, _dir: dir }
    }

    /// The client URLs of every node, comma-separated (a `NATS_URL`).
    pub fn urls(&self) -> String {
        self.cluster.urls()
    }

    /// The client URL of node `i`.
    pub fn url(&self, i: usize) -> String {
        self.cluster.nodes()[i].url()
    }

    /// The index of the node named `name` (as stream and consumer info name leaders).
    pub fn index_of(&self, name: &str) -> usize {
        self.cluster
            .index_of(name)
            .unwrap_or_else(|| panic!("no node named {name:?}"))
    }

    /// `kill -9` of node `i`.
    pub async fn kill(&mut self, i: usize) {
        self.cluster.kill(i).await;
    }

    /// Starts node `i` again on its ports and store, and waits until it is healthy.
    pub async fn restart(&mut self, i: usize) {
        self.cluster
            .restart(i)
            .await
            .unwrap_or_else(|e| panic!("restart: {e}"));
        self.cluster
            .wait_node_healthy(i, CLUSTER_READY)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Puts node `i` in lame duck mode (SIGUSR2): it hands over its JetStream leaderships,
    /// stops accepting clients, closes the ones it has and exits. Waits until it did.
    pub async fn lame_duck(&mut self, i: usize) {
        // Lame duck lasts `lame_duck_duration` (30 s); a node still up well after is killed.
        self.cluster.lame_duck(i, Duration::from_secs(45)).await;
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
