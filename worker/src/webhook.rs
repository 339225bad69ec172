//! `http.request`: calls a URL (a webhook) and returns the response.
//!
//! Retried on 5xx, 408/429 and network errors; any other 4xx fails the job at
//! once. So that a user cannot make the worker call internal services, the host
//! is resolved first and every resolved address must be public (or in the
//! operator's allow-list, `--webhook-allow`); the request then connects to
//! exactly those checked addresses (no second DNS lookup, so no DNS rebinding),
//! never through a proxy, and redirects are not followed (a 3xx is returned as
//! the result).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use ipnet::IpNet;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::handler::{Handler, JobContext, JobError};

/// Settings of the webhook kind.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Networks that may be called although they are not public (e.g. `127.0.0.1/32`).
    pub allow: Vec<IpNet>,
    /// Largest response body kept in the result, in bytes (the rest is dropped).
    pub max_response_bytes: usize,
    /// Timeout when the payload names none.
    pub default_timeout: Duration,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            allow: Vec::new(),
            max_response_bytes: crate::defaults::WEBHOOK_MAX_RESPONSE_BYTES,
            default_timeout: crate::defaults::WEBHOOK_TIMEOUT,
        }
    }
}

/// Networks that are not the public internet: loopback, private, link-local,
/// carrier-grade NAT, documentation, benchmarking, multicast, reserved.
const NON_PUBLIC: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.88.99.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "::/128",
    "::1/128",
    "::/96",
    "100::/64",
    "2001::/32",
    "2001:db8::/32",
    "fc00::/7",
    "fe80::/10",
    "fec0::/10",
    "ff00::/8",
];

/// Whether the worker may connect to `ip`: public, or allow-listed.
pub fn ip_allowed(ip: IpAddr, allow: &[IpNet]) -> bool {
    if allow.iter().any(|n| n.contains(&ip)) {
        return true;
    }
    // Addresses that embed an IPv4 address are judged by it (mapped, NAT64, 6to4).
    if let IpAddr::V6(v6) = ip {
        if let Some(v4) = v6.to_ipv4_mapped() {
            return ip_allowed(IpAddr::V4(v4), allow);
        }
        let s = v6.segments();
        if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
            let o = v6.octets();
            return ip_allowed(IpAddr::V4([o[12], o[13], o[14], o[15]].into()), allow);
        }
        if s[0] == 0x2002 {
            let o = v6.octets();
            return ip_allowed(IpAddr::V4([o[2], o[3], o[4], o[5]].into()), allow);
        }
    }
    !NON_PUBLIC
        .iter()
        .filter_map(|n| n.parse::<IpNet>().ok())
        .any(|n| n.contains(&ip))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Payload {
    #[serde(default = "default_method")]
    method: String,
    url: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    body: Option<Value>,
    timeout_ms: Option<u64>,
}

fn default_method() -> String {
    "POST".into()
}

/// The `http.request` handler.
pub struct Webhook {
    config: WebhookConfig,
}

impl Webhook {
    /// A handler with these settings.
    pub fn new(config: WebhookConfig) -> Self {
        Webhook { config }
    }

    /// Resolves the URL's host and checks every address; fatal when one is not allowed.
    async fn checked_addrs(&self, url: &Url) -> Result<Vec<SocketAddr>, JobError> {
        let host = url
            .host_str()
            .ok_or_else(|| JobError::Fatal("payload.url: no host".into()))?;
        let port = url
            .port_or_known_default()
            .ok_or_else(|| JobError::Fatal("payload.url: no port".into()))?;
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => tokio::time::timeout(
                Duration::from_secs(10),
                tokio::net::lookup_host((bare, port)),
            )
            .await
            .map_err(|_| JobError::Failed(format!("resolving {host} timed out")))?
            .map_err(|e| JobError::Failed(format!("cannot resolve {host}: {e}")))?
            .collect(),
        };
        if addrs.is_empty() {
            return Err(JobError::Failed(format!("{host} has no addresses")));
        }
        if let Some(bad) = addrs
            .iter()
            .find(|a| !ip_allowed(a.ip(), &self.config.allow))
        {
            let what = if bare.parse::<IpAddr>().is_ok() {
                bad.ip().to_string()
            } else {
                format!("{host} resolves to {}, which", bad.ip())
            };
            return Err(JobError::Fatal(format!(
                "refused: {what} is not a public address (loopback, private, link-local or reserved); an operator can allow it with --webhook-allow"
            )));
        }
        Ok(addrs)
    }
}

#[async_trait]
impl Handler for Webhook {
    async fn run(&self, ctx: JobContext) -> Result<Value, JobError> {
        let p: Payload = serde_json::from_value(ctx.payload)
            .map_err(|e| JobError::Fatal(format!("payload: {e}")))?;
        let url = Url::parse(&p.url).map_err(|e| JobError::Fatal(format!("payload.url: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(JobError::Fatal(
                "payload.url: only http and https URLs".into(),
            ));
        }
        let method =
            Method::from_bytes(p.method.to_ascii_uppercase().as_bytes()).map_err(|_| {
                JobError::Fatal(format!("payload.method: {:?} is not a method", p.method))
            })?;
        let mut headers = HeaderMap::new();
        for (name, value) in &p.headers {
            let n = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                JobError::Fatal(format!("payload.headers: {name:?} is not a header name"))
            })?;
            if n == reqwest::header::HOST {
                return Err(JobError::Fatal(
                    "payload.headers: Host is set from the URL".into(),
                ));
            }
            let v = HeaderValue::from_str(value).map_err(|_| {
                JobError::Fatal(format!("payload.headers.{name}: not a valid header value"))
            })?;
            headers.insert(n, v);
        }
        let timeout = p
            .timeout_ms
            .map(Duration::from_millis)
            .unwrap_or(self.config.default_timeout);

        let addrs = self.checked_addrs(&url).await?;
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("jobstream/", env!("CARGO_PKG_VERSION")));
        if let Some(domain) = url.domain() {
            // Connect to exactly the addresses checked above: no second lookup.
            builder = builder.resolve_to_addrs(domain, &addrs);
        }
        let client = builder
            .build()
            .map_err(|e| JobError::Failed(format!("http client: {e}")))?;
        let mut req = client.request(method.clone(), url.clone()).headers(headers);
        match p.body {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => req = req.body(s),
            Some(other) => req = req.json(&other),
        }
        let started = Instant::now();
        let res = req.send().await.map_err(|e| {
            let what = if e.is_timeout() {
                "timed out"
            } else {
                "failed"
            };
            JobError::Failed(format!("{method} {url} {what}: {}", error_chain(&e)))
        })?;
        let status = res.status();
        let response_headers: BTreeMap<String, String> = res
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let retry_after = res
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|s| Duration::from_secs(s.min(3600)));
        let (body, truncated) = read_limited(res, self.config.max_response_bytes).await?;
        let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        tracing::info!(status = status.as_u16(), elapsed_ms, "webhook called");

        let summary = || {
            let excerpt: String = body.chars().take(200).collect();
            format!("{method} {url} answered {status}: {excerpt}")
        };
        if status.is_server_error()
            || status == StatusCode::REQUEST_TIMEOUT
            || status == StatusCode::TOO_MANY_REQUESTS
        {
            return Err(match retry_after {
                Some(after) => JobError::RetryAfter {
                    error: summary(),
                    after,
                },
                None => JobError::Failed(summary()),
            });
        }
        if status.is_client_error() {
            return Err(JobError::Fatal(summary()));
        }
        Ok(json!({
            "status": status.as_u16(),
            "headers": response_headers,
            "body": body,
            "body_truncated": truncated,
            "elapsed_ms": elapsed_ms,
        }))
    }
}

/// Reads at most `limit` bytes of the body (as lossy UTF-8); says whether more was dropped.
async fn read_limited(res: reqwest::Response, limit: usize) -> Result<(String, bool), JobError> {
    let mut stream = res.bytes_stream();
    let mut buf: Vec<u8> = Vec::new();
    let mut truncated = false;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            JobError::Failed(format!("reading the response failed: {}", error_chain(&e)))
        })?;
        let room = limit.saturating_sub(buf.len());
        if chunk.len() > room {
            buf.extend_from_slice(&chunk[..room]);
            truncated = true;
            break;
        }
        buf.extend_from_slice(&chunk);
    }
    Ok((String::from_utf8_lossy(&buf).into_owned(), truncated))
}

/// An error with its causes, `a: b: c`.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn only_public_addresses_pass_unless_allow_listed() {
        for blocked in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "64:ff9b::a00:1",
            "2002:7f00:1::",
        ] {
            assert!(!ip_allowed(ip(blocked), &[]), "{blocked} must be refused");
        }
        for public in [
            "1.1.1.1",
            "93.184.216.34",
            "2606:4700:4700::1111",
            "::ffff:1.1.1.1",
        ] {
            assert!(ip_allowed(ip(public), &[]), "{public} must pass");
        }
        let allow: Vec<IpNet> = vec!["127.0.0.1/32".parse().unwrap()];
        assert!(ip_allowed(ip("127.0.0.1"), &allow));
        assert!(!ip_allowed(ip("127.0.0.2"), &allow));
        assert!(ip_allowed(ip("::ffff:127.0.0.1"), &allow));
    }
}
