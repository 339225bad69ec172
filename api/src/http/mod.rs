//! HTTP glue shared by the routes: extractors that refuse bad input as problem
//! documents, the request id, cursor pages and HTTP metrics. Nothing here knows about jobs.

pub mod extract;
pub mod metrics;
pub mod page;
pub mod request_id;
pub mod trace;

pub use extract::{ApiJson, ApiQuery, Body, IdempotencyKey, OptionalBody, OptionalJson, PathParam};
pub use page::{Page, PageRequest};
pub use request_id::RequestId;
pub use trace::ClientTrace;
