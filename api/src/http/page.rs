//! Cursor pagination shared by every list: `?limit=&after=&before=` in, a [`Page`] out.
//!
//! The cursor is the id of the first or last item of a page (ids are UUIDs; job ids are
//! UUIDv7, time-ordered), so pages stay stable while items are added.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::ApiError;

/// Largest page of a list.
pub const MAX_PAGE: u64 = 500;
/// Page size when none is asked for.
pub const DEFAULT_PAGE: u64 = 50;

/// A page of items, with the cursors and links of its neighbours.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Cursor of the next page, when there is one.
    pub next_cursor: Option<String>,
    /// Link to the next page.
    pub next: Option<String>,
    /// Cursor of the previous page.
    pub prev_cursor: Option<String>,
    /// Link to the previous page.
    pub prev: Option<String>,
}

/// A validated page request: its size and at most one cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    /// Page size, 1..=[`MAX_PAGE`].
    pub limit: u64,
    /// The page after this id (the next page).
    pub after: Option<String>,
    /// The page before this id (the previous page).
    pub before: Option<String>,
}

impl PageRequest {
    /// Checks the query parameters: `limit` in 1..=[`MAX_PAGE`] (default [`DEFAULT_PAGE`]),
    /// cursors returned by an earlier page. Each bad one is a `422` naming it.
    pub fn parse(
        limit: Option<u64>,
        after: Option<&str>,
        before: Option<&str>,
    ) -> Result<Self, ApiError> {
        let limit = limit.unwrap_or(DEFAULT_PAGE);
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(ApiError::field(
                "limit",
                format!("must be from 1 to {MAX_PAGE}"),
            ));
        }
        let cursor = |field: &'static str, v: Option<&str>| {
            v.map(|v| {
                Uuid::parse_str(v).map(|u| u.to_string()).map_err(|_| {
                    ApiError::field(field, "must be a cursor returned by a previous page")
                })
            })
            .transpose()
        };
        Ok(PageRequest {
            limit,
            after: cursor("after", after)?,
            before: cursor("before", before)?,
        })
    }

    /// Whether the page is read backwards (towards the previous page).
    pub fn backwards(&self) -> bool {
        self.before.is_some()
    }

    /// Rows to fetch: one more than the page, which tells whether another page follows.
    pub fn fetch(&self) -> u64 {
        self.limit + 1
    }

    /// Drops the extra row and restores list order (rows read backwards come reversed);
    /// returns the rows and whether there were more.
    pub fn trim<R>(&self, mut rows: Vec<R>) -> (Vec<R>, bool) {
        let more = rows.len() as u64 > self.limit;
        rows.truncate(usize::try_from(self.limit).unwrap_or(usize::MAX));
        if self.backwards() {
            rows.reverse();
        }
        (rows, more)
    }
}

impl<T> Page<T> {
    /// The page of `items` (trimmed by [`PageRequest::trim`]), with `more` as it returned.
    /// `link(key, cursor)` builds the URL of a neighbour (`key` is `after` or `before`).
    pub fn new(
        items: Vec<T>,
        req: &PageRequest,
        more: bool,
        cursor_of: impl Fn(&T) -> String,
        link: impl Fn(&str, &str) -> String,
    ) -> Self {
        let (has_next, has_prev) = if req.backwards() {
            (true, more)
        } else {
            (more, req.after.is_some())
        };
        let next_cursor = has_next.then(|| items.last().map(&cursor_of)).flatten();
        let prev_cursor = has_prev.then(|| items.first().map(&cursor_of)).flatten();
        Page {
            next: next_cursor.as_deref().map(|c| link("after", c)),
            prev: prev_cursor.as_deref().map(|c| link("before", c)),
            next_cursor,
            prev_cursor,
            items,
        }
    }
}

/// A link to `path` with `limit`, the cursor `key=cursor` and the given filters.
pub fn link(
    path: &str,
    limit: u64,
    key: &str,
    cursor: &str,
    filters: &[(&str, &Option<String>)],
) -> String {
    let mut parts = vec![format!("limit={limit}"), format!("{key}={cursor}")];
    for (name, v) in filters {
        if let Some(v) = v {
            parts.push(format!("{name}={}", url_encode(v)));
        }
    }
    format!("{path}?{}", parts.join("&"))
}

/// Percent-encodes a query value (RFC 3986 unreserved characters stay).
fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_carry_the_filters_encoded() {
        let q = Some("a b&c".to_owned());
        assert_eq!(
            link(
                "/v1/jobs",
                5,
                "after",
                "x",
                &[("kind", &q), ("queue", &None)]
            ),
            "/v1/jobs?limit=5&after=x&kind=a%20b%26c"
        );
    }

    #[test]
    fn a_backwards_page_has_a_next_page() {
        let req = PageRequest::parse(Some(2), None, Some(&Uuid::nil().to_string())).unwrap();
        let (rows, more) = req.trim(vec![3, 2, 1]);
        assert_eq!((rows.clone(), more), (vec![2, 3], true));
        let p = Page::new(
            rows,
            &req,
            more,
            |n| n.to_string(),
            |k, c| format!("{k}={c}"),
        );
        assert_eq!(p.next.as_deref(), Some("after=3"));
        assert_eq!(p.prev.as_deref(), Some("before=2"));
        assert!(PageRequest::parse(Some(0), None, None).is_err());
    }
}
