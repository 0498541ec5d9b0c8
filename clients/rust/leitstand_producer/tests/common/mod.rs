//! Test support: a scripted HTTP/1.1 server on loopback, the real server (`leitstand`), and a
//! way to run one scenario with either client.
#![allow(dead_code)] // each test crate uses part of it

pub mod leitstand;

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use leitstand_producer::{Builder, Error, Receipt};
use serde_json::Value;

/// What the mock server does with the next request.
#[derive(Debug, Clone)]
pub enum Reply {
    Answer {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    },
    /// Read the request, then close the connection without an answer.
    Close,
    /// Read the request and never answer (until the server is dropped).
    Hang,
}

pub fn answer(status: u16, body: &str) -> Reply {
    Reply::Answer {
        status,
        headers: Vec::new(),
        body: body.to_owned(),
    }
}

pub fn detail(status: u16, detail: &str) -> Reply {
    answer(status, &serde_json::json!({ "detail": detail }).to_string())
}

pub fn with_header(reply: Reply, name: &str, value: &str) -> Reply {
    match reply {
        Reply::Answer {
            status,
            mut headers,
            body,
        } => {
            headers.push((name.to_owned(), value.to_owned()));
            Reply::Answer {
                status,
                headers,
                body,
            }
        }
        other => other,
    }
}

pub fn accepted(n: u64, domain: &str) -> Reply {
    answer(
        202,
        &serde_json::json!({"status": "accepted", "accepted": n, "domain": domain}).to_string(),
    )
}

/// A request as the mock server saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub at: Instant,
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        let mut found = self
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name));
        let first = found.next().map(|(_, v)| v.as_str());
        assert!(found.next().is_none(), "header {name} sent more than once");
        first
    }

    /// The NDJSON body as values (gunzipped when `Content-Encoding: gzip`).
    pub fn events(&self) -> Vec<Value> {
        let mut text = String::new();
        if self.header("content-encoding") == Some("gzip") {
            flate2::read::GzDecoder::new(&self.body[..])
                .read_to_string(&mut text)
                .expect("valid gzip");
        } else {
            text = String::from_utf8(self.body.clone()).expect("UTF-8 body");
        }
        assert!(text.ends_with('\n'), "NDJSON ends with a newline");
        text.lines()
            .map(|line| serde_json::from_str(line).expect("one JSON value per line"))
            .collect()
    }
}

/// A real HTTP server on 127.0.0.1 that answers from a script, one reply per request (then
/// `418 mock script exhausted`), and records every request.
pub struct MockServer {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl MockServer {
    pub fn start(script: Vec<Reply>) -> MockServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let script = Arc::new(Mutex::new(VecDeque::from(script)));
        let acceptor = {
            let (requests, stop) = (requests.clone(), stop.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let (requests, stop, script) = (requests.clone(), stop.clone(), script.clone());
                    std::thread::spawn(move || serve(stream, &requests, &stop, &script));
                }
            })
        };
        MockServer {
            addr,
            requests,
            stop,
            acceptor: Some(acceptor),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees `stop`.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn serve(
    stream: TcpStream,
    requests: &Mutex<Vec<Recorded>>,
    stop: &AtomicBool,
    script: &Mutex<VecDeque<Reply>>,
) {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let Some(request) = read_request(&mut reader) else {
        return; // the waking connect of Drop, or a client that gave up
    };
    requests.lock().unwrap().push(request);
    let reply = script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or_else(|| detail(418, "mock script exhausted"));
    let mut stream = stream;
    match reply {
        Reply::Answer {
            status,
            headers,
            body,
        } => {
            let mut head = format!(
                "HTTP/1.1 {status} Mock\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\nConnection: close\r\n",
                body.len()
            );
            for (name, value) in headers {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
            head.push_str("\r\n");
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(body.as_bytes());
            let _ = stream.flush();
        }
        Reply::Close => {}
        Reply::Hang => {
            // Hold the connection open; the client's timeout ends the attempt. Bounded so a
            // broken test cannot hang forever.
            let deadline = Instant::now() + Duration::from_secs(30);
            while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Recorded> {
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let at = Instant::now();
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let target = parts.next()?.to_owned();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    let length: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.parse().expect("numeric Content-Length"))
        .expect("the client sends Content-Length");
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Recorded {
        at,
        method,
        target,
        headers,
        body,
    })
}

/// Client settings for a scenario, applied to either builder.
#[derive(Debug, Clone)]
pub struct Opts {
    pub token: String,
    pub retries: u32,
    pub backoff: Duration,
    pub timeout: Duration,
    pub max_retry_after: Duration,
    pub gzip: bool,
    pub max_body_bytes: usize,
    pub max_events: usize,
    pub ca_file: Option<PathBuf>,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            token: "test-token".to_owned(),
            retries: 3,
            backoff: Duration::from_millis(5),
            timeout: Duration::from_secs(5),
            max_retry_after: Duration::from_secs(60),
            gzip: false,
            max_body_bytes: leitstand_producer::DEFAULT_MAX_BODY_BYTES,
            max_events: leitstand_producer::DEFAULT_MAX_EVENTS,
            ca_file: None,
        }
    }
}

pub fn configure<C>(builder: Builder<C>, url: &str, opts: &Opts) -> Builder<C> {
    let builder = match &opts.ca_file {
        Some(path) => builder.ca_file(path),
        None => builder,
    };
    builder
        .url(url)
        .token(opts.token.clone())
        .retries(opts.retries)
        .backoff(opts.backoff)
        .timeout(opts.timeout)
        .max_retry_after(opts.max_retry_after)
        .gzip(opts.gzip)
        .max_body_bytes(opts.max_body_bytes)
        .max_events(opts.max_events)
}

/// Which client runs a scenario.
#[derive(Debug, Clone, Copy)]
pub enum Flavor {
    Blocking,
    Async,
}

pub fn send_one(
    flavor: Flavor,
    url: &str,
    opts: &Opts,
    domain: &str,
    event: &Value,
) -> Result<Receipt, Error> {
    match flavor {
        #[cfg(feature = "blocking")]
        Flavor::Blocking => {
            let client = configure(leitstand_producer::Client::builder(), url, opts).build()?;
            client.send_one(domain, event)
        }
        #[cfg(feature = "async")]
        Flavor::Async => {
            let client =
                configure(leitstand_producer::AsyncClient::builder(), url, opts).build()?;
            runtime().block_on(client.send_one(domain, event))
        }
        #[allow(unreachable_patterns)]
        _ => unreachable!("{flavor:?} is not built with these features"),
    }
}

pub fn send_batch(
    flavor: Flavor,
    url: &str,
    opts: &Opts,
    domain: &str,
    events: &[Value],
) -> Result<Receipt, Error> {
    match flavor {
        #[cfg(feature = "blocking")]
        Flavor::Blocking => {
            let client = configure(leitstand_producer::Client::builder(), url, opts).build()?;
            client.send_batch(domain, events)
        }
        #[cfg(feature = "async")]
        Flavor::Async => {
            let client =
                configure(leitstand_producer::AsyncClient::builder(), url, opts).build()?;
            runtime().block_on(client.send_batch(domain, events))
        }
        #[allow(unreachable_patterns)]
        _ => unreachable!("{flavor:?} is not built with these features"),
    }
}

#[cfg(feature = "async")]
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Generate one `#[test]` per scenario and client: `blocking::<name>` and `asynchronous::<name>`.
#[macro_export]
macro_rules! for_both_clients {
    ($($name:ident),* $(,)?) => {
        #[cfg(feature = "blocking")]
        mod blocking {
            $( #[test] fn $name() { super::$name($crate::common::Flavor::Blocking) } )*
        }
        #[cfg(feature = "async")]
        mod asynchronous {
            $( #[test] fn $name() { super::$name($crate::common::Flavor::Async) } )*
        }
    };
}
