//! The spool (feature `spool`) against the real leitstand server: what cannot be delivered
//! while the server is down is kept on disk and stored exactly once later, in order — by
//! `flush_spool`, by the next call and by the background drain; a full spool raises; a crash
//! between a send and the removal of its entry stores nothing twice; two processes share one
//! spool directory; the Python client's `leitstand spool flush` sends what this crate spooled,
//! and this crate sends what the Python client spooled (one on-disk format).
#![cfg(feature = "spool")]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::leitstand::{assert_stored, free_port, repository_python, Leitstand, TOKEN};
use common::Flavor;
use leitstand_producer::{Builder, Error, Flushed, Receipt};
use serde_json::{json, Value};

for_both_clients!(
    spools_while_the_server_is_down_and_flush_stores_each_event_once,
    the_background_drain_and_the_next_call_keep_the_order,
    a_full_spool_raises_and_drops_nothing,
);

const DEADLINE: Duration = Duration::from_secs(60);

/// Either client, with a runtime for the async one that keeps running between calls (so its
/// background drain task runs, as in a long-lived producer).
enum Producer {
    #[cfg(feature = "blocking")]
    Blocking(leitstand_producer::Client),
    #[cfg(feature = "async")]
    Async(leitstand_producer::AsyncClient, tokio::runtime::Runtime),
}

fn settings<C>(builder: Builder<C>, port: u16, spool: &Path) -> Builder<C> {
    builder
        .url(format!("http://127.0.0.1:{port}"))
        .token(TOKEN)
        .retries(1)
        .backoff(Duration::from_millis(5))
        .max_backoff(Duration::from_millis(200))
        .timeout(Duration::from_secs(10))
        .gzip(true) // spooled entries are stored uncompressed (they have no encoding)
        .spool_dir(spool)
}

impl Producer {
    fn new(flavor: Flavor, port: u16, spool: &Path, max_events: usize, max_bytes: u64) -> Self {
        match flavor {
            #[cfg(feature = "blocking")]
            Flavor::Blocking => Producer::Blocking(
                settings(leitstand_producer::Client::builder(), port, spool)
                    .max_events(max_events)
                    .spool_max_bytes(max_bytes)
                    .build()
                    .unwrap(),
            ),
            #[cfg(feature = "async")]
            Flavor::Async => {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build()
                    .unwrap();
                let client = settings(leitstand_producer::AsyncClient::builder(), port, spool)
                    .max_events(max_events)
                    .spool_max_bytes(max_bytes)
                    .build()
                    .unwrap();
                Producer::Async(client, runtime)
            }
            #[allow(unreachable_patterns)]
            _ => unreachable!("{flavor:?} is not built with these features"),
        }
    }

    fn send_batch(&self, domain: &str, events: &[Value]) -> Result<Receipt, Error> {
        match self {
            #[cfg(feature = "blocking")]
            Producer::Blocking(client) => client.send_batch(domain, events),
            #[cfg(feature = "async")]
            Producer::Async(client, runtime) => runtime.block_on(client.send_batch(domain, events)),
        }
    }

    fn flush(&self) -> Result<Flushed, Error> {
        match self {
            #[cfg(feature = "blocking")]
            Producer::Blocking(client) => client.flush_spool(),
            #[cfg(feature = "async")]
            Producer::Async(client, runtime) => runtime.block_on(client.flush_spool()),
        }
    }
}

fn events(tag: &str, range: std::ops::Range<usize>) -> Vec<Value> {
    range.map(|n| json!({"event": tag, "n": n})).collect()
}

fn queued(spool: &Path) -> Vec<PathBuf> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(spool.join("queue"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "batch"))
        .collect();
    names.sort();
    names
}

fn wait_until_stored(server: &Leitstand, domain: &str, count: usize) {
    let deadline = Instant::now() + DEADLINE;
    while server.line_count(domain) < count {
        assert!(
            Instant::now() < deadline,
            "{domain}: {} of {count} stored within {DEADLINE:?}",
            server.line_count(domain)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn spools_while_the_server_is_down_and_flush_stores_each_event_once(flavor: Flavor) {
    let spool = tempfile::tempdir().unwrap();
    let port = free_port();
    let producer = Producer::new(flavor, port, spool.path(), 1000, 100 << 20);
    let batch = events("tick", 0..10_000);

    let receipt = producer.send_batch("aussen", &batch).unwrap();
    assert_eq!(
        (receipt.status.as_str(), receipt.accepted, receipt.spooled),
        ("spooled", 0, 10_000)
    );
    assert_eq!(receipt.requests, 0);
    assert_eq!(queued(spool.path()).len(), 10, "one entry per request");
    let last_error = std::fs::read_to_string(spool.path().join("last-error.json")).unwrap();
    assert!(
        last_error.contains("could not reach leitstand"),
        "{last_error}"
    );

    let server = Leitstand::start_on(port);
    let flushed = producer.flush().unwrap();
    // The background drain may have sent some entries first; together they sent all.
    assert!(
        flushed.events <= 10_000 && flushed.rejected == 0,
        "{flushed:?}"
    );
    assert!(queued(spool.path()).is_empty());
    assert_stored(&server, "aussen", &batch);

    // With the spool empty, the next send goes straight to the server.
    let more = events("tock", 0..3);
    let receipt = producer.send_batch("aussen", &more).unwrap();
    assert_eq!((receipt.accepted, receipt.spooled), (3, 0));
    let all: Vec<Value> = batch.into_iter().chain(more).collect();
    assert_stored(&server, "aussen", &all);
}

fn the_background_drain_and_the_next_call_keep_the_order(flavor: Flavor) {
    let spool = tempfile::tempdir().unwrap();
    let port = free_port();
    let producer = Producer::new(flavor, port, spool.path(), 100, 100 << 20);
    let first = events("first", 0..300);
    assert_eq!(producer.send_batch("garten", &first).unwrap().spooled, 300);

    // Nothing is called now: the background drain sends the spool once the server is up.
    let server = Leitstand::start_on(port);
    wait_until_stored(&server, "garten", 300);
    assert_stored(&server, "garten", &first);
    // The last entry leaves the queue only after its answer: wait for that before the server
    // goes, or the entry would be resent to the next server (a new data dir, which cannot
    // know its key).
    let deadline = Instant::now() + DEADLINE;
    while !queued(spool.path()).is_empty() {
        assert!(Instant::now() < deadline, "the spool was not emptied");
        std::thread::sleep(Duration::from_millis(20));
    }

    // While entries wait, a new batch queues behind them; the next call (or the background
    // drain, whichever holds the lock) sends them first.
    drop(server);
    let second = events("second", 0..200);
    assert_eq!(producer.send_batch("garten", &second).unwrap().spooled, 200);
    let server = Leitstand::start_on(port);
    let third = events("third", 0..50);
    let receipt = producer.send_batch("garten", &third).unwrap();
    assert_eq!(receipt.accepted + receipt.spooled, 50, "{receipt}");
    wait_until_stored(&server, "garten", 250);
    let expected: Vec<Value> = second.into_iter().chain(third).collect();
    assert_stored(&server, "garten", &expected); // a new server, a new data dir
}

fn a_full_spool_raises_and_drops_nothing(flavor: Flavor) {
    let spool = tempfile::tempdir().unwrap();
    let port = free_port();
    // Entries of 20 events are about 590 bytes: room for 4.
    let producer = Producer::new(flavor, port, spool.path(), 20, 2400);
    let batch = events("tick", 0..200);

    let err = producer.send_batch("aussen", &batch).unwrap_err();
    let Error::Incomplete {
        accepted: 0,
        spooled,
        source,
        ..
    } = &err
    else {
        panic!("expected Error::Incomplete, got {err:?}");
    };
    assert_eq!(*spooled, 80, "{err}");
    assert!(
        matches!(
            **source,
            Error::SpoolFull {
                events: 20,
                max_bytes: 2400,
                ..
            }
        ),
        "{source:?}"
    );
    assert!(
        err.to_string().contains("LEITSTAND_SPOOL_MAX_BYTES"),
        "{err}"
    );
    assert_eq!(queued(spool.path()).len(), 4);

    // The spooled part is stored once; the rest is the caller's (the error said so).
    let server = Leitstand::start_on(port);
    producer.flush().unwrap();
    assert_stored(&server, "aussen", &batch[..80]);
}

#[cfg(feature = "blocking")]
#[test]
fn a_crash_between_send_and_remove_stores_nothing_twice() {
    let spool = tempfile::tempdir().unwrap();
    let port = free_port();
    let client = settings(leitstand_producer::Client::builder(), port, spool.path())
        .max_events(10)
        .build()
        .unwrap();
    let batch = events("tick", 0..50);
    assert_eq!(client.send_batch("aussen", &batch).unwrap().spooled, 50);

    // Keep the entries as they are before the drain: a producer killed after the server
    // stored an entry but before it was unlinked leaves exactly these files behind.
    let saved = spool.path().join("saved");
    std::fs::create_dir(&saved).unwrap();
    for path in queued(spool.path()) {
        std::fs::copy(&path, saved.join(path.file_name().unwrap())).unwrap();
    }
    let server = Leitstand::start_on(port);
    client.flush_spool().unwrap();
    assert_stored(&server, "aussen", &batch);

    for path in std::fs::read_dir(&saved).unwrap() {
        let path = path.unwrap().path();
        std::fs::copy(
            &path,
            spool.path().join("queue").join(path.file_name().unwrap()),
        )
        .unwrap();
    }
    client.flush_spool().unwrap();
    assert!(queued(spool.path()).is_empty());
    assert_stored(&server, "aussen", &batch); // each entry replayed by its key, none twice
}

/// Two producer processes (this test binary, running the ignored test below) spool into one
/// directory at the same time while the server is down; a flush stores every event once.
#[test]
fn two_processes_share_one_spool() {
    let spool = tempfile::tempdir().unwrap();
    let port = free_port();
    let outputs = [(); 2].map(|()| tempfile::NamedTempFile::new().unwrap());
    let mut children: Vec<_> = ["a", "b"]
        .iter()
        .zip(&outputs)
        .map(|(producer, output)| {
            let env = [
                ("LEITSTAND_URL", format!("http://127.0.0.1:{port}")),
                ("LEITSTAND_TOKEN", TOKEN.to_owned()),
                ("LEITSTAND_RETRIES", "0".to_owned()),
                ("LEITSTAND_MAX_EVENTS", "50".to_owned()),
                ("LEITSTAND_SPOOL_DIR", spool.path().display().to_string()),
                ("LEITSTAND_TEST_PRODUCER", producer.to_string()),
            ];
            child_test("child_spools_500_events", &env, output)
        })
        .collect();
    for (child, output) in children.iter_mut().zip(&outputs) {
        let status = wait_for(child);
        let text = std::fs::read_to_string(output.path()).unwrap();
        assert!(status.success(), "producer failed: {text}");
    }
    let entries = queued(spool.path());
    assert_eq!(entries.len(), 20, "10 entries from each producer");
    let sizes: u64 = entries.iter().map(|p| p.metadata().unwrap().len()).sum();
    let counted = std::fs::read_to_string(spool.path().join("bytes")).unwrap();
    assert_eq!(counted.trim(), sizes.to_string(), "the shared byte count");

    let server = Leitstand::start_on(port);
    let flushed = Producer::new(any_flavor(), port, spool.path(), 1000, 100 << 20)
        .flush()
        .unwrap();
    // (Its background drain may have sent some entries first; together they sent all.)
    assert!(
        flushed.batches <= 20 && flushed.rejected == 0,
        "{flushed:?}"
    );
    let stored = server.stored("shared");
    assert_eq!(stored.len(), 1000);
    for producer in ["a", "b"] {
        let numbers: Vec<u64> = stored
            .iter()
            .filter(|event| event["producer"] == producer)
            .map(|event| event["n"].as_u64().unwrap())
            .collect();
        assert_eq!(
            numbers,
            (0..500).collect::<Vec<u64>>(),
            "{producer}: once, in order"
        );
    }
}

fn any_flavor() -> Flavor {
    if cfg!(feature = "blocking") {
        Flavor::Blocking
    } else {
        Flavor::Async
    }
}

#[test]
#[ignore = "run by two_processes_share_one_spool in child processes"]
fn child_spools_500_events() {
    let producer = std::env::var("LEITSTAND_TEST_PRODUCER")
        .expect("only meaningful as a child of two_processes_share_one_spool");
    let batch: Vec<Value> = (0..500)
        .map(|n| json!({"producer": producer, "n": n}))
        .collect();
    let receipt = child_send(&batch);
    assert_eq!(receipt.spooled, 500, "{receipt}");
}

/// `from_env()` (so `LEITSTAND_SPOOL_DIR` is read as a producer would), then one batch.
fn child_send(batch: &[Value]) -> Receipt {
    #[cfg(feature = "blocking")]
    let receipt = leitstand_producer::Client::from_env()
        .unwrap()
        .send_batch("shared", batch);
    #[cfg(not(feature = "blocking"))]
    let receipt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            leitstand_producer::AsyncClient::from_env()
                .unwrap()
                .send_batch("shared", batch)
                .await
        });
    receipt.unwrap()
}

/// `python -m leitstand.cli ARGS` from the repository (the Python client and its CLI), with
/// only the given LEITSTAND_* variables; its success and output.
fn leitstand_cli(args: &[&str], env: &[(&str, String)]) -> (bool, String) {
    let (root, python) = repository_python();
    let mut command = Command::new(python);
    command
        .args(["-m", "leitstand.cli"])
        .args(args)
        .current_dir(root);
    for (name, _) in std::env::vars() {
        if name.starts_with("LEITSTAND_") {
            command.env_remove(name);
        }
    }
    command.envs(env.iter().map(|(name, value)| (name, value)));
    let output = tempfile::NamedTempFile::new().unwrap();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(output.reopen().unwrap())
        .stderr(output.reopen().unwrap())
        .spawn()
        .expect("run the leitstand CLI");
    let deadline = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill(); // by PID
            let _ = child.wait();
            panic!("leitstand {args:?} not done within {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (
        status.success(),
        std::fs::read_to_string(output.path()).unwrap(),
    )
}

#[test]
fn leitstand_spool_flush_sends_what_this_crate_spooled() {
    let spool = tempfile::tempdir().unwrap();
    let port = free_port();
    let producer = Producer::new(any_flavor(), port, spool.path(), 100, 100 << 20);
    let batch = events("rust", 0..250);
    assert_eq!(producer.send_batch("aussen", &batch).unwrap().spooled, 250);
    drop(producer); // its background drain stops; the Python CLI does the work

    let dir = spool.path().to_str().unwrap();
    let (ok, status) = leitstand_cli(&["spool", "status", "--spool", dir], &[]);
    assert!(ok, "{status}");
    assert!(status.contains("entries:  3"), "{status}");
    assert!(status.contains("could not reach leitstand"), "{status}");

    let server = Leitstand::start_on(port);
    let env = [
        ("LEITSTAND_URL", server.url()),
        ("LEITSTAND_TOKEN", TOKEN.to_owned()),
    ];
    let (ok, output) = leitstand_cli(&["spool", "flush", "--spool", dir], &env);
    assert!(ok, "{output}");
    assert!(queued(spool.path()).is_empty(), "{output}");
    assert_stored(&server, "aussen", &batch);
}

#[test]
fn this_crate_flushes_what_the_python_client_spooled() {
    let spool = tempfile::tempdir().unwrap();
    let port = free_port();
    let dir = spool.path().to_str().unwrap().to_owned();
    let batch = events("python", 0..40);
    let array = Value::Array(batch.clone()).to_string();
    let env = [
        ("LEITSTAND_URL", format!("http://127.0.0.1:{port}")),
        ("LEITSTAND_TOKEN", TOKEN.to_owned()),
        ("LEITSTAND_RETRIES", "0".to_owned()),
        ("LEITSTAND_SPOOL_DIR", dir),
    ];
    let (ok, output) = leitstand_cli(&["send", "garten", &array, "--batch-events", "10"], &env);
    assert!(ok, "{output}");
    assert_eq!(queued(spool.path()).len(), 4, "{output}");

    let server = Leitstand::start_on(port);
    let flushed = Producer::new(any_flavor(), port, spool.path(), 100, 100 << 20)
        .flush()
        .unwrap();
    assert!(flushed.events <= 40 && flushed.rejected == 0, "{flushed:?}");
    assert!(queued(spool.path()).is_empty());
    assert_stored(&server, "garten", &batch);
}

/// A producer killed with SIGKILL in the middle of a drain, then run again: every event is
/// stored exactly once (the entry whose answer was lost is resent under its key).
#[test]
fn a_drain_killed_midway_and_run_again_stores_each_event_once() {
    let spool = tempfile::tempdir().unwrap();
    let port = free_port();
    let producer = Producer::new(any_flavor(), port, spool.path(), 25, 100 << 20);
    let batch = events("tick", 0..10_000);
    assert_eq!(
        producer.send_batch("aussen", &batch).unwrap().spooled,
        10_000
    );
    drop(producer);
    assert_eq!(queued(spool.path()).len(), 400);

    let server = Leitstand::start_on(port);
    let output = tempfile::NamedTempFile::new().unwrap();
    let env = [
        ("LEITSTAND_TEST_PORT", port.to_string()),
        ("LEITSTAND_SPOOL_DIR", spool.path().display().to_string()),
    ];
    let mut child = child_test("child_flushes_the_spool", &env, &output);
    let deadline = Instant::now() + DEADLINE;
    while server.line_count("aussen") == 0 {
        assert!(Instant::now() < deadline, "the drain stored nothing");
        if child.try_wait().unwrap().is_some() {
            panic!(
                "the drain ended early: {}",
                std::fs::read_to_string(output.path()).unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL, by PID
    child.wait().unwrap();
    let left = queued(spool.path()).len();
    assert!(
        left > 0,
        "killed after the drain was done: not a test of a crash"
    );

    let mut again = child_test("child_flushes_the_spool", &env, &output);
    let status = wait_for(&mut again);
    let text = std::fs::read_to_string(output.path()).unwrap();
    assert!(status.success(), "{text}");
    assert!(queued(spool.path()).is_empty());
    assert_stored(&server, "aussen", &batch);
}

#[test]
#[ignore = "run by a_drain_killed_midway_and_run_again_stores_each_event_once"]
fn child_flushes_the_spool() {
    let port: u16 = std::env::var("LEITSTAND_TEST_PORT")
        .expect("only meaningful as a child of the kill -9 test")
        .parse()
        .unwrap();
    let spool = PathBuf::from(std::env::var("LEITSTAND_SPOOL_DIR").unwrap());
    Producer::new(any_flavor(), port, &spool, 25, 100 << 20)
        .flush()
        .unwrap();
}

fn child_test(
    name: &str,
    env: &[(&str, String)],
    output: &tempfile::NamedTempFile,
) -> std::process::Child {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command.args(["--exact", name, "--ignored", "--nocapture"]);
    for (name, _) in std::env::vars() {
        if name.starts_with("LEITSTAND_") {
            command.env_remove(name);
        }
    }
    command
        .envs(env.iter().map(|(name, value)| (name, value)))
        .stdin(Stdio::null())
        .stdout(output.reopen().unwrap())
        .stderr(output.reopen().unwrap())
        .spawn()
        .unwrap()
}

fn wait_for(child: &mut std::process::Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill(); // by PID
            let _ = child.wait();
            panic!("child test not done within {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
