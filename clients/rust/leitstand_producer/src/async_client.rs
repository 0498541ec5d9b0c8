//! The async client (tokio).

use std::sync::Arc;

use serde::Serialize;

use crate::config::{Builder, Config};
use crate::encode::{chunk, encode_line, Chunk, Chunker};
use crate::error::Error;
use crate::receipt::Receipt;
use crate::send::{Attempt, BatchProgress, Next, Request};

#[cfg(feature = "spool")]
mod spool;

/// An async leitstand client for the tokio runtime. Cheap to clone; clones share one
/// connection pool.
#[derive(Debug, Clone)]
pub struct AsyncClient {
    http: reqwest::Client,
    config: Arc<Config>,
    /// Starts the background drain of the spool (at the first send, inside the runtime) and
    /// stops it when the last clone is dropped.
    #[cfg(feature = "spool")]
    background: Option<Arc<spool::Background>>,
}

/// The builder of an [`AsyncClient`].
pub type AsyncClientBuilder = Builder<AsyncClient>;

impl Builder<AsyncClient> {
    /// Check the settings and build the client. Fails with [`Error::Config`] when the token is
    /// missing or a setting is unusable.
    pub fn build(self) -> Result<AsyncClient, Error> {
        let config = self.config()?;
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none());
        #[cfg(feature = "tls")]
        let http = http.tls_backend_preconfigured(config.tls.rustls_config());
        let http = http
            .build()
            .map_err(|e| Error::Config(format!("cannot set up the HTTP client: {e}")))?;
        let config = Arc::new(config);
        Ok(AsyncClient {
            #[cfg(feature = "spool")]
            background: config
                .spooler
                .as_ref()
                .map(|_| Arc::new(spool::Background::default())),
            http,
            config,
        })
    }
}

impl AsyncClient {
    /// A builder with the defaults (see [`Builder`]).
    pub fn builder() -> AsyncClientBuilder {
        Builder::default()
    }

    /// A client configured from the environment: `LEITSTAND_URL`, `LEITSTAND_TOKEN` and the
    /// other variables of [`Builder::with_env`].
    pub fn from_env() -> Result<AsyncClient, Error> {
        AsyncClient::builder().with_env()?.build()
    }

    /// Send one event (any `Serialize` that becomes a JSON object) to `domain`.
    pub async fn send_one<T: Serialize + ?Sized>(
        &self,
        domain: &str,
        event: &T,
    ) -> Result<Receipt, Error> {
        let limits = self.config.limits();
        let line = encode_line(0, event, limits)?;
        self.send_chunk(domain, &chunk(line, 1, limits.gzip)).await
    }

    /// Send events to `domain` as NDJSON, in as many requests as the body and event limits
    /// need (each request all-or-nothing, with its own idempotency key). Events are serialized
    /// lazily, so the iterator may be longer than memory.
    ///
    /// When a later request fails after earlier ones were stored, the error is
    /// [`Error::Incomplete`] and says how many events are stored.
    pub async fn send_batch<I>(&self, domain: &str, events: I) -> Result<Receipt, Error>
    where
        I: IntoIterator,
        I::Item: Serialize,
    {
        let mut progress = BatchProgress::new(domain);
        for chunk in Chunker::new(events.into_iter(), self.config.limits()) {
            let result = match chunk {
                Ok(chunk) => self.send_chunk(domain, &chunk).await,
                Err(error) => Err(error),
            };
            match result {
                Ok(receipt) => progress.stored(receipt),
                Err(error) => return Err(progress.failed(error)),
            }
        }
        Ok(progress.finish())
    }

    async fn send_chunk(&self, domain: &str, chunk: &Chunk) -> Result<Receipt, Error> {
        #[cfg(feature = "spool")]
        if let Some(spooler) = &self.config.spooler {
            self.start_background_drain();
            return self.send_or_spool(spooler, domain, chunk).await;
        }
        self.send_request(Request::new(&self.config, domain, chunk))
            .await
    }

    async fn send_request(&self, mut send: Request<'_>) -> Result<Receipt, Error> {
        loop {
            let attempt = self.attempt(&send).await;
            match send.next(attempt) {
                Next::Done(result) => return result,
                Next::RetryAfter(wait) => tokio::time::sleep(wait).await,
            }
        }
    }

    async fn attempt(&self, send: &Request<'_>) -> Attempt {
        let response = self
            .http
            .post(send.url.clone())
            .headers(send.headers.clone())
            .body(send.body())
            .send()
            .await;
        let response = match response {
            Ok(response) => response,
            Err(error) => return Attempt::Transport(Box::new(error)),
        };
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        match response.bytes().await {
            Ok(body) => Attempt::Answer {
                status,
                headers,
                body: body.to_vec(),
            },
            Err(error) => Attempt::Transport(Box::new(error)),
        }
    }
}
