//! The blocking client's spool (feature `spool`): send behind what is spooled, keep what
//! cannot be delivered, drain at the next call, in a background thread and by `flush_spool`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::Client;
use crate::encode::Chunk;
use crate::error::Error;
use crate::receipt::Receipt;
use crate::send::Request;
use crate::spooling::{spoolable, Flushed, Spooler};

/// The background drain thread of a client; stopped when the last clone of the client is
/// dropped (what is spooled stays spooled).
#[derive(Debug)]
pub(crate) struct Background {
    stop: Arc<AtomicBool>,
    thread: std::thread::Thread,
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.unpark();
    }
}

impl Client {
    pub(super) fn with_background_drain(mut self) -> Result<Client, Error> {
        let Some(spooler) = self.config.spooler.clone() else {
            return Ok(self);
        };
        let stop = Arc::new(AtomicBool::new(false));
        let worker = self.clone(); // without `background`: it does not keep itself alive
        let stopped = stop.clone();
        let handle = std::thread::Builder::new()
            .name("leitstand-spool-drain".into())
            .spawn(move || worker.drain_in_background(&spooler, &stopped))
            .map_err(|e| Error::Config(format!("cannot start the spool's drain thread: {e}")))?;
        self.background = Some(Arc::new(Background {
            stop,
            thread: handle.thread().clone(),
        }));
        Ok(self)
    }

    fn drain_in_background(&self, spooler: &Spooler, stop: &AtomicBool) {
        while !stop.load(Ordering::SeqCst) {
            std::thread::park_timeout(spooler.pause());
            if stop.load(Ordering::SeqCst) {
                break;
            }
            if spooler.due() && matches!(spooler.must_wait(), Ok(true)) {
                // A failed send is noted in the spool by the drain; only its own I/O is left.
                if let Err(error @ Error::Spool { .. }) = self.drain(spooler, false) {
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
    pub fn flush_spool(&self) -> Result<Flushed, Error> {
        let spooler = self
            .config
            .spooler
            .as_ref()
            .ok_or_else(crate::spooling::no_spool)?;
        Ok(self
            .drain(spooler, true)?
            .expect("a patient drain waits for the lock"))
    }

    pub(super) fn send_or_spool(
        &self,
        spooler: &Spooler,
        domain: &str,
        chunk: &Chunk,
    ) -> Result<Receipt, Error> {
        if spooler.must_wait()? {
            let emptied = spooler.due() && matches!(self.drain(spooler, false), Ok(Some(_)));
            if !emptied {
                return spooler.keep(domain, chunk, None);
            }
        }
        match self.send_request(Request::new(&self.config, domain, chunk)) {
            Err(error) if spoolable(&error) => spooler.keep(domain, chunk, Some(&error)),
            result => result,
        }
    }

    /// One pass over the queue; `Ok(None)` if another drain holds the lock (not patient).
    fn drain(&self, spooler: &Spooler, patient: bool) -> Result<Option<Flushed>, Error> {
        let Some(mut drain) = spooler.start_drain(patient)? else {
            return Ok(None);
        };
        while let Some(out) = drain.next()? {
            let request =
                Request::new(&self.config, &out.domain, &out.chunk).content_type(&out.content_type);
            let request = if patient { request } else { request.once() };
            match self.send_request(request) {
                Ok(_) => drain.sent()?,
                Err(error) => drain.failed(error)?,
            }
        }
        spooler.finish(drain).map(Some)
    }
}
