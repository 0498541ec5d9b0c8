//! Send JSON events to a leitstand ingest server.
//!
//! leitstand appends every event to `<data-dir>/<domain>.jsonl` and answers `202` once the
//! events are on disk. This crate posts them to `POST /v1/ingest?domain=<domain>` as NDJSON,
//! with the `X-Auth` token, and retries what can safely be retried.
//!
//! * `Client` (feature `blocking`, on by default) and `AsyncClient` (feature `async`,
//!   tokio). Feature `tls` adds `https://` URLs (rustls with the `ring` crypto provider;
//!   the system's trust store, or only the CA in `LEITSTAND_CA_FILE` / [`Builder::ca_file`]).
//!   Feature `spool` keeps what cannot be delivered now on disk and sends it later, in order
//!   (`LEITSTAND_SPOOL_DIR` / [`Builder::spool_dir`]; the Python client's format, so
//!   `leitstand spool status|flush` work on it; see `flush_spool`).
//!   The features only add; the types mean the same with any set.
//! * Configured with a builder or from the environment — the same variables as the Python
//!   client: `LEITSTAND_URL` (default `http://localhost:8788`), `LEITSTAND_TOKEN` (required),
//!   `LEITSTAND_TIMEOUT` (seconds per attempt, 5), `LEITSTAND_RETRIES` (3),
//!   `LEITSTAND_BACKOFF` (seconds, 0.5), `LEITSTAND_CA_FILE` (PEM, for https),
//!   `LEITSTAND_SPOOL_DIR` and `LEITSTAND_SPOOL_MAX_BYTES` (100 MiB).
//! * `send_one(domain, &event)` and `send_batch(domain, events)` take anything that
//!   implements [`serde::Serialize`] and becomes a JSON object. Batches are split below the
//!   server's body limit (1 MiB) and event limit (10,000) — both settable — and can be sent
//!   gzip-compressed.
//! * Retries on transport errors, 408, 429, 500, 502, 503 and 504, with exponential backoff
//!   and jitter, honouring `Retry-After`. Every attempt of one request carries the same
//!   `Idempotency-Key`, so a retry after a lost answer stores nothing twice. Other `4xx` are
//!   never retried, nor are TLS failures (an untrusted certificate: [`Error::Tls`]).
//! * Failures are one [`Error`] enum, built from the status and the server's `detail`; a
//!   schema rejection ([`Error::Invalid`]) carries the server's list of [`EventError`]s.
//!
//! # Example
//!
//! ```no_run
//! # #[cfg(feature = "blocking")]
//! # fn main() -> Result<(), leitstand_producer::Error> {
//! use leitstand_producer::Client;
//! use serde_json::json;
//!
//! // LEITSTAND_URL, LEITSTAND_TOKEN, ... from the environment:
//! let client = Client::from_env()?;
//! let receipt = client.send_one("aussen", &json!({"event": "door", "status": "open"}))?;
//! println!("{receipt}"); // accepted: 1 event(s) for domain "aussen" in 1 request(s)
//!
//! // Or explicitly, with gzip, for a large batch:
//! let client = Client::builder()
//!     .url("http://leitstand.lan:8788")
//!     .token("s3cret")
//!     .gzip(true)
//!     .build()?;
//! let events = (0..50_000).map(|n| json!({"event": "tick", "n": n}));
//! let receipt = client.send_batch("sensors.lan", events)?;
//! assert_eq!(receipt.accepted, 50_000);
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "blocking"))]
//! # fn main() {}
//! ```
//!
//! With the `async` feature:
//!
//! ```no_run
//! # #[cfg(feature = "async")]
//! # async fn run() -> Result<(), leitstand_producer::Error> {
//! use leitstand_producer::AsyncClient;
//!
//! #[derive(serde::Serialize)]
//! struct Reading<'a> {
//!     sensor: &'a str,
//!     celsius: f64,
//! }
//!
//! let client = AsyncClient::from_env()?;
//! client.send_one("aussen", &Reading { sensor: "balkon", celsius: 7.5 }).await?;
//! # Ok(())
//! # }
//! # fn main() {}
//! ```
//!
//! Errors say what to do:
//!
//! ```
//! # #[cfg(feature = "blocking")]
//! # fn main() {
//! use leitstand_producer::{Client, Error};
//!
//! let err = Client::builder().url("http://leitstand.lan").build().unwrap_err();
//! assert!(matches!(err, Error::Config(_)));
//! assert!(err.to_string().contains("set LEITSTAND_TOKEN"));
//! # }
//! # #[cfg(not(feature = "blocking"))]
//! # fn main() {}
//! ```
#![warn(missing_docs)]

#[cfg(feature = "async")]
mod async_client;
#[cfg(feature = "blocking")]
mod blocking;
mod config;
mod encode;
mod error;
mod receipt;
mod retry;
mod send;
#[cfg(feature = "spool")]
mod spool;
#[cfg(feature = "spool")]
mod spooling;
mod tls;

#[cfg(feature = "async")]
pub use async_client::{AsyncClient, AsyncClientBuilder};
#[cfg(feature = "blocking")]
pub use blocking::{Client, ClientBuilder};
pub use config::{
    Builder, DEFAULT_BACKOFF, DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_EVENTS, DEFAULT_RETRIES,
    DEFAULT_SPOOL_MAX_BYTES, DEFAULT_TIMEOUT, DEFAULT_URL,
};
pub use error::{Error, EventError};
pub use receipt::Receipt;
#[cfg(feature = "spool")]
pub use spooling::Flushed;
