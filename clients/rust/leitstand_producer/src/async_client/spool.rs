//! The async client's spool (feature `spool`): as the blocking client's, with the background
//! drain as a tokio task that the first send starts (then a runtime is sure to be there).
//! The spool's file I/O is blocking and short (an fsync per spooled batch); waiting for the
//! drain lock is done by polling, never by blocking the runtime.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::AsyncClient;
use crate::encode::Chunk;
use crate::error::Error;
use crate::receipt::Receipt;
use crate::send::Request;
use crate::spooling::{spoolable, Flushed, Spooler};

const LOCK_POLL: Duration = Duration::from_millis(50);

/// The background drain task of a client: started once, stopped when the last clone of the
/// client is dropped (what is spooled stays spooled).
#[derive(Debug, Default)]
pub(crate) struct Background {
    started: AtomicBool,
    stop: Arc<AtomicBool>,
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

impl AsyncClient {
    pub(super) fn start_background_drain(&self) {
        let (Some(background), Some(spooler)) = (&self.background, &self.config.spooler) else {
            return;
        };
        if background.started.swap(true, Ordering::SeqCst) {
            return;
        }
        let worker = AsyncClient {
            background: None, // it must not keep itself alive
            ..self.clone()
        };
        let (spooler, stop) = (spooler.clone(), background.stop.clone());
        tokio::spawn(async move { worker.drain_in_background(&spooler, &stop).await });
    }

    async fn drain_in_background(&self, spooler: &Spooler, stop: &AtomicBool) {
        while !stop.load(Ordering::SeqCst) {
            tokio::time::sleep(spooler.pause()).await;
            if stop.load(Ordering::SeqCst) {
                break;
            }
            if spooler.due() && matches!(spooler.must_wait(), Ok(true)) {
                // A failed send is noted in the spool by the drain; only its own I/O is left.
                if let Err(error @ Error::Spool { .. }) = self.drain(spooler, false).await {
                    spooler
                        .spool
                        .record_error(&format!("background drain: {error}"), None);
                }
            }
        }
    }

    /// Send everything spooled now, oldest first, each batch under its own Idempotency-Key
    /// with the client's retries (waiting for a drain that runs elsewhere, in any process).
    /// `Ok` when the spool is empty; the error that stopped it otherwise (what is left stays
    /// spooled). Entries the server refuses for good move to `rejected/` and are counted.
    /// Needs a spool ([`Error::Config`] without one).
    pub async fn flush_spool(&self) -> Result<Flushed, Error> {
        let spooler = self
            .config
            .spooler
            .as_ref()
            .ok_or_else(crate::spooling::no_spool)?;
        loop {
            if let Some(flushed) = self.drain(spooler, true).await? {
                return Ok(flushed);
            }
            tokio::time::sleep(LOCK_POLL).await;
        }
    }

    pub(super) async fn send_or_spool(
        &self,
        spooler: &Spooler,
        domain: &str,
        chunk: &Chunk,
    ) -> Result<Receipt, Error> {
        if spooler.must_wait()? {
            let emptied = spooler.due() && matches!(self.drain(spooler, false).await, Ok(Some(_)));
            if !emptied {
                return spooler.keep(domain, chunk, None);
            }
        }
        match self
            .send_request(Request::new(&self.config, domain, chunk))
            .await
        {
            Err(error) if spoolable(&error) => spooler.keep(domain, chunk, Some(&error)),
            result => result,
        }
    }

    /// One pass over the queue; `Ok(None)` if another drain holds the lock. `patient`: with
    /// the client's retries (else each entry once).
    async fn drain(&self, spooler: &Spooler, patient: bool) -> Result<Option<Flushed>, Error> {
        let Some(mut drain) = spooler.start_drain(false)? else {
            return Ok(None);
        };
        while let Some(out) = drain.next()? {
            let request =
                Request::new(&self.config, &out.domain, &out.chunk).content_type(&out.content_type);
            let request = if patient { request } else { request.once() };
            match self.send_request(request).await {
                Ok(_) => drain.sent()?,
                Err(error) => drain.failed(error)?,
            }
        }
        spooler.finish(drain).map(Some)
    }
}
