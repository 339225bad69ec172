//! `jobstream dev` is wired from the same settings as the separate commands.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use jobstream_testkit::{NatsServer, eventually};

use crate::helpers::WAIT;

/// Kills the process when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_creates_the_stream_it_is_told_to() {
    let nats = NatsServer::start().await;
    let data = tempfile::tempdir().expect("data dir");
    let _dev = Running(
        Command::new(env!("CARGO_BIN_EXE_jobstream"))
            .arg("dev")
            .env("NATS_URL", nats.url())
            .env("JOBSTREAM_STREAM", "WIRED")
            .env("EVENT_RETENTION", "2h")
            .env("DATA_DIR", data.path())
            .env("API_PORT", "0")
            .env("RUST_LOG", "warn")
            .env_remove("DATABASE_URL")
            .stdout(Stdio::null())
            .spawn()
            .expect("start jobstream dev"),
    );
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.expect("nats"));
    let config = eventually("dev to create the stream WIRED", WAIT, || async {
        let mut stream = js.get_stream("WIRED").await.ok()?;
        Some(stream.info().await.ok()?.config.clone())
    })
    .await;
    assert_eq!(config.max_age, Duration::from_secs(2 * 3600));
    assert!(
        js.get_stream("JOBS").await.is_err(),
        "no stream under the default name"
    );
}
