//! The durable spool on disk (feature `spool`), in the format of the Python client
//! (`leitstand/client/spool.py`), so that both clients and `leitstand spool status|flush` can
//! share one directory:
//!
//! ```text
//! queue/<ns>-<pid>-<seq>.batch   one batch each, complete: names sort in the order written
//! tmp/                           batches being written (renamed into queue/ when whole)
//! rejected/                      batches the server refused when they were sent from here
//! bytes                          the size of queue/ (kept under its own flock)
//! drain.lock                     held (flock) by the one process draining the queue
//! last-error.json                the last failure
//! ```
//!
//! An entry is one JSON header line (`domain`, `key`, `content_type`, `events`) and the body.
//! It is written to tmp/, fsynced, renamed into queue/, and queue/ is fsynced: after a crash
//! an entry is either whole in queue/ or absent. The locks are `flock`s (std's `File::lock`),
//! the kind Python's `fcntl.flock` takes, so processes of both clients exclude each other.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::Error;

const SUFFIX: &str = ".batch";

/// One spooled batch: what to send again, under the same Idempotency-Key.
#[derive(Debug)]
pub(crate) struct Entry {
    pub name: String,
    pub domain: String,
    pub key: String,
    pub content_type: String,
    pub events: usize,
    pub body: Vec<u8>,
    pub size: u64,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Header {
    domain: String,
    key: String,
    content_type: String,
    events: usize,
}

/// One spool directory (created if missing), bounded to `max_bytes` of queued entries.
#[derive(Debug)]
pub(crate) struct Spool {
    path: PathBuf,
    max_bytes: u64,
    last_name: Mutex<(u64, u64)>,
}

impl Spool {
    pub fn open(path: &Path, max_bytes: u64) -> Result<Spool, Error> {
        let spool = Spool {
            path: path.to_owned(),
            max_bytes,
            last_name: Mutex::new((0, 0)),
        };
        let created = [
            path.to_owned(),
            spool.queue(),
            spool.tmp(),
            spool.rejected(),
        ]
        .iter()
        .try_for_each(|dir| {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
        })
        .and_then(|()| open_rw(&spool.path.join("bytes")).map(drop));
        created.map_err(|e| {
            Error::Config(format!(
                "LEITSTAND_SPOOL_DIR/spool_dir {} cannot be used: {e}",
                path.display()
            ))
        })?;
        Ok(spool)
    }

    fn queue(&self) -> PathBuf {
        self.path.join("queue")
    }

    fn tmp(&self) -> PathBuf {
        self.path.join("tmp")
    }

    fn rejected(&self) -> PathBuf {
        self.path.join("rejected")
    }

    /// Keep one batch durably (fsynced) at the end of the queue. [`Error::SpoolFull`] if it
    /// does not fit; [`Error::Spool`] if the disk fails.
    pub fn append(
        &self,
        domain: &str,
        key: &str,
        content_type: &str,
        events: usize,
        body: &[u8],
    ) -> Result<(), Error> {
        let header = Header {
            domain: domain.to_owned(),
            key: key.to_owned(),
            content_type: content_type.to_owned(),
            events,
        };
        let mut data = serde_json::to_vec(&header).expect("a header serializes");
        data.push(b'\n');
        data.extend_from_slice(body);
        let name = self.next_name();
        let mut full = None;
        self.with_size(|size| {
            let needed = data.len() as u64;
            if *size + needed > self.max_bytes {
                full = Some(*size);
                return Ok(());
            }
            let temporary = self.tmp().join(&name);
            let mut file = File::create(&temporary)?;
            file.write_all(&data)?;
            file.sync_all()?;
            fs::rename(&temporary, self.queue().join(&name))?;
            fsync_dir(&self.queue())?;
            *size += needed;
            Ok(())
        })
        .map_err(|e| self.io_error("cannot write to the spool", e))?;
        match full {
            Some(queued) => Err(Error::SpoolFull {
                spool: self.path.clone(),
                queued_bytes: queued,
                batch_bytes: data.len() as u64,
                max_bytes: self.max_bytes,
                events,
            }),
            None => Ok(()),
        }
    }

    /// `<ns>-<pid>-<seq>.batch`, like the Python client: sorts in the order written.
    fn next_name(&self) -> String {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let mut last = self.last_name.lock().unwrap_or_else(|e| e.into_inner());
        last.0 = now.max(last.0 + 1);
        last.1 = SEQ.fetch_add(1, Ordering::Relaxed) + 1;
        format!(
            "{:020}-{:010}-{:010}{SUFFIX}",
            last.0,
            std::process::id(),
            last.1
        )
    }

    /// Is anything queued?
    pub fn pending(&self) -> Result<bool, Error> {
        Ok(!self.names()?.is_empty())
    }

    /// The queued entries, oldest first.
    pub fn names(&self) -> Result<Vec<String>, Error> {
        let mut names = Vec::new();
        let listing = fs::read_dir(self.queue())
            .map_err(|e| self.io_error("cannot list the spool's queue/", e))?;
        for entry in listing {
            let entry = entry.map_err(|e| self.io_error("cannot list the spool's queue/", e))?;
            if let Some(name) = entry.file_name().to_str() {
                if name.ends_with(SUFFIX) {
                    names.push(name.to_owned());
                }
            }
        }
        names.sort();
        Ok(names)
    }

    /// The entry; `Ok(None)` if another drain took it meanwhile; `Err(reason)` if it cannot be
    /// parsed (the caller moves it aside).
    pub fn read(&self, name: &str) -> Result<Option<Entry>, String> {
        let data = match fs::read(self.queue().join(name)) {
            Ok(data) => data,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot be read: {e}")),
        };
        let split = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
        let header: Header = serde_json::from_slice(&data[..split])
            .map_err(|e| format!("has no valid header line: {e}"))?;
        let body = data.get(split + 1..).unwrap_or_default().to_vec();
        Ok(Some(Entry {
            name: name.to_owned(),
            domain: header.domain,
            key: header.key,
            content_type: header.content_type,
            events: header.events,
            body,
            size: data.len() as u64,
        }))
    }

    /// Forget an entry the server has stored.
    pub fn remove(&self, name: &str, entry_size: u64) -> Result<(), Error> {
        self.with_size(|size| {
            match fs::remove_file(self.queue().join(name)) {
                Ok(()) => *size = size.saturating_sub(entry_size),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            Ok(())
        })
        .map_err(|e| self.io_error("cannot remove a sent entry", e))
    }

    /// Move an entry the server refused to rejected/ (kept for a person to look at).
    pub fn reject(&self, name: &str) -> Result<(), Error> {
        self.with_size(|size| {
            let from = self.queue().join(name);
            let length = fs::metadata(&from).map_or(0, |m| m.len());
            fs::rename(&from, self.rejected().join(name))?;
            fsync_dir(&self.rejected())?;
            *size = size.saturating_sub(length);
            Ok(())
        })
        .map_err(|e| self.io_error("cannot move an entry to rejected/", e))
    }

    /// The drain lock (one drainer per spool across processes and clients), held while the
    /// returned file is open; `None` without `wait` when another drain holds it.
    pub fn drain_lock(&self, wait: bool) -> Result<Option<File>, Error> {
        let file = open_rw(&self.path.join("drain.lock"))
            .map_err(|e| self.io_error("cannot open drain.lock", e))?;
        if wait {
            file.lock()
                .map_err(|e| self.io_error("cannot lock drain.lock", e))?;
            return Ok(Some(file));
        }
        match file.try_lock() {
            Ok(()) => Ok(Some(file)),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(e)) => Err(self.io_error("cannot lock drain.lock", e)),
        }
    }

    /// Note the last failure for `leitstand spool status` (best effort: the failure itself is
    /// what the caller reports).
    pub fn record_error(&self, error: &str, entry: Option<&str>) {
        let record = serde_json::json!({
            "time": humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            "error": error,
            "entry": entry,
        });
        let temporary = self.tmp().join(format!(
            "last-error-{}-{:?}.json",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::write(&temporary, record.to_string())
            .and_then(|()| fs::rename(&temporary, self.path.join("last-error.json")));
    }

    /// Run `change` on the queue's byte count, locked against the other processes; the
    /// count is recounted from queue/ when the file holds no number.
    fn with_size(&self, change: impl FnOnce(&mut u64) -> io::Result<()>) -> io::Result<()> {
        let mut file = open_rw(&self.path.join("bytes"))?;
        file.lock()?;
        let mut text = String::new();
        file.read_to_string(&mut text)?;
        let stored = text.trim().parse::<u64>().ok();
        let mut size = match stored {
            Some(size) => size,
            None => self.queued_bytes()?,
        };
        let result = change(&mut size);
        if stored != Some(size) {
            file.seek(SeekFrom::Start(0))?;
            file.set_len(0)?;
            file.write_all(size.to_string().as_bytes())?;
        }
        result // the lock goes with the file
    }

    fn queued_bytes(&self) -> io::Result<u64> {
        let mut total = 0;
        for entry in fs::read_dir(self.queue())? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().ends_with(SUFFIX) {
                total += entry.metadata().map_or(0, |m| m.len());
            }
        }
        Ok(total)
    }

    fn io_error(&self, what: &str, source: io::Error) -> Error {
        Error::Spool {
            message: format!("{what} ({})", self.path.display()),
            source,
        }
    }
}

fn open_rw(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
}

fn fsync_dir(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_file(dir: &Path) -> String {
        fs::read_to_string(dir.join("bytes")).unwrap()
    }

    #[test]
    fn entries_are_written_in_the_python_clients_format() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        for sub in ["queue", "tmp", "rejected"] {
            assert!(dir.path().join(sub).is_dir(), "{sub}/");
        }
        let body = b"{\"n\":1}\n{\"n\":2}\n";
        spool
            .append("aussen", "key-1", "application/x-ndjson", 2, body)
            .unwrap();
        spool
            .append("innen", "key-2", "application/x-ndjson", 1, b"{}\n")
            .unwrap();

        let names = spool.names().unwrap();
        assert_eq!(names.len(), 2);
        for name in &names {
            let parts: Vec<&str> = name.trim_end_matches(".batch").split('-').collect();
            let widths: Vec<usize> = parts.iter().map(|p| p.len()).collect();
            assert_eq!(widths, [20, 10, 10], "{name}");
            assert!(parts.iter().all(|p| p.bytes().all(|b| b.is_ascii_digit())));
        }
        let data = fs::read(dir.path().join("queue").join(&names[0])).unwrap();
        let header = br#"{"domain":"aussen","key":"key-1","content_type":"application/x-ndjson","events":2}"#;
        assert_eq!(data, [&header[..], b"\n", body].concat());

        let entry = spool.read(&names[0]).unwrap().unwrap();
        assert_eq!(
            (entry.domain.as_str(), entry.key.as_str(), entry.events),
            ("aussen", "key-1", 2)
        );
        assert_eq!(entry.body, body);
        let total: u64 = names
            .iter()
            .map(|n| spool.read(n).unwrap().unwrap().size)
            .sum();
        assert_eq!(bytes_file(dir.path()), total.to_string());

        spool.remove(&entry.name, entry.size).unwrap();
        spool.reject(&names[1]).unwrap();
        assert!(spool.names().unwrap().is_empty());
        assert!(dir.path().join("rejected").join(&names[1]).exists());
        assert_eq!(bytes_file(dir.path()), "0");
        assert_eq!(spool.read(&names[0]).unwrap().map(|e| e.name), None);
    }

    #[test]
    fn a_full_spool_writes_nothing_and_a_broken_entry_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 100).unwrap();
        let err = spool
            .append("aussen", "k", "application/x-ndjson", 1, &[b'x'; 100])
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::SpoolFull {
                    queued_bytes: 0,
                    max_bytes: 100,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(spool.names().unwrap().is_empty());
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);

        fs::write(dir.path().join("queue/1-1-1.batch"), "not json\n{}\n").unwrap();
        assert!(spool.read("1-1-1.batch").is_err());
        // A counter file without a number is recounted from queue/.
        fs::write(dir.path().join("bytes"), "").unwrap();
        spool
            .append("aussen", "k", "application/x-ndjson", 1, b"{}\n")
            .unwrap();
        let queued: u64 = spool
            .names()
            .unwrap()
            .iter()
            .map(|n| {
                fs::metadata(dir.path().join("queue").join(n))
                    .unwrap()
                    .len()
            })
            .sum();
        assert_eq!(bytes_file(dir.path()), queued.to_string());
    }

    #[test]
    fn the_drain_lock_excludes_a_second_drainer() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        let held = spool.drain_lock(false).unwrap();
        assert!(held.is_some());
        assert!(spool.drain_lock(false).unwrap().is_none());
        drop(held);
        assert!(spool.drain_lock(false).unwrap().is_some());
    }
}
