//! Input limits shared by every place input enters (the API) and every reader of what
//! was stored (worker, projector, replay). Pure, no I/O.
//!
//! The rule: what the API accepts, every reader can decode and every store can hold.
//! - serde_json refuses documents nested deeper than 128 levels, and a stored payload is
//!   wrapped a few levels deeper (envelope → event → spec → payload; a schedule record
//!   wraps its job once more). Input is therefore capped at [`MAX_JSON_DEPTH`], far below.
//! - PostgreSQL cannot store NUL (`\u0000`) in `text` or `jsonb`, so no string and no
//!   object key may contain it ([`check_json`], [`check_text`]).

use serde_json::Value;

/// Deepest nesting of a JSON request body, the body object itself counting as level 1.
/// Readers accept 128 (serde_json's default recursion limit); the margin covers the
/// levels stored records wrap around a payload.
pub const MAX_JSON_DEPTH: usize = 64;

/// Largest JSON request body, in bytes. nats-server's `max_payload` (8 MB in `nats.conf`)
/// holds any event built from a body this size.
pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// Why a piece of input is refused, with the JSON path of the offending field
/// (`payload.items[3].name`; `""` for the document itself).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct LimitError {
    /// JSON path of the field, as the API names fields (`jobs[2].payload`).
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// A string field no store can hold: it contains NUL.
pub fn check_text(text: &str) -> Result<(), &'static str> {
    if text.contains('\0') {
        return Err("must not contain the NUL character (\\u0000)");
    }
    Ok(())
}

/// Checks a whole JSON document against [`MAX_JSON_DEPTH`] and for NUL characters in
/// strings and keys; the first violation names its field.
pub fn check_json(value: &Value) -> Result<(), LimitError> {
    walk(value, 1, &mut String::new())
}

fn walk(value: &Value, depth: usize, path: &mut String) -> Result<(), LimitError> {
    let fail = |path: &str, message: String| LimitError {
        path: path.to_owned(),
        message,
    };
    if depth > MAX_JSON_DEPTH && matches!(value, Value::Array(_) | Value::Object(_)) {
        return Err(fail(
            path,
            format!("nested too deeply: a request may nest at most {MAX_JSON_DEPTH} levels"),
        ));
    }
    match value {
        Value::String(s) => check_text(s).map_err(|m| fail(path, m.to_owned())),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                walk(item, depth + 1, path)?;
                path.truncate(len);
            }
            Ok(())
        }
        Value::Object(map) => {
            for (k, v) in map {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                if let Err(m) = check_text(k) {
                    // Name the object holding the bad key: the key itself cannot be shown.
                    path.truncate(len);
                    return Err(fail(path, format!("a key {m}")));
                }
                path.push_str(k);
                walk(v, depth + 1, path)?;
                path.truncate(len);
            }
            Ok(())
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn nested(depth: usize) -> Value {
        (0..depth).fold(json!(1), |v, _| json!({ "a": v }))
    }

    #[test]
    fn depth_is_counted_from_the_document_and_the_field_named() {
        assert!(check_json(&nested(MAX_JSON_DEPTH)).is_ok());
        let e = check_json(&json!({"payload": nested(MAX_JSON_DEPTH)})).unwrap_err();
        assert!(e.path.starts_with("payload.a"), "{e}");
    }

    #[test]
    fn nul_is_found_in_values_and_keys() {
        let e = check_json(&json!({"jobs": [{"payload": {"t": "a\u{0}"}}]})).unwrap_err();
        assert_eq!(e.path, "jobs[0].payload.t");
        let e = check_json(&json!({"payload": {"k\u{0}": 1}})).unwrap_err();
        assert_eq!(e.path, "payload");
        assert!(check_json(&json!({"t": "tab\tand\u{1}other controls are text"})).is_ok());
    }
}
