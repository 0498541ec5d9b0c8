//! The client's side of the spool (feature `spool`): which failures are kept for later, when
//! spooled batches are sent again, and what a drain does with each answer. No HTTP here: both
//! clients make the calls, as with [`crate::send::Request`]. The rules are those of the Python
//! client (`leitstand/client/spooling.py`):
//!
//! - A batch that still fails after the retries with a failure time can heal (no answer, 5xx,
//!   429, 408) is appended to the spool; the call returns a [`Receipt`] with `spooled`.
//!   Everything else (400, 401, 403, 413, 422, TLS …) is returned at once.
//! - While anything is spooled, new batches queue behind it (order is kept): a call first tries
//!   to drain (when a try is due) and spools its own batch if the queue stays non-empty.
//! - A drain sends the queue oldest first, each entry under its own Idempotency-Key, and removes
//!   an entry only after the server has it. It stops at the first failure time can heal (and
//!   tries again after a backoff); an entry the server refuses for good moves to `rejected/`;
//!   an auth failure (401, 403) stops the drain and keeps everything.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::encode::Chunk;
use crate::error::Error;
use crate::receipt::Receipt;
use crate::retry::RetryPolicy;
use crate::spool::Spool;

const NDJSON: &str = "application/x-ndjson";
/// How often an idle background drain looks for spooled batches (other processes may spool
/// into the same directory).
const IDLE_POLL: Duration = Duration::from_secs(1);

/// A failure that time may heal: keep the batch rather than return the error.
pub(crate) fn spoolable(error: &Error) -> bool {
    matches!(
        error,
        Error::Transport { .. }
            | Error::Server { .. }
            | Error::RateLimited { .. }
            | Error::Rejected { status: 408, .. }
    )
}

/// `flush_spool` without a spool.
pub(crate) fn no_spool() -> Error {
    Error::Config("no spool: set LEITSTAND_SPOOL_DIR (or call .spool_dir())".into())
}

/// What a flush sent: see `Client::flush_spool`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Flushed {
    /// Spooled batches the server has now stored.
    pub batches: u64,
    /// Events in those batches.
    pub events: u64,
    /// Entries the server refused for good, moved to `rejected/` in the spool directory.
    pub rejected: u64,
}

/// The spool of one client, and when to try draining it again (a backoff after a drain that
/// stopped early; shared by the calls and the background drain).
#[derive(Debug)]
pub(crate) struct Spooler {
    pub spool: Spool,
    backoff: RetryPolicy,
    next_try: Mutex<(u32, Option<Instant>)>,
}

impl Spooler {
    pub fn open(dir: &Path, max_bytes: u64, policy: &RetryPolicy) -> Result<Spooler, Error> {
        Ok(Spooler {
            spool: Spool::open(dir, max_bytes)?,
            backoff: policy.clone(),
            next_try: Mutex::new((0, None)),
        })
    }

    /// Append the batch of `chunk` to the spool, uncompressed (an entry has no content
    /// encoding); [`Error::SpoolFull`] if it does not fit.
    pub fn keep(
        &self,
        domain: &str,
        chunk: &Chunk,
        error: Option<&Error>,
    ) -> Result<Receipt, Error> {
        let mut plain = Vec::new();
        let body = if chunk.gzip {
            flate2::read::GzDecoder::new(&chunk.body[..])
                .read_to_end(&mut plain)
                .expect("the client's own gzip decodes");
            &plain
        } else {
            &chunk.body
        };
        self.spool
            .append(domain, &chunk.key, NDJSON, chunk.events, body)?;
        if let Some(error) = error {
            self.spool.record_error(&error.to_string(), None);
        }
        Ok(Receipt::spooled(domain, chunk.events))
    }

    /// Are batches spooled, so that new ones must queue behind them?
    pub fn must_wait(&self) -> Result<bool, Error> {
        self.spool.pending()
    }

    /// Is a drain worth trying now (not within the backoff after one that failed)?
    pub fn due(&self) -> bool {
        let state = self.next_try.lock().unwrap_or_else(|e| e.into_inner());
        state.1.is_none_or(|at| Instant::now() >= at)
    }

    /// How long the background drain sleeps before it looks again.
    pub fn pause(&self) -> Duration {
        let state = self.next_try.lock().unwrap_or_else(|e| e.into_inner());
        match state.1 {
            Some(at) => at
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(10)),
            None => IDLE_POLL.min(self.backoff.max_backoff),
        }
    }

    /// A drain under the drain lock, or `None` if another one (in any process) runs. A patient
    /// drain (flush) waits for the lock and retries each entry as a send would; the others try
    /// each entry once.
    pub fn start_drain(&self, patient: bool) -> Result<Option<Drain<'_>>, Error> {
        let Some(lock) = self.spool.drain_lock(patient)? else {
            // Another process drains: look again later.
            let mut state = self.next_try.lock().unwrap_or_else(|e| e.into_inner());
            state.1 = Some(Instant::now() + IDLE_POLL.min(self.backoff.max_backoff));
            return Ok(None);
        };
        Ok(Some(Drain {
            spool: &self.spool,
            _lock: lock,
            names: VecDeque::new(),
            current: None,
            error: None,
            flushed: Flushed::default(),
        }))
    }

    /// Note how a drain ended: a failure backs off the next try.
    pub fn finish(&self, drain: Drain<'_>) -> Result<Flushed, Error> {
        let mut state = self.next_try.lock().unwrap_or_else(|e| e.into_inner());
        match drain.error {
            Some(error) => {
                let wait = self.backoff.backoff(state.0);
                *state = (state.0 + 1, Some(Instant::now() + wait));
                Err(error)
            }
            None => {
                *state = (0, None);
                Ok(drain.flushed)
            }
        }
    }
}

/// The request of the next spooled entry.
pub(crate) struct Outgoing {
    pub domain: String,
    pub chunk: Chunk,
    pub content_type: String,
}

/// One pass over the queue, oldest entry first:
///
/// ```text
/// while let Some(out) = drain.next()? { <send it>; drain.sent()? or drain.failed(error)? }
/// ```
pub(crate) struct Drain<'a> {
    spool: &'a Spool,
    _lock: File,
    names: VecDeque<String>,
    current: Option<(String, u64, usize)>,
    error: Option<Error>,
    flushed: Flushed,
}

impl Drain<'_> {
    /// The next entry to send; `None` when the queue is empty or the drain stopped.
    pub fn next(&mut self) -> Result<Option<Outgoing>, Error> {
        if self.error.is_some() {
            return Ok(None);
        }
        loop {
            if self.names.is_empty() {
                self.names = self.spool.names()?.into();
                if self.names.is_empty() {
                    return Ok(None);
                }
            }
            let name = self.names.pop_front().expect("not empty");
            let entry = match self.spool.read(&name) {
                Ok(Some(entry)) => entry,
                Ok(None) => continue, // taken by a drain elsewhere
                Err(why) => {
                    self.spool.reject(&name)?;
                    self.spool.record_error(
                        &format!("unreadable spool entry moved to rejected/: {why}"),
                        Some(&name),
                    );
                    self.flushed.rejected += 1;
                    continue;
                }
            };
            self.current = Some((entry.name, entry.size, entry.events));
            return Ok(Some(Outgoing {
                domain: entry.domain,
                content_type: entry.content_type,
                chunk: Chunk {
                    body: entry.body,
                    gzip: false,
                    events: entry.events,
                    key: entry.key,
                },
            }));
        }
    }

    /// The server has the current entry: forget it.
    pub fn sent(&mut self) -> Result<(), Error> {
        let (name, size, events) = self.current.take().expect("an entry was sent");
        self.spool.remove(&name, size)?;
        self.flushed.batches += 1;
        self.flushed.events += events as u64;
        Ok(())
    }

    /// The current entry failed: stop (time may heal it, or the token is wrong), or move it to
    /// `rejected/` (the server refuses it for good) and go on.
    pub fn failed(&mut self, error: Error) -> Result<(), Error> {
        let (name, _, _) = self.current.take().expect("an entry was sent");
        let auth = matches!(
            error,
            Error::Auth { .. } | Error::Rejected { status: 403, .. }
        );
        if spoolable(&error) || auth {
            self.spool.record_error(&error.to_string(), Some(&name));
            self.error = Some(error);
            return Ok(());
        }
        self.spool.reject(&name)?;
        self.spool.record_error(
            &format!("the server refused a spooled batch, moved to rejected/: {error}"),
            Some(&name),
        );
        self.flushed.rejected += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spooler_with(entries: usize) -> (tempfile::TempDir, Spooler) {
        let dir = tempfile::tempdir().unwrap();
        let policy = RetryPolicy {
            retries: 0,
            backoff: Duration::from_secs(60),
            max_backoff: Duration::from_secs(60),
            max_retry_after: Duration::from_secs(1),
        };
        let spooler = Spooler::open(dir.path(), 1 << 20, &policy).unwrap();
        for n in 0..entries {
            let chunk = crate::encode::chunk(format!("{{\"n\":{n}}}\n").into_bytes(), 1, true);
            spooler.keep("aussen", &chunk, None).unwrap();
        }
        (dir, spooler)
    }

    fn rejected(status: u16) -> Error {
        Error::Rejected {
            status,
            detail: "no".into(),
        }
    }

    #[test]
    fn a_refused_entry_moves_aside_and_the_drain_goes_on() {
        let (dir, spooler) = spooler_with(2);
        let mut drain = spooler.start_drain(false).unwrap().unwrap();
        let first = drain.next().unwrap().unwrap();
        assert_eq!(first.chunk.body, b"{\"n\":0}\n", "stored uncompressed");
        drain.failed(rejected(422)).unwrap();
        drain.next().unwrap().unwrap();
        drain.sent().unwrap();
        assert!(drain.next().unwrap().is_none());
        let flushed = spooler.finish(drain).unwrap();
        assert_eq!(
            (flushed.batches, flushed.events, flushed.rejected),
            (1, 1, 1)
        );
        assert_eq!(
            std::fs::read_dir(dir.path().join("rejected"))
                .unwrap()
                .count(),
            1
        );
        assert!(!spooler.must_wait().unwrap());
    }

    #[test]
    fn time_and_auth_failures_stop_the_drain_and_keep_everything() {
        for error in [
            rejected(403),
            rejected(408),
            Error::Auth {
                status: 401,
                detail: "no".into(),
            },
            Error::Server {
                status: 503,
                detail: "busy".into(),
                attempts: 1,
            },
        ] {
            let (_dir, spooler) = spooler_with(2);
            let mut drain = spooler.start_drain(false).unwrap().unwrap();
            drain.next().unwrap().unwrap();
            drain.failed(error).unwrap();
            assert!(drain.next().unwrap().is_none(), "stopped");
            assert!(spooler.finish(drain).is_err());
            assert_eq!(spooler.spool.names().unwrap().len(), 2, "both kept");
            assert!(!spooler.due(), "the next try waits for the backoff");
        }
    }
}
