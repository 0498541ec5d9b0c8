//! Both clients against a scripted HTTP server on loopback: the request they send, retries,
//! `Retry-After`, one idempotency key per request, batching and error mapping.

mod common;

use std::time::{Duration, SystemTime};

use common::{
    accepted, answer, detail, send_batch, send_one, with_header, Flavor, MockServer, Opts,
    Recorded, Reply,
};
use leitstand_producer::Error;
use serde_json::{json, Value};

for_both_clients!(
    sends_ndjson_with_token_domain_and_idempotency_key,
    retries_every_transient_failure_with_one_idempotency_key,
    gives_up_after_the_configured_retries,
    never_retries_other_4xx,
    honours_retry_after_in_seconds,
    honours_retry_after_as_http_date,
    fails_at_once_when_retry_after_is_too_long,
    retries_timeouts_and_dropped_connections,
    an_unreachable_server_is_a_transport_error,
    splits_batches_under_both_limits,
    gzip_bodies_decompress_to_the_events,
    a_failure_part_way_says_what_is_stored,
    schema_rejections_carry_the_errors_at_batch_positions,
    reports_replayed_answers,
    does_not_follow_redirects,
);

fn event(n: usize) -> Value {
    json!({"event": "test", "n": n, "text": "grüße \"quoted\"\n"})
}

fn keys(requests: &[Recorded]) -> Vec<String> {
    requests
        .iter()
        .map(|r| {
            r.header("idempotency-key")
                .expect("Idempotency-Key")
                .to_owned()
        })
        .collect()
}

/// All requests are the same request: one key, one body.
fn assert_same_request(requests: &[Recorded]) {
    let keys = keys(requests);
    assert!(
        keys.iter().all(|k| k == &keys[0]),
        "one key per send: {keys:?}"
    );
    assert!(requests.iter().all(|r| r.body == requests[0].body));
}

fn sends_ndjson_with_token_domain_and_idempotency_key(flavor: Flavor) {
    let server = MockServer::start(vec![accepted(1, "aussen"), accepted(1, "a b&c")]);
    let opts = Opts::default();
    let receipt = send_one(flavor, &server.url(), &opts, "aussen", &event(1)).unwrap();
    assert_eq!(
        (
            receipt.status.as_str(),
            receipt.accepted,
            receipt.domain.as_str()
        ),
        ("accepted", 1, "aussen")
    );
    assert_eq!((receipt.requests, receipt.replayed), (1, false));
    send_one(flavor, &server.url(), &opts, "a b&c", &event(2)).unwrap();

    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    let first = &requests[0];
    assert_eq!(first.method, "POST");
    assert_eq!(first.target, "/v1/ingest?domain=aussen");
    assert_eq!(first.header("x-auth"), Some("test-token"));
    assert_eq!(first.header("content-type"), Some("application/x-ndjson"));
    assert_eq!(first.header("content-encoding"), None);
    let key = first.header("idempotency-key").unwrap();
    assert_eq!(key.len(), 36, "a UUID: {key}");
    assert_eq!(first.events(), vec![event(1)]);
    assert_eq!(requests[1].target, "/v1/ingest?domain=a+b%26c");
    assert_ne!(keys(&requests)[0], keys(&requests)[1], "a new key per send");
}

fn retries_every_transient_failure_with_one_idempotency_key(flavor: Flavor) {
    let mut script: Vec<Reply> = [408, 429, 500, 502, 503, 504]
        .into_iter()
        .map(|status| detail(status, "transient"))
        .collect();
    script.push(Reply::Close);
    script.push(accepted(1, "aussen"));
    let server = MockServer::start(script);
    let opts = Opts {
        retries: 7,
        ..Opts::default()
    };
    let receipt = send_one(flavor, &server.url(), &opts, "aussen", &event(1)).unwrap();
    assert_eq!(receipt.accepted, 1);
    let requests = server.requests();
    assert_eq!(requests.len(), 8);
    assert_same_request(&requests);
}

fn gives_up_after_the_configured_retries(flavor: Flavor) {
    let server = MockServer::start(vec![detail(503, "lock timeout"); 3]);
    let opts = Opts {
        retries: 2,
        ..Opts::default()
    };
    let err = send_one(flavor, &server.url(), &opts, "aussen", &event(1)).unwrap_err();
    assert!(
        matches!(&err, Error::Server { status: 503, attempts: 3, detail } if detail == "lock timeout"),
        "{err:?}"
    );
    assert!(err.to_string().contains("after 3 attempt(s)"), "{err}");
    let requests = server.requests();
    assert_eq!(requests.len(), 3);
    assert_same_request(&requests);

    let server = MockServer::start(vec![
        with_header(
            detail(429, "rate limit exceeded"),
            "Retry-After",
            "0"
        );
        2
    ]);
    let opts = Opts {
        retries: 1,
        ..Opts::default()
    };
    let err = send_one(flavor, &server.url(), &opts, "aussen", &event(1)).unwrap_err();
    assert!(
        matches!(&err, Error::RateLimited { attempts: 2, retry_after: Some(w), detail }
            if w.is_zero() && detail == "rate limit exceeded"),
        "{err:?}"
    );
    assert_eq!(server.requests().len(), 2);
}

fn never_retries_other_4xx(flavor: Flavor) {
    type Check = fn(&Error) -> bool;
    let cases: [(u16, &str, Check); 9] = [
        (400, "domain mismatch", |e| {
            matches!(e, Error::Rejected { status: 400, .. })
        }),
        (401, "invalid X-Auth token", |e| {
            matches!(e, Error::Auth { status: 401, .. })
        }),
        (403, "forbidden", |e| {
            matches!(e, Error::Rejected { status: 403, .. })
        }),
        (404, "Not Found", |e| {
            matches!(e, Error::Rejected { status: 404, .. })
        }),
        (409, "in progress", |e| {
            matches!(e, Error::Rejected { status: 409, .. })
        }),
        (413, "body larger than 1048576 bytes", |e| {
            matches!(e, Error::TooLarge { .. })
        }),
        (415, "unsupported Content-Type", |e| {
            matches!(e, Error::Rejected { status: 415, .. })
        }),
        (422, "key reused", |e| {
            matches!(e, Error::Rejected { status: 422, .. })
        }),
        (507, "disk full", |e| {
            matches!(
                e,
                Error::Server {
                    status: 507,
                    attempts: 1,
                    ..
                }
            )
        }),
    ];
    for (status, reason, check) in cases {
        let server = MockServer::start(vec![detail(status, reason), accepted(1, "aussen")]);
        let err = send_one(flavor, &server.url(), &Opts::default(), "aussen", &event(1))
            .expect_err("no retry, so the second (success) reply is never used");
        assert!(check(&err), "{status}: {err:?}");
        assert_eq!(err.detail(), Some(reason), "{status}");
        assert!(err.to_string().contains(reason), "{status}: {err}");
        assert_eq!(server.requests().len(), 1, "{status} must not be retried");
    }
    let server = MockServer::start(vec![detail(401, "invalid X-Auth token")]);
    let err = send_one(flavor, &server.url(), &Opts::default(), "aussen", &event(1)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "leitstand refused the token (401: invalid X-Auth token); set LEITSTAND_TOKEN (or the \
         builder's token) to the token the server was started with"
    );
}

fn honours_retry_after_in_seconds(flavor: Flavor) {
    let server = MockServer::start(vec![
        with_header(detail(429, "rate limit exceeded"), "Retry-After", "1"),
        accepted(1, "aussen"),
    ]);
    let opts = Opts {
        backoff: Duration::from_millis(1),
        ..Opts::default()
    };
    send_one(flavor, &server.url(), &opts, "aussen", &event(1)).unwrap();
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert_same_request(&requests);
    let gap = requests[1].at - requests[0].at;
    assert!(gap >= Duration::from_millis(990), "waited only {gap:?}");
}

fn honours_retry_after_as_http_date(flavor: Flavor) {
    // HTTP-dates have whole seconds: two seconds ahead is at least one second ahead.
    let date = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(2));
    let server = MockServer::start(vec![
        with_header(detail(503, "lock timeout"), "Retry-After", &date),
        accepted(1, "aussen"),
    ]);
    let opts = Opts {
        backoff: Duration::from_millis(1),
        ..Opts::default()
    };
    send_one(flavor, &server.url(), &opts, "aussen", &event(1)).unwrap();
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert_same_request(&requests);
    let gap = requests[1].at - requests[0].at;
    assert!(gap >= Duration::from_millis(900), "waited only {gap:?}");
}

fn fails_at_once_when_retry_after_is_too_long(flavor: Flavor) {
    let server = MockServer::start(vec![
        with_header(detail(429, "rate limit exceeded"), "Retry-After", "3600"),
        accepted(1, "aussen"),
    ]);
    let opts = Opts {
        max_retry_after: Duration::from_secs(5),
        ..Opts::default()
    };
    let err = send_one(flavor, &server.url(), &opts, "aussen", &event(1)).unwrap_err();
    assert!(
        matches!(&err, Error::RateLimited { attempts: 1, retry_after: Some(w), .. } if w.as_secs() == 3600),
        "{err:?}"
    );
    assert!(err.to_string().contains("wait 3600.0 s"), "{err}");
    assert_eq!(server.requests().len(), 1);
}

fn retries_timeouts_and_dropped_connections(flavor: Flavor) {
    let server = MockServer::start(vec![Reply::Hang, Reply::Close, accepted(1, "aussen")]);
    let opts = Opts {
        timeout: Duration::from_millis(300),
        ..Opts::default()
    };
    let receipt = send_one(flavor, &server.url(), &opts, "aussen", &event(1)).unwrap();
    assert_eq!(receipt.accepted, 1);
    let requests = server.requests();
    assert_eq!(requests.len(), 3);
    assert_same_request(&requests);
}

fn an_unreachable_server_is_a_transport_error(flavor: Flavor) {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    }; // closed again: connections are refused
    let url = format!("http://127.0.0.1:{port}");
    let opts = Opts {
        retries: 2,
        ..Opts::default()
    };
    let err = send_one(flavor, &url, &opts, "aussen", &event(1)).unwrap_err();
    assert!(
        matches!(err, Error::Transport { attempts: 3, .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains(&format!("{url}/v1/ingest")), "{text}");
    assert!(text.contains("LEITSTAND_URL"), "{text}");
    assert!(std::error::Error::source(&err).is_some());
}

fn splits_batches_under_both_limits(flavor: Flavor) {
    let events: Vec<Value> = (0..25).map(event).collect();
    let server = MockServer::start(vec![
        accepted(10, "aussen"),
        accepted(10, "aussen"),
        accepted(5, "aussen"),
    ]);
    let opts = Opts {
        max_events: 10,
        ..Opts::default()
    };
    let receipt = send_batch(flavor, &server.url(), &opts, "aussen", &events).unwrap();
    assert_eq!((receipt.accepted, receipt.requests), (25, 3));
    let requests = server.requests();
    let sent: Vec<Value> = requests.iter().flat_map(Recorded::events).collect();
    assert_eq!(sent, events, "every event once, in order");
    assert_eq!(
        requests
            .iter()
            .map(|r| r.events().len())
            .collect::<Vec<_>>(),
        [10, 10, 5]
    );
    let mut keys = keys(&requests);
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 3, "each request has its own key");

    let max_body_bytes = 400;
    let server = MockServer::start((0..25).map(|_| accepted(1, "aussen")).collect());
    let opts = Opts {
        max_body_bytes,
        ..Opts::default()
    };
    send_batch(flavor, &server.url(), &opts, "aussen", &events).unwrap();
    let requests = server.requests();
    assert!(requests.len() > 3, "{} requests", requests.len());
    assert!(requests.iter().all(|r| r.body.len() <= max_body_bytes));
    let sent: Vec<Value> = requests.iter().flat_map(Recorded::events).collect();
    assert_eq!(sent, events);

    let server = MockServer::start(vec![]);
    let receipt = send_batch(flavor, &server.url(), &Opts::default(), "aussen", &[]).unwrap();
    assert_eq!((receipt.accepted, receipt.requests), (0, 0));
    assert!(server.requests().is_empty(), "an empty batch sends nothing");
}

fn gzip_bodies_decompress_to_the_events(flavor: Flavor) {
    let events: Vec<Value> = (0..200).map(event).collect();
    let server = MockServer::start(vec![accepted(200, "aussen")]);
    let opts = Opts {
        gzip: true,
        ..Opts::default()
    };
    send_batch(flavor, &server.url(), &opts, "aussen", &events).unwrap();
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].header("content-encoding"), Some("gzip"));
    assert_eq!(requests[0].events(), events);
    let plain: usize = events.iter().map(|e| e.to_string().len() + 1).sum();
    assert!(requests[0].body.len() * 4 < plain, "compressed");
}

fn a_failure_part_way_says_what_is_stored(flavor: Flavor) {
    let events: Vec<Value> = (0..5).map(event).collect();
    let server = MockServer::start(vec![accepted(2, "aussen"), detail(400, "domain mismatch")]);
    let opts = Opts {
        max_events: 2,
        ..Opts::default()
    };
    let err = send_batch(flavor, &server.url(), &opts, "aussen", &events).unwrap_err();
    match &err {
        Error::Incomplete {
            accepted: 2,
            requests: 1,
            spooled: 0,
            source,
        } => assert!(matches!(**source, Error::Rejected { status: 400, .. })),
        other => panic!("{other:?}"),
    }
    assert!(err
        .to_string()
        .contains("2 event(s) in 1 request(s) were stored"));
    assert_eq!(server.requests().len(), 2, "stops at the failure");

    let bad = vec![json!({"ok": 1}), json!("not an object")];
    let server = MockServer::start(vec![]);
    let err = send_batch(flavor, &server.url(), &opts, "aussen", &bad).unwrap_err();
    assert!(
        matches!(err, Error::Serialization { index: 1, .. }),
        "{err:?}"
    );
    assert!(
        server.requests().is_empty(),
        "nothing sent: the bad event is in the first request"
    );
}

fn schema_rejection(errors: Value, error_count: u64) -> Reply {
    let body = json!({
        "detail": "events do not match the schema for 'aussen'; nothing was stored",
        "errors": errors,
        "error_count": error_count,
    });
    answer(422, &body.to_string())
}

fn schema_rejections_carry_the_errors_at_batch_positions(flavor: Flavor) {
    let errors = json!([
        {"index": 1, "path": "/n", "message": "1 is not of type 'string'"},
        {"index": 1, "path": "", "message": "'sensor' is a required property"},
    ]);
    let server = MockServer::start(vec![schema_rejection(errors.clone(), 2)]);
    let err = send_one(flavor, &server.url(), &Opts::default(), "aussen", &event(0)).unwrap_err();
    match &err {
        Error::Invalid {
            errors,
            error_count: 2,
            ..
        } => {
            assert_eq!(errors.len(), 2);
            assert_eq!(
                errors[0].to_string(),
                "event 1 at /n: 1 is not of type 'string'"
            );
        }
        other => panic!("expected Error::Invalid, got {other:?}"),
    }
    assert_eq!(err.status(), Some(422));
    assert_eq!(server.requests().len(), 1, "never retried");

    // The second request of a batch fails: its positions count from the batch's start.
    let events: Vec<Value> = (0..4).map(event).collect();
    let server = MockServer::start(vec![accepted(2, "aussen"), schema_rejection(errors, 25)]);
    let opts = Opts {
        max_events: 2,
        ..Opts::default()
    };
    let err = send_batch(flavor, &server.url(), &opts, "aussen", &events).unwrap_err();
    let Error::Incomplete {
        accepted: 2,
        source,
        ..
    } = &err
    else {
        panic!("expected Error::Incomplete, got {err:?}");
    };
    match &**source {
        Error::Invalid {
            errors,
            error_count: 25,
            ..
        } => {
            let at: Vec<(u64, &str)> = errors.iter().map(|e| (e.index, e.path.as_str())).collect();
            assert_eq!(at, [(3, "/n"), (3, "")]);
        }
        other => panic!("expected Error::Invalid, got {other:?}"),
    }
    assert_eq!(err.status(), Some(422));
    assert_eq!(server.requests().len(), 2, "never retried");
}

fn reports_replayed_answers(flavor: Flavor) {
    let server = MockServer::start(vec![with_header(
        answer(
            202,
            r#"{"status":"accepted","accepted":1,"domain":"aussen"}"#,
        ),
        "Idempotent-Replayed",
        "true",
    )]);
    let receipt = send_one(flavor, &server.url(), &Opts::default(), "aussen", &event(1)).unwrap();
    assert!(receipt.replayed);
}

fn does_not_follow_redirects(flavor: Flavor) {
    let server = MockServer::start(vec![
        with_header(
            answer(301, ""),
            "Location",
            "https://leitstand.lan/v1/ingest",
        ),
        accepted(1, "aussen"),
    ]);
    let err = send_one(flavor, &server.url(), &Opts::default(), "aussen", &event(1)).unwrap_err();
    assert!(
        matches!(err, Error::Rejected { status: 301, .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("redirects to https://leitstand.lan/v1/ingest"),
        "{text}"
    );
    assert!(text.contains("LEITSTAND_URL"), "{text}");
    assert_eq!(server.requests().len(), 1);
}
