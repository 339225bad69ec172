//! E-mail kinds against a real SMTP server process on loopback (Python's
//! aiosmtpd, writing a Maildir), and the mailbox-folder fallback.

use std::path::Path;
use std::time::Duration;

use jobstream_core::EventType;
use jobstream_core::kinds::Catalogue;
use jobstream_testkit::Backend;
use jobstream_worker::email::MailConfig;
use secrecy::SecretString;
use serde_json::json;

use crate::helpers::RealKinds;
use crate::helpers::{TestApp, db_test};
use crate::kinds::{ChildProcess, free_port, wait_for_port};

/// aiosmtpd on `port`, storing what it accepts as a Maildir in `dir` (created by the server);
/// `max_size` bytes per message.
fn smtp_server(port: u16, dir: &Path, max_size: usize) -> ChildProcess {
    smtp_server_with(port, dir, max_size, "aiosmtpd.handlers.Mailbox")
}

/// [`smtp_server`] with another handler class (see `jobstream/tests/fixtures/smtp_handlers.py`).
fn smtp_server_with(port: u16, dir: &Path, max_size: usize, handler: &str) -> ChildProcess {
    ChildProcess::python(&[
        "-m",
        "aiosmtpd",
        "-n",
        "-l",
        &format!("127.0.0.1:{port}"),
        "-s",
        &max_size.to_string(),
        "-c",
        handler,
        dir.to_str().expect("utf-8 path"),
    ])
}

/// The messages the SMTP server stored.
fn maildir_messages(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir.join("new"))
        .map(|entries| {
            entries
                .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
                .collect()
        })
        .unwrap_or_default()
}

fn mail_config(smtp_port: Option<u16>, mailbox: &Path) -> RealKinds {
    RealKinds {
        mail: MailConfig {
            smtp_url: smtp_port.map(|p| SecretString::from(format!("smtp://127.0.0.1:{p}"))),
            mailbox_dir: mailbox.to_path_buf(),
            from: "jobstream <noreply@jobstream.test>".into(),
            smtp_timeout: Duration::from_secs(10),
            ..MailConfig::default()
        },
        ..RealKinds::default()
    }
}

async fn mail_goes_through_a_real_smtp_server_and_rejections_are_fatal(backend: Backend) {
    let tmp = tempfile::tempdir().unwrap();
    let maildir = tmp.path().join("maildir");
    let port = free_port();
    let server = smtp_server(port, &maildir, 4096);
    wait_for_port(port, "aiosmtpd to listen").await;
    let mailbox = tempfile::tempdir().unwrap();
    let app = TestApp::with_real_kinds(
        backend,
        mail_config(Some(port), mailbox.path()),
        Catalogue::builtin(),
    )
    .await;
    let token = app.token("alice", false);

    let sent = app
        .run_job(
            &token,
            &json!({"kind": "email.send", "payload": {"to": "bob@example.com", "subject": "Quarterly report",
                    "text": "Numbers attached.", "html": "<p>Numbers <b>attached</b>.</p>"}}),
        )
        .await;
    assert_eq!(
        sent.status,
        "succeeded",
        "{:?} / server: {}",
        sent.error,
        server.output()
    );
    let result = sent.result.clone().unwrap();
    assert_eq!(result["delivered_via"], "smtp");
    assert!(
        result["smtp_response"].as_str().unwrap().starts_with("250"),
        "{result}"
    );

    let welcome = app
        .run_job(
            &token,
            &json!({"kind": "email.registration", "payload": {"to": "ann@example.com", "name": "Ann", "user_id": "u-42"}}),
        )
        .await;
    assert_eq!(welcome.status, "succeeded", "{:?}", welcome.error);

    let messages = maildir_messages(&maildir);
    assert_eq!(messages.len(), 2, "server: {}", server.output());
    let report = messages
        .iter()
        .find(|m| m.contains("Subject: Quarterly report"))
        .expect("report mail");
    assert!(
        report.contains("To: bob@example.com") && report.contains("multipart/alternative"),
        "{report}"
    );
    assert!(
        report.contains(&format!("Message-ID: <{}@jobstream>", sent.id)),
        "{report}"
    );
    let welcome_mail = messages
        .iter()
        .find(|m| m.contains("Welcome to jobstream, Ann"))
        .expect("welcome mail");
    assert!(welcome_mail.contains("To: ann@example.com") && welcome_mail.contains("u-42"));

    // 552 (message too large for this server) is permanent: failed at once, never retried.
    let big = app
        .run_job(
            &token,
            &json!({"kind": "email.send", "payload": {"to": "bob@example.com", "subject": "Too big", "text": "x".repeat(20_000)}}),
        )
        .await;
    assert_eq!(big.status, "failed");
    let error = big.error.unwrap();
    assert!(
        error.contains("rejected the message permanently") && error.contains("552"),
        "{error}"
    );
    assert_eq!(big.attempt, 1);
    assert!(app.events_of(&big.id, EventType::Retrying).await.is_empty());
    assert!(
        std::fs::read_dir(mailbox.path()).unwrap().next().is_none(),
        "with SMTP nothing goes to the mailbox"
    );
}
db_test!(mail_goes_through_a_real_smtp_server_and_rejections_are_fatal);

async fn an_unreachable_server_and_a_451_reply_are_retried_until_delivery(backend: Backend) {
    let tmp = tempfile::tempdir().unwrap();
    let maildir = tmp.path().join("maildir");
    let port = free_port();
    let mailbox = tempfile::tempdir().unwrap();
    let app = TestApp::with_real_kinds(
        backend,
        mail_config(Some(port), mailbox.path()),
        Catalogue::builtin(),
    )
    .await;
    let token = app.token("alice", false);
    let job = app
        .submit_job(
            &token,
            &json!({"kind": "email.send", "max_attempts": 100,
                    "payload": {"to": "bob@example.com", "subject": "Later", "text": "when you are up"}}),
        )
        .await;
    let id = job.id.to_string();
    // Connection refused is temporary: the job is retrying, not failed.
    jobstream_testkit::eventually("a retrying event", crate::helpers::WAIT, || async {
        (!app.events_of(&id, EventType::Retrying).await.is_empty()).then_some(())
    })
    .await;
    // The server's first answer is a temporary 451: retried too.
    let server = smtp_server_with(port, &maildir, 1 << 20, "smtp_handlers.TempFailFirst");
    let row = app
        .wait_for_row(&id, "the job to finish", |r| {
            r.status == "succeeded" || r.status == "failed"
        })
        .await;
    assert_eq!(
        row.status,
        "succeeded",
        "{:?} / server: {}",
        row.error,
        server.output()
    );
    assert!(row.attempt > 1);
    assert_eq!(maildir_messages(&maildir).len(), 1);
    let errors: Vec<String> = app
        .events_of(&id, EventType::Retrying)
        .await
        .into_iter()
        .filter_map(|e| match e.event {
            jobstream_core::Event::Retrying { error, .. } => Some(error),
            _ => None,
        })
        .collect();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("Connection refused") || e.contains("connection")),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|e| e.contains("451")),
        "a 451 reply is retried: {errors:?}"
    );
}
db_test!(an_unreachable_server_and_a_451_reply_are_retried_until_delivery);

async fn without_smtp_mail_lands_in_the_mailbox_folder(backend: Backend) {
    let mailbox = tempfile::tempdir().unwrap();
    let dir = mailbox.path().join("mailbox");
    let app =
        TestApp::with_real_kinds(backend, mail_config(None, &dir), Catalogue::builtin()).await;
    let token = app.token("alice", false);
    let row = app
        .run_job(
            &token,
            &json!({"kind": "email.registration", "payload": {"to": "ann@example.com", "name": "Ann <script>", "user_id": "u-7"}}),
        )
        .await;
    assert_eq!(row.status, "succeeded", "{:?}", row.error);
    let result = row.result.unwrap();
    assert_eq!(result["delivered_via"], "mailbox");
    let path = dir.join(format!("{}.eml", row.id));
    assert_eq!(result["path"], path.display().to_string());
    let eml = std::fs::read_to_string(&path).expect("the .eml file");
    assert!(
        eml.contains("To: ann@example.com")
            && eml.contains("From: jobstream <noreply@jobstream.test>"),
        "{eml}"
    );
    assert!(
        eml.contains("u-7") && eml.contains("&lt;script&gt;"),
        "the HTML part escapes the name: {eml}"
    );
    let entries: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert_eq!(entries.len(), 1, "no temporary file left behind");
}
db_test!(without_smtp_mail_lands_in_the_mailbox_folder);
