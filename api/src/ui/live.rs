//! `GET /ui/live`: one SSE connection per console page, saying only "something you can
//! see changed", at most [`BATCH`] apart. The page then re-fetches its live parts
//! (htmx `hx-trigger="sse:changed"`). An idle page costs one broadcast subscription:
//! nothing is read or rendered until an event it may see is stored.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde::Deserialize;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use uuid::Uuid;

use super::Session;
use crate::live::LiveEvent;
use crate::state::AppState;

/// Shortest time between two "changed" messages: at most four updates a second.
pub const BATCH: Duration = Duration::from_millis(250);

/// What a page watches.
#[derive(Debug, Deserialize)]
pub struct LiveQuery {
    /// Only this job's events (the job page).
    pub job: Option<Uuid>,
}

/// The stream of "changed" messages for one page.
pub async fn changes(
    State(state): State<AppState>,
    session: Session,
    Query(q): Query<LiveQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, crate::error::ApiError> {
    let rx = state.live.subscribe().await?;
    let closing = state.live.closing();
    let watch = move |ev: &LiveEvent| {
        let visible = session.admin || ev.meta.as_ref().is_some_and(|m| m.owner == session.sub);
        visible && q.job.is_none_or(|j| j == ev.job_id)
    };
    let stream = futures::stream::unfold(rx, move |mut rx| {
        let closing = closing.clone();
        let watch = watch.clone();
        async move {
            loop {
                let relevant = tokio::select! {
                    () = closing.cancelled() => return None,
                    r = rx.recv() => match r {
                        Ok(ev) => watch(&ev),
                        Err(RecvError::Lagged(_)) => true,
                        Err(RecvError::Closed) => return None,
                    },
                };
                if relevant {
                    break;
                }
            }
            // Whatever else arrives in the batch window is covered by the same message.
            tokio::select! {
                () = closing.cancelled() => return None,
                () = tokio::time::sleep(BATCH) => {}
            }
            loop {
                match rx.try_recv() {
                    Ok(_) | Err(TryRecvError::Lagged(_)) => {}
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Closed) => return None,
                }
            }
            Some((Ok(Event::default().event("changed").data("changed")), rx))
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
