//! Both clients against the real leitstand server (see `common::leitstand`).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::leitstand::{assert_stored, Leitstand, TOKEN};
use common::{send_batch, send_one, Flavor, Opts};
use leitstand_producer::Error;
use serde_json::{json, Value};

for_both_clients!(
    stores_single_events_and_10000_event_batches,
    maps_the_real_servers_errors,
    lost_answers_are_retried_without_duplicates,
    schema_rejections_name_the_invalid_events,
);

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
        !server.has_file("aussen") || server.stored("aussen").is_empty(),
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

/// `LEITSTAND_SCHEMA_DIR` on the real server: a 422 carries the errors, at their positions in
/// the whole batch, and the server stores nothing of the rejected request.
fn schema_rejections_name_the_invalid_events(flavor: Flavor) {
    let schemas = tempfile::tempdir().expect("temp dir");
    let schema = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "required": ["temperature"],
        "properties": {"temperature": {"type": "number"}},
    });
    std::fs::write(
        schemas.path().join("garten.schema.json"),
        schema.to_string(),
    )
    .expect("write schema");
    let server = Leitstand::start_with_env(&[("LEITSTAND_SCHEMA_DIR", schemas.path())]);
    let opts = Opts {
        token: TOKEN.to_owned(),
        max_events: 3,
        ..Opts::default()
    };
    let valid: Vec<Value> = (0..3).map(|n| json!({"temperature": n})).collect();
    let mut events = valid.clone();
    events.push(json!({"temperature": "warm"}));
    events.push(json!({"sensor": "balkon"}));

    let err = send_one(flavor, &server.url(), &opts, "garten", &events[3]).unwrap_err();
    match &err {
        Error::Invalid {
            errors,
            error_count: 1,
            ..
        } => {
            assert_eq!(errors.len(), 1);
            assert_eq!(
                (errors[0].index, errors[0].path.as_str()),
                (0, "/temperature")
            );
            assert!(errors[0].message.contains("'warm'"), "{}", errors[0]);
        }
        other => panic!("expected Error::Invalid, got {other:?}"),
    }

    let err = send_batch(flavor, &server.url(), &opts, "garten", &events).unwrap_err();
    let Error::Incomplete {
        accepted: 3,
        source,
        ..
    } = &err
    else {
        panic!("expected Error::Incomplete, got {err:?}");
    };
    match &**source {
        Error::Invalid {
            errors,
            error_count: 2,
            ..
        } => {
            let at: Vec<(u64, &str)> = errors.iter().map(|e| (e.index, e.path.as_str())).collect();
            assert_eq!(at, [(3, "/temperature"), (4, "")]);
        }
        other => panic!("expected Error::Invalid, got {other:?}"),
    }
    assert_stored(&server, "garten", &valid);
}
