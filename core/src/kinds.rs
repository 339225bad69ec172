//! The catalogue of job kinds the API accepts, at run time: the built-in kinds
//! of [`crate::catalogue`] plus any custom kinds (from a kinds file, for workers
//! written in other languages), each with the JSON Schema of its payload.
//!
//! The API lists it at `GET /v1/kinds` and validates every submission's payload
//! against the kind's schema, naming the failing field (`payload.width`).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::catalogue::{self, FieldError, KindSpec, MAX_SLEEP_MS};
use crate::subject::QueueName;

/// Largest thumbnail side, in pixels.
pub const MAX_THUMBNAIL_SIDE: u64 = 4096;
/// Longest timeout of one webhook request, in milliseconds.
pub const MAX_WEBHOOK_TIMEOUT_MS: u64 = 300_000;

/// One kind as the catalogue serves it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct KindDef {
    /// Stable kind name used on the wire (letters, digits, `.`, `-`, `_`).
    pub name: String,
    /// What the kind does.
    pub description: String,
    /// Queue used when the submission names none.
    #[serde(default = "default_queue")]
    pub queue: String,
    /// Attempts used when the submission names none.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Per-attempt deadline used when the submission names none, in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// JSON Schema (draft 2020-12) of the payload; `{}` accepts any JSON.
    #[serde(default = "any_payload")]
    pub payload_schema: Value,
    /// `builtin` (run by the Rust worker) or `custom` (from a kinds file).
    #[serde(default = "custom_source")]
    pub source: KindSource,
    /// Back-off between attempts used when the submission names none.
    #[serde(default = "default_backoff")]
    pub default_backoff: crate::event::RetryBackoff,
}

/// Where a kind comes from.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum KindSource {
    /// Shipped with jobstream; the Rust worker has its handler.
    Builtin,
    /// Declared by the operator; some worker (any language) must serve its queue.
    Custom,
}

fn default_backoff() -> crate::event::RetryBackoff {
    crate::catalogue::DEFAULT_BACKOFF
}
fn default_queue() -> String {
    "default".to_owned()
}
fn default_max_attempts() -> u32 {
    3
}
fn default_timeout_ms() -> u64 {
    60_000
}
fn any_payload() -> Value {
    json!({})
}
fn custom_source() -> KindSource {
    KindSource::Custom
}

/// Why a catalogue could not be built.
#[derive(Debug, thiserror::Error)]
pub enum CatalogueError {
    /// The kinds file could not be read.
    #[error("cannot read kinds file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The kinds file is not a JSON array of kinds.
    #[error("kinds file {path} is not a JSON array of kinds: {source}")]
    Parse {
        /// The file.
        path: String,
        /// Why.
        source: serde_json::Error,
    },
    /// A kind definition is invalid.
    #[error("kind {name:?}: {message}")]
    Invalid {
        /// The kind.
        name: String,
        /// What is wrong.
        message: String,
    },
}

struct Entry {
    def: KindDef,
    validator: jsonschema::Validator,
}

/// The kinds the API accepts. Cheap to clone (shared).
#[derive(Clone)]
pub struct Catalogue {
    kinds: Arc<BTreeMap<String, Entry>>,
}

impl std::fmt::Debug for Catalogue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalogue")
            .field("kinds", &self.kinds.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Default for Catalogue {
    fn default() -> Self {
        Self::builtin()
    }
}

impl Catalogue {
    /// The built-in kinds only.
    pub fn builtin() -> Self {
        Catalogue {
            kinds: Arc::new(builtin_entries()),
        }
    }

    /// The built-in kinds plus `custom` ones; a custom kind may not replace a built-in one.
    pub fn with_custom(custom: Vec<KindDef>) -> Result<Self, CatalogueError> {
        let mut kinds = builtin_entries();
        for def in custom {
            let def = KindDef {
                source: KindSource::Custom,
                ..def
            };
            check_def(&def)?;
            if kinds.contains_key(&def.name) {
                return Err(CatalogueError::Invalid {
                    name: def.name,
                    message: "defined twice, or clashes with a built-in kind".into(),
                });
            }
            kinds.insert(def.name.clone(), compile(def)?);
        }
        Ok(Catalogue {
            kinds: Arc::new(kinds),
        })
    }

    /// The built-in kinds plus the custom kinds of a JSON file (an array of [`KindDef`]).
    pub fn from_file(path: &Path) -> Result<Self, CatalogueError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| CatalogueError::Read {
            path: shown.clone(),
            source,
        })?;
        let defs: Vec<KindDef> =
            serde_json::from_str(&text).map_err(|source| CatalogueError::Parse {
                path: shown,
                source,
            })?;
        Self::with_custom(defs)
    }

    /// Every kind, sorted by name.
    pub fn kinds(&self) -> impl Iterator<Item = &KindDef> {
        self.kinds.values().map(|e| &e.def)
    }

    /// Names of every kind, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.kinds.keys().map(String::as_str).collect()
    }

    /// A kind by name.
    pub fn find(&self, name: &str) -> Option<&KindDef> {
        self.kinds.get(name).map(|e| &e.def)
    }

    /// Checks a payload against its kind's schema; every error names its field
    /// (`payload`, `payload.width`, `payload.headers.x-a`). Unknown kinds pass: the caller checks the kind.
    pub fn validate(&self, kind: &str, payload: &Value) -> Result<(), Vec<FieldError>> {
        let Some(entry) = self.kinds.get(kind) else {
            return Ok(());
        };
        let mut errors: Vec<FieldError> = entry
            .validator
            .iter_errors(payload)
            .map(|e| field_error(&e))
            .collect();
        if errors.is_empty()
            && entry.def.source == KindSource::Builtin
            && let Err(e) = catalogue::validate_payload(kind, payload)
        {
            errors.push(e);
        }
        errors.dedup();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

/// Maps a schema violation to the field it concerns.
fn field_error(e: &jsonschema::ValidationError<'_>) -> FieldError {
    let mut field = String::from("payload");
    for segment in e.instance_path().iter() {
        field.push('.');
        field.push_str(&segment.to_string());
    }
    let message = e.to_string();
    match e.kind() {
        jsonschema::error::ValidationErrorKind::Required { property } => {
            if let Some(p) = property.as_str() {
                field.push('.');
                field.push_str(p);
            }
            FieldError::new(field, "required")
        }
        jsonschema::error::ValidationErrorKind::AdditionalProperties { unexpected } => {
            if let [one] = unexpected.as_slice() {
                field.push('.');
                field.push_str(one);
            }
            FieldError::new(field, "unknown field")
        }
        _ => FieldError::new(field, message),
    }
}

fn check_def(def: &KindDef) -> Result<(), CatalogueError> {
    let invalid = |message: String| CatalogueError::Invalid {
        name: def.name.clone(),
        message,
    };
    let name_ok = !def.name.is_empty()
        && def.name.len() <= 64
        && def
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if !name_ok {
        return Err(invalid(
            "name must be 1-64 letters, digits, '.', '-' or '_'".into(),
        ));
    }
    QueueName::parse(&def.queue).map_err(|e| invalid(format!("queue: {e}")))?;
    if !(1..=100).contains(&def.max_attempts) {
        return Err(invalid("max_attempts must be from 1 to 100".into()));
    }
    if def.timeout_ms == 0 {
        return Err(invalid("timeout_ms must be positive".into()));
    }
    Ok(())
}

fn compile(def: KindDef) -> Result<Entry, CatalogueError> {
    let validator = jsonschema::options()
        .should_validate_formats(true)
        .build(&def.payload_schema)
        .map_err(|e| CatalogueError::Invalid {
            name: def.name.clone(),
            message: format!("payload_schema is not a valid JSON Schema: {e}"),
        })?;
    Ok(Entry { def, validator })
}

fn builtin_entries() -> BTreeMap<String, Entry> {
    catalogue::BUILTIN
        .iter()
        // Built-in schemas are checked by the tests below; a broken one is a bug `cargo test` catches.
        .filter_map(|spec| compile(builtin_def(spec)).ok())
        .map(|e| (e.def.name.clone(), e))
        .collect()
}

fn builtin_def(spec: &KindSpec) -> KindDef {
    KindDef {
        name: spec.name.to_owned(),
        description: spec.description.to_owned(),
        queue: spec.default_queue.to_owned(),
        max_attempts: spec.default_max_attempts,
        timeout_ms: spec.default_timeout_ms,
        payload_schema: builtin_schema(spec.name),
        source: KindSource::Builtin,
        default_backoff: spec.default_backoff,
    }
}

/// The payload schema of a built-in kind (`{}`, any JSON, for unknown names).
pub fn builtin_schema(name: &str) -> Value {
    let email = json!({"type": "string", "format": "email", "maxLength": 320});
    match name {
        "echo" => json!({"description": "Any JSON value; returned as the result."}),
        "sleep" => json!({
            "type": "object",
            "required": ["ms"],
            "additionalProperties": false,
            "properties": {"ms": {"type": "integer", "minimum": 0, "maximum": MAX_SLEEP_MS, "description": "Milliseconds to sleep."}}
        }),
        "fail" => json!({
            "type": "object",
            "required": ["times"],
            "additionalProperties": false,
            "properties": {"times": {"type": "integer", "minimum": 0, "description": "Attempts that fail before one succeeds."}}
        }),
        "email.send" => json!({
            "type": "object",
            "required": ["to", "subject"],
            "anyOf": [{"required": ["text"]}, {"required": ["html"]}],
            "additionalProperties": false,
            "properties": {
                "to": {"description": "Recipient address, or a list of them.", "oneOf": [
                    email,
                    {"type": "array", "items": email, "minItems": 1, "maxItems": 50}
                ]},
                "subject": {"type": "string", "minLength": 1, "maxLength": 998},
                "text": {"type": "string", "maxLength": 1_000_000, "description": "Plain-text body."},
                "html": {"type": "string", "maxLength": 1_000_000, "description": "HTML body (sent as multipart/alternative with the text)."},
                "from": {"type": "string", "minLength": 3, "maxLength": 320, "description": "Sender, `addr` or `Name <addr>`; defaults to the worker's MAIL_FROM."},
                "reply_to": {"type": "string", "minLength": 3, "maxLength": 320}
            }
        }),
        "email.registration" => json!({
            "type": "object",
            "required": ["to", "user_id"],
            "additionalProperties": false,
            "properties": {
                "to": email,
                "name": {"type": "string", "maxLength": 200, "description": "How to greet the user."},
                "user_id": {"type": "string", "minLength": 1, "maxLength": 200}
            }
        }),
        "image.thumbnail" => json!({
            "type": "object",
            "required": ["file_id", "width", "height"],
            "additionalProperties": false,
            "properties": {
                "file_id": {"type": "string", "format": "uuid", "description": "Id returned by POST /v1/files."},
                "width": {"type": "integer", "minimum": 1, "maximum": MAX_THUMBNAIL_SIDE},
                "height": {"type": "integer", "minimum": 1, "maximum": MAX_THUMBNAIL_SIDE},
                "format": {"enum": ["png", "jpeg", "webp"], "default": "png"}
            }
        }),
        "http.request" => json!({
            "type": "object",
            "required": ["url"],
            "additionalProperties": false,
            "properties": {
                "method": {"enum": ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"], "default": "POST"},
                "url": {"type": "string", "format": "uri", "pattern": "^[hH][tT][tT][pP][sS]?://", "maxLength": 2048},
                "headers": {"type": "object", "additionalProperties": {"type": "string", "maxLength": 8192}, "maxProperties": 100},
                "body": {"description": "A string is sent as is; any other JSON value is sent as application/json."},
                "timeout_ms": {"type": "integer", "minimum": 1, "maximum": MAX_WEBHOOK_TIMEOUT_MS, "default": 30_000}
            }
        }),
        _ => any_payload(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(r: Result<(), Vec<FieldError>>) -> Vec<String> {
        r.unwrap_err().into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn every_builtin_kind_has_a_compiled_schema() {
        let c = Catalogue::builtin();
        assert_eq!(c.names().len(), catalogue::BUILTIN.len());
        for spec in catalogue::BUILTIN {
            assert!(c.find(spec.name).is_some(), "{} missing", spec.name);
        }
    }

    #[test]
    fn violations_name_the_field() {
        let c = Catalogue::builtin();
        assert_eq!(fields(c.validate("sleep", &json!({}))), ["payload.ms"]);
        assert_eq!(
            fields(c.validate("sleep", &json!({"ms": -1}))),
            ["payload.ms"]
        );
        assert!(c.validate("sleep", &json!({"ms": 5})).is_ok());
        assert_eq!(
            fields(c.validate(
                "image.thumbnail",
                &json!({"file_id": uuid::Uuid::now_v7(), "width": 0, "height": 10})
            )),
            ["payload.width"]
        );
        assert_eq!(
            fields(c.validate(
                "image.thumbnail",
                &json!({"file_id": "x", "width": 5, "height": 10, "format": "gif"})
            )),
            ["payload.file_id", "payload.format"]
        );
        assert_eq!(
            fields(c.validate(
                "email.send",
                &json!({"to": "not an address", "subject": "s", "text": "t"})
            )),
            ["payload.to"]
        );
        assert_eq!(
            fields(c.validate(
                "email.registration",
                &json!({"to": "a@example.com", "user_id": "u1", "extra": 1})
            )),
            ["payload.extra"]
        );
        assert!(
            c.validate(
                "email.registration",
                &json!({"to": "a@example.com", "name": "Ann", "user_id": "u1"})
            )
            .is_ok()
        );
        assert_eq!(
            fields(c.validate("http.request", &json!({"url": "ftp://example.com/x"}))),
            ["payload.url"]
        );
        assert_eq!(
            fields(c.validate(
                "http.request",
                &json!({"url": "https://example.com/", "headers": {"x-a": 1}})
            )),
            ["payload.headers.x-a"]
        );
        assert!(c.validate("echo", &json!([1, "x"])).is_ok());
    }

    #[test]
    fn custom_kinds_are_added_checked_and_cannot_shadow_builtins() {
        let def = |name: &str| KindDef {
            name: name.into(),
            description: "reverses text".into(),
            queue: "python".into(),
            max_attempts: 2,
            timeout_ms: 1000,
            payload_schema: json!({"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}}),
            source: KindSource::Builtin,
            default_backoff: crate::catalogue::DEFAULT_BACKOFF,
        };
        let c = Catalogue::with_custom(vec![def("text.reverse")]).unwrap();
        let k = c.find("text.reverse").unwrap();
        assert_eq!((k.queue.as_str(), k.source), ("python", KindSource::Custom));
        assert!(c.find("echo").is_some());
        assert_eq!(
            fields(c.validate("text.reverse", &json!({}))),
            ["payload.text"]
        );
        assert!(Catalogue::with_custom(vec![def("echo")]).is_err());
        assert!(Catalogue::with_custom(vec![def("bad name")]).is_err());
        let mut bad_schema = def("x");
        bad_schema.payload_schema = json!({"type": 5});
        assert!(Catalogue::with_custom(vec![bad_schema]).is_err());
        let parsed: Vec<KindDef> =
            serde_json::from_str(r#"[{"name": "a.b", "description": "d"}]"#).unwrap();
        assert_eq!(parsed[0].queue, "default");
        assert_eq!(parsed[0].source, KindSource::Custom);
    }
}
