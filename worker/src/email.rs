//! E-mail kinds: `email.send` and `email.registration` (the seeds' welcome mail).
//!
//! With an SMTP URL the message goes through SMTP (lettre, rustls); without one
//! it is written as an `.eml` file into the mailbox folder (development). A
//! permanent SMTP rejection (5xx) fails the job at once; anything temporary
//! (4xx, connection refused, timeout) is retried per the job's policy. The
//! `Message-ID` is derived from the job id, so a retried send is recognisable
//! as the same message.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::handler::{Handler, JobContext, JobError};

/// How the worker sends e-mail.
#[derive(Debug, Clone)]
pub struct MailConfig {
    /// `smtp://user:pass@host:port` (plain), `smtp://…?tls=required` (STARTTLS) or `smtps://…` (TLS);
    /// `None` writes `.eml` files into [`mailbox_dir`](Self::mailbox_dir) instead.
    pub smtp_url: Option<SecretString>,
    /// Where messages go without SMTP, one `<job_id>.eml` file each.
    pub mailbox_dir: PathBuf,
    /// Sender used when a job names none.
    pub from: String,
    /// Deadline of one SMTP exchange.
    pub smtp_timeout: Duration,
    /// Product name used in the registration mail.
    pub product_name: String,
}

impl Default for MailConfig {
    fn default() -> Self {
        MailConfig {
            smtp_url: None,
            mailbox_dir: PathBuf::from("data/mailbox"),
            from: crate::defaults::MAIL_FROM.into(),
            smtp_timeout: crate::defaults::SMTP_TIMEOUT,
            product_name: "jobstream".into(),
        }
    }
}

/// Why the mailer could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum MailConfigError {
    /// The SMTP URL is invalid.
    #[error("invalid SMTP_URL (expected smtp://, smtp://…?tls=required or smtps://): {0}")]
    SmtpUrl(String),
    /// The default sender is not an address.
    #[error("invalid MAIL_FROM {from:?}: {reason}")]
    From {
        /// The value.
        from: String,
        /// Why.
        reason: String,
    },
}

/// Delivers messages by SMTP or into the mailbox folder.
pub struct Mailer {
    smtp: Option<AsyncSmtpTransport<Tokio1Executor>>,
    mailbox_dir: PathBuf,
    from: Mailbox,
    product_name: String,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("smtp", &self.smtp.is_some())
            .field("mailbox_dir", &self.mailbox_dir)
            .finish()
    }
}

impl Mailer {
    /// A mailer from its configuration (no connection is made yet).
    pub fn new(config: &MailConfig) -> Result<Self, MailConfigError> {
        let smtp = match &config.smtp_url {
            Some(url) => Some(
                AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose_secret())
                    .map_err(|e| MailConfigError::SmtpUrl(e.to_string()))?
                    .timeout(Some(config.smtp_timeout))
                    .build(),
            ),
            None => None,
        };
        let from = config
            .from
            .parse()
            .map_err(|e: lettre::address::AddressError| MailConfigError::From {
                from: config.from.clone(),
                reason: e.to_string(),
            })?;
        Ok(Mailer {
            smtp,
            mailbox_dir: config.mailbox_dir.clone(),
            from,
            product_name: config.product_name.clone(),
        })
    }

    /// Sends one message; the result says how it was delivered.
    async fn deliver(&self, job_id: uuid::Uuid, message: Message) -> Result<Value, JobError> {
        let recipients: Vec<String> = message
            .envelope()
            .to()
            .iter()
            .map(ToString::to_string)
            .collect();
        let message_id = message_id(job_id);
        match &self.smtp {
            Some(smtp) => {
                let response = smtp.send(message).await.map_err(|e| classify_smtp(&e))?;
                let text = response.message().collect::<Vec<_>>().join(" ");
                tracing::info!(recipients = recipients.len(), "e-mail sent over SMTP");
                Ok(json!({
                    "delivered_via": "smtp",
                    "message_id": message_id,
                    "recipients": recipients,
                    "smtp_response": format!("{} {text}", response.code()),
                }))
            }
            None => {
                let path = self.mailbox_dir.join(format!("{job_id}.eml"));
                write_atomically(&path, &message.formatted())
                    .await
                    .map_err(|e| {
                        JobError::Failed(format!("cannot write {}: {e}", path.display()))
                    })?;
                tracing::info!(path = %path.display(), "e-mail written to the mailbox folder");
                Ok(json!({
                    "delivered_via": "mailbox",
                    "message_id": message_id,
                    "recipients": recipients,
                    "path": path.display().to_string(),
                }))
            }
        }
    }
}

fn message_id(job_id: uuid::Uuid) -> String {
    format!("<{job_id}@jobstream>")
}

/// Temporary SMTP trouble is retried; a permanent rejection (5xx) or a message the server
/// can never accept is fatal.
fn classify_smtp(e: &lettre::transport::smtp::Error) -> JobError {
    if e.is_permanent() {
        JobError::Fatal(format!("SMTP server rejected the message permanently: {e}"))
    } else if e.is_client() {
        JobError::Fatal(format!("message cannot be sent: {e}"))
    } else {
        JobError::Failed(format!("SMTP delivery failed (will retry): {e}"))
    }
}

/// Writes `bytes` to a temporary file beside `path`, then renames it: readers never see half a message.
async fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await?;
    }
    let tmp = path.with_extension("eml.tmp");
    tokio::fs::write(&tmp, bytes).await?;
    tokio::fs::rename(&tmp, path).await
}

fn parse_mailbox(field: &str, s: &str) -> Result<Mailbox, JobError> {
    s.parse().map_err(|e| {
        JobError::Fatal(format!(
            "payload.{field}: {s:?} is not an e-mail address: {e}"
        ))
    })
}

/// Payload of `email.send`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SendPayload {
    to: OneOrMany,
    subject: String,
    text: Option<String>,
    html: Option<String>,
    from: Option<String>,
    reply_to: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// Builds a message from its parts; a bad address is fatal (it will never become valid).
fn build_message(
    job_id: uuid::Uuid,
    from: Mailbox,
    to: &[String],
    reply_to: Option<&str>,
    subject: &str,
    text: Option<String>,
    html: Option<String>,
) -> Result<Message, JobError> {
    let mut builder = Message::builder()
        .from(from)
        .subject(subject)
        .message_id(Some(message_id(job_id)));
    for addr in to {
        builder = builder.to(parse_mailbox("to", addr)?);
    }
    if let Some(r) = reply_to {
        builder = builder.reply_to(parse_mailbox("reply_to", r)?);
    }
    let built = match (text, html) {
        (Some(text), Some(html)) => {
            builder.multipart(MultiPart::alternative_plain_html(text, html))
        }
        (None, Some(html)) => builder.singlepart(SinglePart::html(html)),
        (Some(text), None) => builder.singlepart(SinglePart::plain(text)),
        (None, None) => return Err(JobError::Fatal("payload: needs text or html".into())),
    };
    built.map_err(|e| JobError::Fatal(format!("cannot build the message: {e}")))
}

/// `email.send`: `{to, subject, text?, html?, from?, reply_to?}`.
pub struct SendEmail {
    mailer: Arc<Mailer>,
}

impl SendEmail {
    /// The handler, sending through `mailer`.
    pub fn new(mailer: Arc<Mailer>) -> Self {
        SendEmail { mailer }
    }
}

#[async_trait]
impl Handler for SendEmail {
    async fn run(&self, ctx: JobContext) -> Result<Value, JobError> {
        let p: SendPayload = serde_json::from_value(ctx.payload)
            .map_err(|e| JobError::Fatal(format!("payload: {e}")))?;
        let from = match &p.from {
            Some(f) => parse_mailbox("from", f)?,
            None => self.mailer.from.clone(),
        };
        let to = match p.to {
            OneOrMany::One(a) => vec![a],
            OneOrMany::Many(v) => v,
        };
        let msg = build_message(
            ctx.job_id,
            from,
            &to,
            p.reply_to.as_deref(),
            &p.subject,
            p.text,
            p.html,
        )?;
        self.mailer.deliver(ctx.job_id, msg).await
    }
}

/// Payload of `email.registration` (the contract with `POST /v1/users`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistrationPayload {
    to: String,
    name: Option<String>,
    user_id: String,
}

/// `email.registration`: `{to, name, user_id}`: the welcome mail of the seeds' users service.
pub struct RegistrationEmail {
    mailer: Arc<Mailer>,
}

impl RegistrationEmail {
    /// The handler, sending through `mailer`.
    pub fn new(mailer: Arc<Mailer>) -> Self {
        RegistrationEmail { mailer }
    }
}

#[async_trait]
impl Handler for RegistrationEmail {
    async fn run(&self, ctx: JobContext) -> Result<Value, JobError> {
        let p: RegistrationPayload = serde_json::from_value(ctx.payload)
            .map_err(|e| JobError::Fatal(format!("payload: {e}")))?;
        let product = &self.mailer.product_name;
        let name = p
            .name
            .as_deref()
            .filter(|n| !n.trim().is_empty())
            .unwrap_or("there");
        let subject = format!("Welcome to {product}, {name}!");
        let text = format!(
            "Hi {name},\n\nyour {product} account is ready (user id {}).\n\nWelcome aboard!\n-- {product}\n",
            p.user_id
        );
        let html = format!(
            "<p>Hi {},</p><p>your {} account is ready (user id <code>{}</code>).</p><p>Welcome aboard!</p>",
            html_escape(name),
            html_escape(product),
            html_escape(&p.user_id)
        );
        let to = [p.to];
        let msg = build_message(
            ctx.job_id,
            self.mailer.from.clone(),
            &to,
            None,
            &subject,
            Some(text),
            Some(html),
        )?;
        let mut result = self.mailer.deliver(ctx.job_id, msg).await?;
        result["user_id"] = Value::String(p.user_id);
        Ok(result)
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_carry_a_stable_message_id_and_both_parts() {
        let job = uuid::Uuid::now_v7();
        let msg = build_message(
            job,
            "a@example.com".parse().unwrap(),
            &["b@example.com".into()],
            None,
            "Hi",
            Some("plain".into()),
            Some("<b>rich</b>".into()),
        )
        .unwrap();
        let text = String::from_utf8(msg.formatted()).unwrap();
        assert!(
            text.contains(&format!("Message-ID: <{job}@jobstream>")),
            "{text}"
        );
        assert!(text.contains("multipart/alternative") && text.contains("plain"));
        assert!(matches!(
            build_message(
                job,
                "a@example.com".parse().unwrap(),
                &["nope".into()],
                None,
                "s",
                Some("t".into()),
                None
            ),
            Err(JobError::Fatal(_))
        ));
        assert_eq!(html_escape("<a&b>"), "&lt;a&amp;b&gt;");
    }
}
