//! The real leitstand server: the Python service from this repository, started as the README
//! says (`uvicorn app:app`) on a free loopback port, optionally with TLS, stopped by its PID.
//! Needs the repository's venv (`make venv`; `make test` creates it first).

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub const TOKEN: &str = "integration-token";
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The certificate and key uvicorn serves https with (`--ssl-certfile`, `--ssl-keyfile`).
pub struct ServerTls<'a> {
    pub cert: &'a Path,
    pub key: &'a Path,
}

/// A running `uvicorn app:app` with its own data directory; killed by PID on drop.
pub struct Leitstand {
    child: Child,
    pub port: u16,
    tls: bool,
    data_dir: tempfile::TempDir,
    log: PathBuf,
}

impl Leitstand {
    pub fn start() -> Leitstand {
        Leitstand::start_with(None, &[], free_port())
    }

    pub fn start_tls(tls: ServerTls<'_>) -> Leitstand {
        Leitstand::start_with(Some(tls), &[], free_port())
    }

    /// With more server settings, e.g. `LEITSTAND_SCHEMA_DIR`.
    pub fn start_with_env(env: &[(&str, &Path)]) -> Leitstand {
        Leitstand::start_with(None, env, free_port())
    }

    /// On a port chosen before (with [`free_port`]), e.g. one a client already sent to.
    pub fn start_on(port: u16) -> Leitstand {
        Leitstand::start_with(None, &[], port)
    }

    fn start_with(tls: Option<ServerTls<'_>>, env: &[(&str, &Path)], port: u16) -> Leitstand {
        let (root, python) = repository_python();
        let data_dir = tempfile::tempdir().expect("temp dir");
        let log = data_dir.path().join("server.log");
        let log_file = File::create(&log).expect("log file");
        let mut command = Command::new(&python);
        command
            .args(["-m", "uvicorn", "app:app", "--host", "127.0.0.1"])
            .args(["--port", &port.to_string(), "--no-access-log"])
            .current_dir(&root);
        if let Some(tls) = &tls {
            command
                .arg("--ssl-certfile")
                .arg(tls.cert)
                .arg("--ssl-keyfile")
                .arg(tls.key);
        }
        for (name, _) in std::env::vars() {
            if name.starts_with("LEITSTAND_") || name == "LOG_LEVEL" {
                command.env_remove(name);
            }
        }
        command.envs(env.iter().copied());
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
            tls: tls.is_some(),
            data_dir,
            log,
        };
        server.wait_ready();
        server
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("poll server") {
                panic!("leitstand exited with {status}: {}", self.log());
            }
            // uvicorn listens only once the app has started, so for TLS (where this probe
            // cannot speak the protocol) an accepted connection means ready.
            let ready = if self.tls {
                TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            } else {
                health_ok(self.port)
            };
            if ready {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "leitstand not ready within {READY_TIMEOUT:?}: {}",
            self.log()
        );
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the domain's JSONL file exists.
    pub fn has_file(&self, domain: &str) -> bool {
        self.jsonl(domain).exists()
    }

    fn jsonl(&self, domain: &str) -> PathBuf {
        self.data_dir
            .path()
            .join("data")
            .join(format!("{domain}.jsonl"))
    }

    /// Complete lines in the domain's JSONL file so far (0 without one); safe to call while
    /// the server writes.
    pub fn line_count(&self, domain: &str) -> usize {
        std::fs::read(self.jsonl(domain))
            .map(|data| data.iter().filter(|&&b| b == b'\n').count())
            .unwrap_or(0)
    }

    /// The domain's JSONL file, one parsed value per line (each line checked to end in `\n`).
    pub fn stored(&self, domain: &str) -> Vec<Value> {
        let path = self.jsonl(domain);
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

/// The repository's root and the Python of its venv (which runs the server and the CLI).
pub fn repository_python() -> (PathBuf, PathBuf) {
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
    (root, python)
}

/// A loopback port nobody listens on (right now).
pub fn free_port() -> u16 {
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
pub fn with_domain(event: &Value, domain: &str) -> Value {
    let mut stored = event.clone();
    stored["domain"] = json!(domain);
    stored
}

pub fn assert_stored(server: &Leitstand, domain: &str, events: &[Value]) {
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
