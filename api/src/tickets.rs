//! Short-lived, single-use tickets for browsers' `EventSource`, which cannot send headers.
//!
//! `POST /v1/events/ticket` (with a bearer token) stores a random ticket in a JetStream
//! key-value bucket whose entries expire after [`TICKET_TTL`]; `GET /v1/events?ticket=…`
//! redeems it once, on any API instance: the redeeming delete is conditional on the
//! entry's revision, so two redemptions of one ticket cannot both succeed. The token
//! itself never appears in a URL, and tickets never reach the logs (the request span
//! records the path only, never the query string).

use std::time::Duration;

use async_nats::jetstream::kv;
use jobstream_core::broker::{Broker, BrokerError};
use serde::{Deserialize, Serialize};

use crate::auth::Caller;
use crate::live::EventHub;

/// How long a ticket may be redeemed after it was issued.
pub const TICKET_TTL: Duration = Duration::from_secs(30);
/// The key-value bucket holding outstanding tickets.
pub const BUCKET: &str = "jobstream_sse_tickets";

#[derive(Serialize, Deserialize)]
struct Grant {
    sub: String,
    admin: bool,
}

/// Opens the ticket bucket, creating it (in memory, entries expiring after the TTL) if needed.
pub(crate) async fn open_bucket(broker: &Broker) -> Result<kv::Store, BrokerError> {
    let js = broker.jetstream();
    if let Ok(store) = js.get_key_value(BUCKET).await {
        return Ok(store);
    }
    js.create_key_value(kv::Config {
        bucket: BUCKET.to_owned(),
        description: "jobstream: single-use SSE tickets".to_owned(),
        history: 1,
        max_age: TICKET_TTL,
        storage: async_nats::jetstream::stream::StorageType::Memory,
        ..Default::default()
    })
    .await
    .map_err(|e| BrokerError::Read(format!("ticket bucket: {e}")))
}

/// Issues a ticket standing for `caller`.
pub async fn issue(hub: &EventHub, caller: &Caller) -> Result<String, BrokerError> {
    let store = hub.ticket_store().await?;
    let ticket = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let grant = serde_json::to_vec(&Grant {
        sub: caller.sub.clone(),
        admin: caller.is_admin,
    })
    .unwrap_or_default();
    store
        .create(&ticket, grant.into())
        .await
        .map_err(|e| BrokerError::Read(format!("storing a ticket: {e}")))?;
    Ok(ticket)
}

/// Redeems a ticket: the caller it stands for, or `None` when it is unknown, expired or used.
pub async fn redeem(hub: &EventHub, ticket: &str) -> Result<Option<Caller>, BrokerError> {
    if ticket.len() != 64 || !ticket.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(None);
    }
    let store = hub.ticket_store().await?;
    let entry = store
        .entry(ticket)
        .await
        .map_err(|e| BrokerError::Read(format!("reading a ticket: {e}")))?;
    let Some(entry) = entry else { return Ok(None) };
    if entry.operation != kv::Operation::Put {
        return Ok(None);
    }
    let age_ns = time_now_ns() - entry.created.unix_timestamp_nanos();
    if age_ns > i128::try_from(TICKET_TTL.as_nanos()).unwrap_or(i128::MAX) {
        return Ok(None);
    }
    // Single use: only the first delete at this revision succeeds, on any instance.
    if store
        .delete_expect_revision(ticket, Some(entry.revision))
        .await
        .is_err()
    {
        return Ok(None);
    }
    Ok(serde_json::from_slice::<Grant>(&entry.value)
        .ok()
        .map(|g| Caller {
            sub: g.sub,
            is_admin: g.admin,
            name: None,
            email: None,
        }))
}

fn time_now_ns() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i128::try_from(d.as_nanos()).unwrap_or(i128::MAX))
}
