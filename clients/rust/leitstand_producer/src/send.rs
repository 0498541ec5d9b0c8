//! One request and its retries, without I/O: both clients run the same steps and only differ
//! in how they make the HTTP call and how they sleep.

use std::error::Error as StdError;
use std::time::{Duration, SystemTime};

use reqwest::header::{self, HeaderMap, HeaderName, HeaderValue};
use reqwest::Url;

use crate::config::Config;
use crate::encode::Chunk;
use crate::error::Error;
use crate::receipt::Receipt;
use crate::retry::{is_retryable_status, parse_retry_after, RetryPolicy};
use crate::tls::is_tls_failure;

const NDJSON: &str = "application/x-ndjson";
const USER_AGENT: &str = concat!("leitstand_producer/", env!("CARGO_PKG_VERSION"));

/// What one HTTP attempt produced.
pub(crate) enum Attempt {
    /// The server answered (any status).
    Answer {
        status: u16,
        headers: HeaderMap,
        body: Vec<u8>,
    },
    /// No (complete) answer: connect, timeout, reset, unreadable body.
    Transport(Box<dyn StdError + Send + Sync>),
}

/// What to do after an attempt.
pub(crate) enum Next {
    Done(Result<Receipt, Error>),
    RetryAfter(Duration),
}

/// The request for one chunk: the same URL, headers (one `Idempotency-Key`) and body on
/// every attempt.
pub(crate) struct Request<'a> {
    config: &'a Config,
    chunk: &'a Chunk,
    domain: &'a str,
    pub url: Url,
    pub headers: HeaderMap,
    retry: RetryPolicy,
    attempts: u32,
}

impl<'a> Request<'a> {
    pub fn new(config: &'a Config, domain: &'a str, chunk: &'a Chunk) -> Request<'a> {
        let mut url = config.ingest_url.clone();
        url.query_pairs_mut().append_pair("domain", domain);
        let mut headers = HeaderMap::new();
        let value = |text: &str| HeaderValue::from_str(text).expect("checked printable ASCII");
        headers.insert(HeaderName::from_static("x-auth"), value(&config.token));
        headers.insert(
            HeaderName::from_static("idempotency-key"),
            value(&chunk.key),
        );
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(NDJSON));
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        headers.insert(header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
        if chunk.gzip {
            headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        Request {
            config,
            chunk,
            domain,
            url,
            headers,
            retry: config.retry.clone(),
            attempts: 0,
        }
    }

    /// Sent with another `Content-Type` (a spooled entry keeps the one it was written with).
    #[cfg_attr(not(feature = "spool"), allow(dead_code))]
    pub fn content_type(mut self, content_type: &str) -> Self {
        if let Ok(value) = HeaderValue::from_str(content_type) {
            self.headers.insert(header::CONTENT_TYPE, value);
        }
        self
    }

    /// A request that is not retried: the spool's drain tries each entry once, then backs off
    /// as a whole.
    #[cfg_attr(not(feature = "spool"), allow(dead_code))]
    pub fn once(mut self) -> Self {
        self.retry.retries = 0;
        self
    }

    pub fn body(&self) -> Vec<u8> {
        self.chunk.body.clone()
    }

    /// Decide after an attempt: done (success or a final error), or wait and try again.
    pub fn next(&mut self, attempt: Attempt) -> Next {
        self.attempts += 1;
        let retry = self.attempts - 1;
        let policy = &self.retry;
        match attempt {
            Attempt::Answer {
                status,
                headers,
                body,
            } if (200..300).contains(&status) => Next::Done(Ok(Receipt::from_answer(
                &body,
                header(&headers, "idempotent-replayed")
                    .is_some_and(|v| v.eq_ignore_ascii_case("true")),
                self.chunk.events,
                self.domain,
            ))),
            Attempt::Answer {
                status, headers, ..
            } if (300..400).contains(&status) => {
                // Redirects are not followed: a POST body must not be re-sent somewhere else.
                let target = header(&headers, "location").unwrap_or("an unnamed location");
                Next::Done(Err(Error::Rejected {
                    status,
                    detail: format!(
                        "the server redirects to {target}; set LEITSTAND_URL to the address \
                         leitstand itself answers on"
                    ),
                }))
            }
            Attempt::Answer {
                status,
                headers,
                body,
            } => {
                let retry_after = header(&headers, "retry-after")
                    .and_then(|value| parse_retry_after(value, SystemTime::now()));
                if is_retryable_status(status) {
                    if let Some(wait) = policy.wait_before(retry, retry_after) {
                        return Next::RetryAfter(wait);
                    }
                }
                Next::Done(Err(Error::from_answer(
                    status,
                    &body,
                    retry_after,
                    self.attempts,
                )))
            }
            Attempt::Transport(source) if is_tls_failure(source.as_ref()) => {
                Next::Done(Err(Error::tls(
                    self.config.ingest_url.as_str(),
                    source,
                    self.config.ca_file.is_some(),
                )))
            }
            Attempt::Transport(source) => match policy.wait_before(retry, None) {
                Some(wait) => Next::RetryAfter(wait),
                None => Next::Done(Err(Error::transport(
                    self.config.ingest_url.as_str(),
                    source,
                    self.attempts,
                ))),
            },
        }
    }
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

/// Accumulates the receipts of a batch; turns a failure after a partial success into
/// [`Error::Incomplete`], so the caller knows what is stored.
pub(crate) struct BatchProgress {
    receipt: Receipt,
}

impl BatchProgress {
    pub fn new(domain: &str) -> BatchProgress {
        BatchProgress {
            receipt: Receipt::empty(domain),
        }
    }

    pub fn stored(&mut self, receipt: Receipt) {
        self.receipt.add(receipt);
    }

    pub fn failed(self, error: Error) -> Error {
        let (accepted, spooled) = (self.receipt.accepted, self.receipt.spooled);
        if accepted == 0 && spooled == 0 {
            return error;
        }
        let error = error.shift_event_indexes(accepted + spooled);
        Error::Incomplete {
            accepted,
            requests: self.receipt.requests,
            spooled,
            source: Box::new(error),
        }
    }

    pub fn finish(self) -> Receipt {
        self.receipt
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;
    use crate::config::Builder;
    use crate::encode::chunk;

    fn config() -> Config {
        let url = if cfg!(feature = "tls") {
            "https://leitstand.lan"
        } else {
            "http://leitstand.lan"
        };
        Builder::<()>::default()
            .token("t")
            .url(url)
            .retries(3)
            .config()
            .unwrap()
    }

    #[test]
    fn a_connection_failure_is_retried() {
        let (config, chunk) = (config(), chunk(b"{}\n".to_vec(), 1, false));
        let mut request = Request::new(&config, "aussen", &chunk);
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert!(matches!(
            request.next(Attempt::Transport(Box::new(refused))),
            Next::RetryAfter(_)
        ));
    }

    #[test]
    #[cfg(feature = "tls")]
    fn a_tls_failure_is_final_at_the_first_attempt() {
        let (config, chunk) = (config(), chunk(b"{}\n".to_vec(), 1, false));
        let mut request = Request::new(&config, "aussen", &chunk);
        // As hyper and tokio-rustls report it: rustls' error inside two io::Errors.
        let rustls_error =
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let wrapped = io::Error::other(io::Error::new(io::ErrorKind::InvalidData, rustls_error));
        match request.next(Attempt::Transport(Box::new(wrapped))) {
            Next::Done(Err(Error::Tls {
                url,
                message,
                ca_file_set: false,
                ..
            })) => {
                assert_eq!(url, "https://leitstand.lan/v1/ingest");
                assert!(message.contains("UnknownIssuer"), "{message}");
            }
            Next::Done(other) => panic!("expected Error::Tls, got {other:?}"),
            Next::RetryAfter(_) => panic!("a TLS failure was retried"),
        }
    }
}
