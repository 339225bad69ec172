//! The real `jobstream` binary as a terminal client of the test system.

use serde_json::Value;

use super::TestApp;

/// What a run of the binary printed and how it ended.
pub(crate) struct Run {
    pub(crate) ok: bool,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Run {
    /// Its standard output as JSON, asserting it succeeded.
    pub(crate) fn json(&self) -> Value {
        assert!(self.ok, "failed: {}", self.stderr);
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {}", self.stdout))
    }
}

impl TestApp {
    /// The binary with this system's URL and `token`.
    pub(crate) fn cli(&self, token: &str) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_jobstream"));
        cmd.env("JOBSTREAM_URL", &self.base)
            .env("JOBSTREAM_TOKEN", token)
            .env_remove("RUST_LOG")
            .kill_on_drop(true);
        cmd
    }

    /// Runs the binary to its end.
    pub(crate) async fn run_cli(&self, token: &str, args: &[&str]) -> Run {
        let out = tokio::time::timeout(super::WAIT, self.cli(token).args(args).output())
            .await
            .expect("cli finished in time")
            .expect("cli runs");
        Run {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}
