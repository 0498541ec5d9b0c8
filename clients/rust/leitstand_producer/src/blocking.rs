//! The blocking client.

use std::sync::Arc;

use serde::Serialize;

use crate::config::{Builder, Config};
use crate::encode::{chunk, encode_line, Chunk, Chunker};
use crate::error::Error;
use crate::receipt::Receipt;
use crate::send::{Attempt, BatchProgress, Next, Request};

#[cfg(feature = "spool")]
mod spool;

/// A blocking leitstand client. Cheap to clone; clones share one connection pool.
///
/// Do not use it inside an async runtime (it runs its own): use
/// `AsyncClient` there (feature `async`).
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::blocking::Client,
    config: Arc<Config>,
    /// Stops the background drain of the spool when the last clone is dropped.
    #[cfg(feature = "spool")]
    background: Option<Arc<spool::Background>>,
}

/// The builder of a [`Client`].
pub type ClientBuilder = Builder<Client>;

impl Builder<Client> {
    /// Check the settings and build the client. Fails with [`Error::Config`] when the token is
    /// missing or a setting is unusable.
    pub fn build(self) -> Result<Client, Error> {
        let config = self.config()?;
        let http = reqwest::blocking::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none());
        #[cfg(feature = "tls")]
        let http = http.tls_backend_preconfigured(config.tls.rustls_config());
        let http = http
            .build()
            .map_err(|e| Error::Config(format!("cannot set up the HTTP client: {e}")))?;
        let client = Client {
            http,
            config: Arc::new(config),
            #[cfg(feature = "spool")]
            background: None,
        };
        #[cfg(feature = "spool")]
        let client = client.with_background_drain()?;
        Ok(client)
    }
}

impl Client {
    /// A builder with the defaults (see [`Builder`]).
    pub fn builder() -> ClientBuilder {
        Builder::default()
    }

    /// A client configured from the environment: `LEITSTAND_URL`, `LEITSTAND_TOKEN` and the
    /// other variables of [`Builder::with_env`].
    pub fn from_env() -> Result<Client, Error> {
        Client::builder().with_env()?.build()
    }

    /// Send one event (any `Serialize` that becomes a JSON object) to `domain`.
    pub fn send_one<T: Serialize + ?Sized>(
        &self,
        domain: &str,
        event: &T,
    ) -> Result<Receipt, Error> {
        let limits = self.config.limits();
        let line = encode_line(0, event, limits)?;
        self.send_chunk(domain, &chunk(line, 1, limits.gzip))
    }

    /// Send events to `domain` as NDJSON, in as many requests as the body and event limits
    /// need (each request all-or-nothing, with its own idempotency key). Events are serialized
    /// lazily, so the iterator may be longer than memory.
    ///
    /// When a later request fails after earlier ones were stored, the error is
    /// [`Error::Incomplete`] and says how many events are stored.
    pub fn send_batch<I>(&self, domain: &str, events: I) -> Result<Receipt, Error>
    where
        I: IntoIterator,
        I::Item: Serialize,
    {
        let mut progress = BatchProgress::new(domain);
        for chunk in Chunker::new(events.into_iter(), self.config.limits()) {
            match chunk.and_then(|chunk| self.send_chunk(domain, &chunk)) {
                Ok(receipt) => progress.stored(receipt),
                Err(error) => return Err(progress.failed(error)),
            }
        }
        Ok(progress.finish())
    }

    fn send_chunk(&self, domain: &str, chunk: &Chunk) -> Result<Receipt, Error> {
        #[cfg(feature = "spool")]
        if let Some(spooler) = &self.config.spooler {
            return self.send_or_spool(spooler, domain, chunk);
        }
        self.send_request(Request::new(&self.config, domain, chunk))
    }

    fn send_request(&self, mut send: Request<'_>) -> Result<Receipt, Error> {
        loop {
            let attempt = self.attempt(&send);
            match send.next(attempt) {
                Next::Done(result) => return result,
                Next::RetryAfter(wait) => std::thread::sleep(wait),
            }
        }
    }

    fn attempt(&self, send: &Request<'_>) -> Attempt {
        let response = self
            .http
            .post(send.url.clone())
            .headers(send.headers.clone())
            .body(send.body())
            .send();
        let response = match response {
            Ok(response) => response,
            Err(error) => return Attempt::Transport(Box::new(error)),
        };
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        match response.bytes() {
            Ok(body) => Attempt::Answer {
                status,
                headers,
                body: body.to_vec(),
            },
            Err(error) => Attempt::Transport(Box::new(error)),
        }
    }
}
