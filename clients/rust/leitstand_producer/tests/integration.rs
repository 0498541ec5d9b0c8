//! Both clients against the real leitstand server: the Python service from this repository,
//! started as the README says (`uvicorn app:app`) on a free loopback port, stopped by its PID.
//! Needs the repository's venv (`make venv`; `make test` creates it first).

mod common;

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{send_batch, send_one, Flavor, Opts};
use leitstand_producer::Error;
use serde_json::{json, Value};

for_both_clients!(
    stores_single_events_and_10000_event_batches,
    maps_the_real_servers_errors,
    lost_answers_are_retried_without_duplicates,
);

const TOKEN: &str = "integration-token";
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A running `uvicorn app:app` with its own data directory; killed by PID on drop.
struct Leitstand {
    child: Child,
    port: u16,
    data_dir: tempfile::TempDir,
    log: PathBuf,
}

impl Leitstand {
    fn start() -> Leitstand {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../..");
        let root = root.canonicalize().expect("repository root");
        let python = root.join(".venv/bin/python");
        assert!(
            python.exists(),
            "{} not found: this test runs the real leitstand server from the repository's \
             venv. Create it with `make venv` in {} (`make test` does this before the Rust \
             tests).",
            python.display(),
            root.display()
        );
        let data_dir = tempfile::tempdir().expect("temp dir");
        let log = data_dir.path().join("server.log");
        let log_file = File::create(&log).expect("log file");
        let port = free_port();
        let mut command = Command::new(&python);
        command
            .args(["-m", "uvicorn", "app:app", "--host", "127.0.0.1"])
            .args(["--port", &port.to_string(), "--no-access-log"])
            .current_dir(&root);
        for (name, _) in std::env::vars() {
            if name.starts_with("LEITSTAND_") || name == "LOG_LEVEL" {
                command.env_remove(name);
            }
        }
        let child = command
            .env("LEITSTAND_TOKEN", TOKEN)
            .env("LEITSTAND_DATA_DIR", data_dir.path().join("data"))
            .env("LEITSTAND_RATE_LIMIT", "1000000/second")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log file"))
            .stderr(log_file)
            .spawn()
            .expect("start uvicorn");
        let mut server = Leitstand {
            child,
            port,
            data_dir,
            log,
        };
        server.wait_ready();
        server
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("poll server") {
                panic!("leitstand exited with {status}: {}", self.log());
            }
            if health_ok(self.port) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "leitstand not ready within {READY_TIMEOUT:?}: {}",
            self.log()
        );
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The domain's JSONL file, one parsed value per line (each line checked to end in `\n`).
    fn stored(&self, domain: &str) -> Vec<Value> {
        let path = self
            .data_dir
            .path()
            .join("data")
            .join(format!("{domain}.jsonl"));
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(text.is_empty() || text.ends_with('\n'), "whole lines only");
        text.lines()
            .map(|line| serde_json::from_str(line).expect("each line one JSON object"))
            .collect()
    }
}

impl Drop for Leitstand {
    fn drop(&mut self) {
        let _ = self.child.kill(); // by PID (SIGKILL); the data dir is a temp dir
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    listener.local_addr().unwrap().port()
}

fn health_ok(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200")
}

/// What the server stores for an event: the object as sent, with `domain` set.
fn with_domain(event: &Value, domain: &str) -> Value {
    let mut stored = event.clone();
    stored["domain"] = json!(domain);
    stored
}

fn assert_stored(server: &Leitstand, domain: &str, events: &[Value]) {
    let lines = server.stored(domain);
    assert_eq!(lines.len(), events.len(), "{domain}: line count");
    for (n, (line, event)) in lines.iter().zip(events).enumerate() {
        assert_eq!(
            line,
            &with_domain(event, domain),
            "{domain}: line {}",
            n + 1
        );
    }
}

fn stores_single_events_and_10000_event_batches(flavor: Flavor) {
    let server = Leitstand::start();
    let url = server.url();
    let opts = Opts {
        token: TOKEN.to_owned(),
        ..Opts::default()
    };
    let gzip = Opts {
        gzip: true,
        ..opts.clone()
    };

    let singles = [
        json!({"event": "door", "status": "open", "text": "grüße \"x\"\n", "n": 1}),
        json!({"event": "door", "status": "closed", "nested": {"a": [1, 2.5, null]}}),
    ];
    let receipt = send_one(flavor, &url, &opts, " Aussen ", &singles[0]).unwrap();
    assert_eq!((receipt.status.as_str(), receipt.accepted), ("accepted", 1));
    assert_eq!(receipt.domain, "aussen", "normalised by the server");
    send_one(flavor, &url, &gzip, "aussen", &singles[1]).unwrap();
    assert_stored(&server, "aussen", &singles);

    // Exactly the server's event limit: one request.
    let batch: Vec<Value> = (0..10_000)
        .map(|n| json!({"event": "tick", "n": n, "flavor": format!("{flavor:?}")}))
        .collect();
    let receipt = send_batch(flavor, &url, &opts, "batch.test", &batch).unwrap();
    assert_eq!((receipt.accepted, receipt.requests), (10_000, 1));
    assert_stored(&server, "batch.test", &batch);

    // The same batch split by a 64 KiB body limit, gzip-compressed.
    let split = Opts {
        max_body_bytes: 64 * 1024,
        ..gzip.clone()
    };
    let receipt = send_batch(flavor, &url, &split, "split.test", &batch).unwrap();
    assert_eq!(receipt.accepted, 10_000);
    assert!(receipt.requests >= 6, "{} requests", receipt.requests);
    assert_stored(&server, "split.test", &batch);
}

fn maps_the_real_servers_errors(flavor: Flavor) {
    let server = Leitstand::start();
    let url = server.url();
    let opts = Opts {
        token: TOKEN.to_owned(),
        ..Opts::default()
    };
    let event = json!({"event": "x"});

    let wrong = Opts {
        token: "wrong".to_owned(),
        ..opts.clone()
    };
    let err = send_one(flavor, &url, &wrong, "aussen", &event).unwrap_err();
    assert!(
        matches!(&err, Error::Auth { status: 401, detail } if detail.contains("X-Auth")),
        "{err:?}"
    );

    let err = send_one(flavor, &url, &opts, "-bad-", &event).unwrap_err();
    assert!(
        matches!(err, Error::Rejected { status: 400, .. }),
        "{err:?}"
    );

    let other = json!({"event": "x", "domain": "innen"});
    let err = send_one(flavor, &url, &opts, "aussen", &other).unwrap_err();
    assert!(
        matches!(err, Error::Rejected { status: 400, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("domain mismatch"), "{err}");

    // The client's limits above the server's: the server answers 413.
    let big = Opts {
        max_body_bytes: 4 << 20,
        max_events: 100_000,
        ..opts.clone()
    };
    let events: Vec<Value> = (0..20_000)
        .map(|n| json!({"event": "tick", "n": n}))
        .collect();
    let err = send_batch(flavor, &url, &big, "aussen", &events).unwrap_err();
    assert!(matches!(err, Error::TooLarge { .. }), "{err:?}");
    assert!(err.to_string().contains("LEITSTAND_MAX_EVENTS"), "{err}");

    assert!(
        !server.data_dir.path().join("data/aussen.jsonl").exists()
            || server.stored("aussen").is_empty(),
        "nothing stored by rejected requests"
    );
}

/// Forwards each request to leitstand, but for the first `lose` requests drops the answer and
/// closes the connection: the server stored the events, the client never heard back.
struct LossyProxy {
    port: u16,
}

impl LossyProxy {
    fn start(upstream: u16, lose: usize) -> LossyProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(AtomicUsize::new(0));
        // The accept thread ends with the test process; it only ever talks to loopback.
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let seen = seen.clone();
                std::thread::spawn(move || {
                    let _ = relay(client, upstream, seen.fetch_add(1, Ordering::SeqCst) < lose);
                });
            }
        });
        LossyProxy { port }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

fn relay(client: TcpStream, upstream: u16, lose_answer: bool) -> std::io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(30)))?;
    let request = read_message(&mut BufReader::new(client.try_clone()?))?;
    let mut server = TcpStream::connect(("127.0.0.1", upstream))?;
    server.set_read_timeout(Some(Duration::from_secs(30)))?;
    server.write_all(&request)?;
    let answer = read_message(&mut BufReader::new(server))?;
    if !lose_answer {
        let mut client = client;
        client.write_all(&answer)?;
    }
    Ok(()) // dropping `client` closes the connection
}

/// One HTTP/1.1 message (head and a Content-Length body), as raw bytes.
fn read_message(reader: &mut BufReader<TcpStream>) -> std::io::Result<Vec<u8>> {
    let mut raw = Vec::new();
    let mut length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.trim().eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        raw.extend_from_slice(line.as_bytes());
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    raw.extend_from_slice(&body);
    Ok(raw)
}

fn lost_answers_are_retried_without_duplicates(flavor: Flavor) {
    let server = Leitstand::start();
    let opts = Opts {
        token: TOKEN.to_owned(),
        ..Opts::default()
    };

    let proxy = LossyProxy::start(server.port, 2);
    let event = json!({"event": "door", "status": "open"});
    let receipt = send_one(flavor, &proxy.url(), &opts, "aussen", &event).unwrap();
    assert!(receipt.replayed, "the third attempt got the stored answer");
    assert_eq!(receipt.accepted, 1);
    assert_stored(&server, "aussen", &[event]);

    // A batch in three requests; the answers to the first two requests are lost.
    let proxy = LossyProxy::start(server.port, 2);
    let batch: Vec<Value> = (0..300).map(|n| json!({"event": "tick", "n": n})).collect();
    let small = Opts {
        max_events: 100,
        ..opts.clone()
    };
    let receipt = send_batch(flavor, &proxy.url(), &small, "batch.test", &batch).unwrap();
    assert_eq!((receipt.accepted, receipt.requests), (300, 3));
    assert!(receipt.replayed);
    assert_stored(&server, "batch.test", &batch);
}
