//! The one error type of the crate, built from what the server answered.

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

/// Everything that can go wrong while sending events.
///
/// Server answers are mapped by status: `401` → [`Error::Auth`], `413` → [`Error::TooLarge`],
/// `422` with the schema errors of the events → [`Error::Invalid`], `429` →
/// [`Error::RateLimited`], `5xx` → [`Error::Server`], any other non-2xx → [`Error::Rejected`]
/// (redirects included). Every variant that comes from an answer carries
/// the server's `detail`. The messages say what to do about the failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The client was configured with a value it cannot use (builder or environment).
    #[error("leitstand client configuration: {0}")]
    Config(String),

    /// The server refused the token (`401`).
    #[error(
        "leitstand refused the token ({status}: {detail}); set LEITSTAND_TOKEN (or the builder's \
         token) to the token the server was started with"
    )]
    Auth {
        /// HTTP status (401).
        status: u16,
        /// The server's reason.
        detail: String,
    },

    /// The server rejected the request (`400`, `409`, `415`, `422`, other `4xx`), or redirected
    /// it (`3xx`; redirects are not followed).
    /// Nothing was stored; sending the same events again fails the same way.
    #[error("leitstand rejected the events ({status}): {detail}")]
    Rejected {
        /// HTTP status.
        status: u16,
        /// The server's reason, e.g. `domain mismatch`.
        detail: String,
    },

    /// Events do not match the JSON Schema the server has for their domain (`422` with
    /// `errors`; see the server's `LEITSTAND_SCHEMA_DIR`). Nothing of the request was stored;
    /// fix the events at the listed positions and send them again.
    #[error(
        "leitstand rejected events that do not match the domain's schema ({error_count} \
         error(s)): {detail}"
    )]
    Invalid {
        /// The server's summary, naming the first invalid event.
        detail: String,
        /// The first errors (the server lists at most 20), in batch order. The `index` counts
        /// from the first event of the `send_batch` call (0 for `send_one`).
        errors: Vec<EventError>,
        /// All errors of the request (the server's `error_count`; the length of `errors` when
        /// the server does not send it).
        error_count: u64,
    },

    /// The request was larger than the server accepts (`413`), or one event alone is larger
    /// than the client's body limit (found before sending).
    #[error(
        "too large for leitstand: {detail}; set the client's max_body_bytes/max_events to at \
         most the server's LEITSTAND_MAX_BODY/LEITSTAND_MAX_EVENTS, or send smaller events"
    )]
    TooLarge {
        /// The server's reason, or the client's measurement.
        detail: String,
    },

    /// The server kept answering `429` until the retries ran out, or asked to wait longer
    /// than the client's `max_retry_after`.
    #[error(
        "leitstand rate limit hit ({detail}) after {attempts} attempt(s){}; send less often or \
         raise the server's LEITSTAND_RATE_LIMIT",
        fmt_retry_after(*retry_after)
    )]
    RateLimited {
        /// The server's reason.
        detail: String,
        /// The server's last `Retry-After`, if it sent one.
        retry_after: Option<Duration>,
        /// How many requests were made.
        attempts: u32,
    },

    /// The server failed (`5xx`, e.g. `503 lock timeout`, `507` disk full) on every attempt.
    /// Nothing of this request was stored.
    #[error(
        "leitstand failed with {status} ({detail}) after {attempts} attempt(s); check the \
         server's log and disk, then send again"
    )]
    Server {
        /// HTTP status.
        status: u16,
        /// The server's reason.
        detail: String,
        /// How many requests were made.
        attempts: u32,
    },

    /// No answer: connection refused, reset or timed out, on every attempt.
    #[error(
        "could not reach leitstand at {url} after {attempts} attempt(s): {message}; check \
         LEITSTAND_URL and that the server is running"
    )]
    Transport {
        /// The URL that was tried.
        url: String,
        /// The low-level reason, with its causes.
        message: String,
        /// How many requests were made.
        attempts: u32,
        /// The underlying error.
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },

    /// The TLS connection to an `https://` URL failed (feature `tls`): the server's
    /// certificate is not trusted (self-signed, unknown CA, another name, expired), or the
    /// server does not speak TLS. Not retried: the configuration must change.
    #[error("TLS with leitstand at {url} failed: {message}; {}", tls_hint(*ca_file_set))]
    Tls {
        /// The URL that was tried.
        url: String,
        /// rustls' reason (e.g. `invalid peer certificate: UnknownIssuer`), with its causes.
        message: String,
        /// Whether a CA file was configured (it was then the only trusted CA).
        ca_file_set: bool,
        /// The underlying error.
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },

    /// The spool (feature `spool`) has no room for a batch that could not be delivered
    /// (`LEITSTAND_SPOOL_MAX_BYTES`): it is neither stored nor spooled, the caller must keep
    /// it. Nothing is ever dropped silently.
    #[error(
        "the spool {} is full ({queued_bytes} bytes queued, {batch_bytes} more would exceed \
         LEITSTAND_SPOOL_MAX_BYTES={max_bytes}); this batch of {events} event(s) was neither \
         stored nor spooled",
        spool.display()
    )]
    SpoolFull {
        /// The spool directory.
        spool: std::path::PathBuf,
        /// Bytes already queued.
        queued_bytes: u64,
        /// Bytes the batch needs.
        batch_bytes: u64,
        /// The bound.
        max_bytes: u64,
        /// Events in the batch.
        events: usize,
    },

    /// The spool's directory failed (disk full, permissions): what was being spooled is
    /// neither stored nor spooled.
    #[error("leitstand spool: {message}: {source}")]
    Spool {
        /// What was being done, and the directory.
        message: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// An event could not be serialized, or is not a JSON object (leitstand stores objects).
    #[error("event #{index} cannot be sent: {source}")]
    Serialization {
        /// Position of the event in the batch (0 for `send_one`).
        index: usize,
        /// What serde_json reported.
        #[source]
        source: serde_json::Error,
    },

    /// A batch that needed several requests failed part-way: the first `requests` requests
    /// (`accepted` events, in order) are stored, or `spooled` (feature `spool`), the rest is
    /// not.
    #[error(
        "batch stopped after {accepted} event(s) in {requests} request(s) were stored{}; send \
         only the rest again: {source}",
        fmt_spooled(*spooled)
    )]
    Incomplete {
        /// Events stored by the requests that succeeded.
        accepted: u64,
        /// Requests that succeeded.
        requests: usize,
        /// Events before the failure kept in the spool (0 without a spool).
        spooled: u64,
        /// Why the next request failed.
        #[source]
        source: Box<Error>,
    },
}

impl Error {
    /// The HTTP status of the server's answer, if this error came from one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Auth { status, .. }
            | Error::Rejected { status, .. }
            | Error::Server { status, .. } => Some(*status),
            Error::Invalid { .. } => Some(422),
            Error::RateLimited { .. } => Some(429),
            Error::Incomplete { source, .. } => source.status(),
            _ => None,
        }
    }

    /// The server's `detail`, if this error came from an answer.
    pub fn detail(&self) -> Option<&str> {
        match self {
            Error::Auth { detail, .. }
            | Error::Rejected { detail, .. }
            | Error::TooLarge { detail }
            | Error::Invalid { detail, .. }
            | Error::RateLimited { detail, .. }
            | Error::Server { detail, .. } => Some(detail),
            Error::Incomplete { source, .. } => source.detail(),
            _ => None,
        }
    }

    /// Build the error for a final (not retried, or retries exhausted) non-2xx answer.
    pub(crate) fn from_answer(
        status: u16,
        body: &[u8],
        retry_after: Option<Duration>,
        attempts: u32,
    ) -> Error {
        let detail = detail_of(status, body);
        match status {
            401 => Error::Auth { status, detail },
            413 => Error::TooLarge { detail },
            422 => match schema_errors_of(body) {
                Some((errors, error_count)) => Error::Invalid {
                    detail,
                    errors,
                    error_count,
                },
                None => Error::Rejected { status, detail },
            },
            429 => Error::RateLimited {
                detail,
                retry_after,
                attempts,
            },
            500..=599 => Error::Server {
                status,
                detail,
                attempts,
            },
            _ => Error::Rejected { status, detail },
        }
    }

    /// Positions of schema errors counted from the start of a batch: the request that failed
    /// began after `offset` events.
    pub(crate) fn shift_event_indexes(mut self, offset: u64) -> Error {
        if let Error::Invalid { errors, .. } = &mut self {
            for error in errors {
                error.index += offset;
            }
        }
        self
    }

    pub(crate) fn transport(
        url: &str,
        source: Box<dyn StdError + Send + Sync>,
        attempts: u32,
    ) -> Error {
        Error::Transport {
            url: url.to_owned(),
            message: chain(source.as_ref()),
            attempts,
            source,
        }
    }

    pub(crate) fn tls(
        url: &str,
        source: Box<dyn StdError + Send + Sync>,
        ca_file_set: bool,
    ) -> Error {
        Error::Tls {
            url: url.to_owned(),
            message: chain(source.as_ref()),
            ca_file_set,
            source,
        }
    }

    pub(crate) fn not_an_object(index: usize) -> Error {
        Error::Serialization {
            index,
            source: serde::ser::Error::custom(
                "it does not serialize to a JSON object (leitstand stores objects only)",
            ),
        }
    }
}

/// One event that does not match its domain's schema, as the server reports it in a `422`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[non_exhaustive]
pub struct EventError {
    /// Position of the event (0-based; see [`Error::Invalid`] for what it counts from).
    pub index: u64,
    /// JSON Pointer into the event (RFC 6901), e.g. `/temperature`; empty: the whole event.
    #[serde(default)]
    pub path: String,
    /// What is wrong, e.g. `'warm' is not of type 'number'`.
    #[serde(default)]
    pub message: String,
}

impl fmt::Display for EventError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path.is_empty() {
            "/"
        } else {
            &self.path
        };
        write!(f, "event {} at {path}: {}", self.index, self.message)
    }
}

/// The `errors` (and `error_count`) of a schema rejection; `None` when the body has no
/// non-empty `errors` list (another 422, e.g. an idempotency key reused for other events).
/// Tolerant: entries without an `index` are skipped, other fields are ignored.
fn schema_errors_of(body: &[u8]) -> Option<(Vec<EventError>, u64)> {
    #[derive(serde::Deserialize)]
    struct SchemaRejection {
        errors: Vec<serde_json::Value>,
        error_count: Option<u64>,
    }
    let parsed: SchemaRejection = serde_json::from_slice(body).ok()?;
    let errors: Vec<EventError> = parsed
        .errors
        .into_iter()
        .filter_map(|entry| serde_json::from_value(entry).ok())
        .collect();
    if errors.is_empty() {
        return None;
    }
    let listed = errors.len() as u64;
    Some((errors, parsed.error_count.unwrap_or(listed).max(listed)))
}

/// `{"detail": "..."}` → the text; a structured detail (FastAPI validation errors) as compact
/// JSON; any other body as (shortened) text; an empty body as the status line.
fn detail_of(status: u16, body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct ErrorBody {
        detail: serde_json::Value,
    }
    if let Ok(parsed) = serde_json::from_slice::<ErrorBody>(body) {
        return match parsed.detail {
            serde_json::Value::String(text) => text,
            other => other.to_string(),
        };
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return format!("HTTP {status} without a body");
    }
    const MAX: usize = 300;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// `error: cause: cause` — reqwest's own message hides the interesting part in its sources.
fn chain(error: &(dyn StdError + 'static)) -> String {
    let mut out = error.to_string();
    let mut next = error.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = cause.source();
    }
    out
}

fn fmt_spooled(spooled: u64) -> String {
    match spooled {
        0 => String::new(),
        n => format!(" and {n} spooled"),
    }
}

fn tls_hint(ca_file_set: bool) -> &'static str {
    if ca_file_set {
        "LEITSTAND_CA_FILE/ca_file is the only trusted CA: check that it is the CA (or the \
         self-signed certificate) of this server and that the URL's host is in the certificate"
    } else {
        "if the server's certificate is self-signed or from a private CA, set \
         LEITSTAND_CA_FILE (or the builder's ca_file) to that CA's certificate (PEM)"
    }
}

fn fmt_retry_after(retry_after: Option<Duration>) -> RetryAfterText {
    RetryAfterText(retry_after)
}

struct RetryAfterText(Option<Duration>);

impl fmt::Display for RetryAfterText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(wait) => write!(f, " (server asks to wait {:.1} s)", wait.as_secs_f64()),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_status_to_variant_with_the_servers_detail() {
        let body = br#"{"detail": "invalid X-Auth token"}"#;
        let err = Error::from_answer(401, body, None, 1);
        assert!(
            matches!(&err, Error::Auth { status: 401, detail } if detail == "invalid X-Auth token")
        );
        assert!(err.to_string().contains("LEITSTAND_TOKEN"), "{err}");

        let err = Error::from_answer(400, br#"{"detail":"domain mismatch"}"#, None, 1);
        assert!(
            matches!(&err, Error::Rejected { status: 400, detail } if detail == "domain mismatch")
        );
        for status in [409, 415, 422, 404] {
            let err = Error::from_answer(status, br#"{"detail":"x"}"#, None, 1);
            assert!(matches!(err, Error::Rejected { .. }), "{status}: {err:?}");
            assert_eq!(err.status(), Some(status));
        }

        let err = Error::from_answer(
            413,
            br#"{"detail":"body larger than 1048576 bytes"}"#,
            None,
            1,
        );
        assert!(matches!(&err, Error::TooLarge { detail } if detail.contains("1048576")));
        assert!(err.to_string().contains("max_body_bytes"), "{err}");

        let wait = Some(Duration::from_secs(7));
        let err = Error::from_answer(429, br#"{"detail":"rate limit exceeded"}"#, wait, 4);
        assert!(
            matches!(err, Error::RateLimited { attempts: 4, retry_after: Some(w), .. } if w.as_secs() == 7)
        );
        assert!(err.to_string().contains("wait 7.0 s"), "{err}");

        for status in [500, 503, 507] {
            let err = Error::from_answer(status, br#"{"detail":"lock timeout"}"#, None, 3);
            assert!(matches!(err, Error::Server { attempts: 3, .. }), "{status}");
            assert_eq!(err.detail(), Some("lock timeout"));
        }
    }

    #[test]
    fn a_schema_rejection_carries_the_errors() {
        let body = br#"{"detail": "2 of 5 events do not match the schema for 'garten' (garten.schema.json); nothing was stored. First: event 3 at /temperature: 'warm' is not of type 'number'",
            "errors": [{"index": 3, "path": "/temperature", "message": "'warm' is not of type 'number'"},
                       {"index": 4, "path": "", "message": "'sensor' is a required property", "extra": true},
                       {"path": "/no-index"}, "not an object"],
            "error_count": 7, "something_new": 1}"#;
        let err = Error::from_answer(422, body, None, 1);
        let Error::Invalid {
            detail,
            errors,
            error_count,
        } = &err
        else {
            panic!("expected Error::Invalid, got {err:?}");
        };
        assert!(detail.starts_with("2 of 5 events"), "{detail}");
        assert_eq!(*error_count, 7);
        assert_eq!(errors.len(), 2, "entries without an index are skipped");
        assert_eq!(
            (errors[0].index, errors[0].path.as_str()),
            (3, "/temperature")
        );
        assert_eq!(errors[0].message, "'warm' is not of type 'number'");
        assert_eq!(
            errors[1].to_string(),
            "event 4 at /: 'sensor' is a required property"
        );
        assert_eq!(err.status(), Some(422));
        assert!(err.to_string().contains("(7 error(s))"), "{err}");

        // Without error_count: the listed ones; shifted to batch positions.
        let body = br#"{"detail": "x", "errors": [{"index": 0, "path": "/a", "message": "m"}]}"#;
        let err = Error::from_answer(422, body, None, 1).shift_event_indexes(100);
        assert!(
            matches!(&err, Error::Invalid { errors, error_count: 1, .. } if errors[0].index == 100),
            "{err:?}"
        );

        // Another 422 (no usable errors) stays Rejected.
        for body in [
            &br#"{"detail": "Idempotency-Key reused with another body"}"#[..],
            br#"{"detail": "x", "errors": []}"#,
            br#"{"detail": "x", "errors": "not a list"}"#,
        ] {
            let err = Error::from_answer(422, body, None, 1);
            assert!(
                matches!(err, Error::Rejected { status: 422, .. }),
                "{err:?}"
            );
        }
    }

    #[test]
    fn detail_falls_back_to_text_or_status() {
        assert_eq!(detail_of(502, b""), "HTTP 502 without a body");
        assert_eq!(detail_of(502, b"Bad Gateway\n"), "Bad Gateway");
        let validation = br#"{"detail":[{"loc":["query","domain"],"msg":"bad"}]}"#;
        assert_eq!(
            detail_of(422, validation),
            r#"[{"loc":["query","domain"],"msg":"bad"}]"#
        );
        let long = "x".repeat(1000);
        assert_eq!(detail_of(500, long.as_bytes()).chars().count(), 301);
    }

    #[test]
    fn incomplete_batches_say_what_was_stored() {
        let inner = Error::from_answer(400, br#"{"detail":"event 3 is not an object"}"#, None, 1);
        let err = Error::Incomplete {
            accepted: 20,
            requests: 2,
            spooled: 0,
            source: Box::new(inner),
        };
        let text = err.to_string();
        assert!(
            text.contains("20 event(s) in 2 request(s) were stored"),
            "{text}"
        );
        assert!(text.contains("event 3 is not an object"), "{text}");
        assert_eq!(err.status(), Some(400));
    }
}
