//! https against the real leitstand server: uvicorn serving a certificate from a CA made in
//! the test (rcgen). With the CA configured the events are stored; without it, or with
//! another CA, the send fails with `Error::Tls` and nothing is stored.
#![cfg(feature = "tls")]

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::leitstand::{assert_stored, Leitstand, ServerTls, TOKEN};
use common::{send_batch, send_one, Flavor, Opts};
use leitstand_producer::Error;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use serde_json::{json, Value};

for_both_clients!(
    https_with_the_ca_file_stores_events,
    https_without_the_right_ca_is_a_tls_error,
);

const CHILD_TIMEOUT: Duration = Duration::from_secs(60);

/// A CA, a server certificate it signed for 127.0.0.1 and localhost, and an unrelated CA, as
/// PEM files in a temp dir.
struct Pki {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    other_ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = certificate_authority("leitstand test CA");
        let other_ca = certificate_authority("some other CA");
        let server_key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "leitstand test server");
        let server_cert = params.signed_by(&server_key, &ca).unwrap();

        let write = |name: &str, pem: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, pem).expect("write PEM");
            path
        };
        Pki {
            ca: write("ca.pem", ca.pem()),
            other_ca: write("other-ca.pem", other_ca.pem()),
            server_cert: write("server.pem", server_cert.pem()),
            server_key: write("server-key.pem", server_key.serialize_pem()),
            _dir: dir,
        }
    }

    fn start_server(&self) -> Leitstand {
        Leitstand::start_tls(ServerTls {
            cert: &self.server_cert,
            key: &self.server_key,
        })
    }
}

fn certificate_authority(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

fn opts(ca_file: Option<&PathBuf>) -> Opts {
    Opts {
        token: TOKEN.to_owned(),
        ca_file: ca_file.cloned(),
        ..Opts::default()
    }
}

fn https_with_the_ca_file_stores_events(flavor: Flavor) {
    let pki = Pki::new();
    let server = pki.start_server();
    let url = server.url();
    assert!(url.starts_with("https://"), "{url}");
    let with_ca = opts(Some(&pki.ca));

    let event = json!({"event": "door", "status": "open", "via": "https"});
    let receipt = send_one(flavor, &url, &with_ca, "aussen", &event).unwrap();
    assert_eq!((receipt.status.as_str(), receipt.accepted), ("accepted", 1));
    assert_stored(&server, "aussen", &[event]);

    // Several requests on the pooled TLS connections, gzip-compressed.
    let batch: Vec<Value> = (0..3000)
        .map(|n| json!({"event": "tick", "n": n}))
        .collect();
    let split = Opts {
        max_events: 1000,
        gzip: true,
        ..with_ca
    };
    let receipt = send_batch(flavor, &url, &split, "batch.test", &batch).unwrap();
    assert_eq!((receipt.accepted, receipt.requests), (3000, 3));
    assert_stored(&server, "batch.test", &batch);
}

fn https_without_the_right_ca_is_a_tls_error(flavor: Flavor) {
    let pki = Pki::new();
    let server = pki.start_server();
    let url = server.url();
    let event = json!({"event": "door"});

    // The system's trust store does not know the test CA.
    let err = send_one(flavor, &url, &opts(None), "aussen", &event).unwrap_err();
    match &err {
        Error::Tls {
            url: tried,
            message,
            ca_file_set: false,
            ..
        } => {
            assert!(tried.starts_with(&url), "{tried}");
            assert!(message.contains("certificate"), "{message}");
        }
        other => panic!("expected Error::Tls, got {other:?}"),
    }
    let text = err.to_string();
    assert!(text.starts_with("TLS with leitstand at https://"), "{text}");
    assert!(text.contains("set LEITSTAND_CA_FILE"), "{text}");

    // Only the configured CA is trusted: another one fails the same way.
    let err = send_one(flavor, &url, &opts(Some(&pki.other_ca)), "aussen", &event).unwrap_err();
    assert!(
        matches!(&err, Error::Tls { ca_file_set: true, message, .. } if message.contains("certificate")),
        "{err:?}"
    );
    assert!(err.to_string().contains("only trusted CA"), "{err}");

    assert!(
        !server.has_file("aussen"),
        "nothing was sent, nothing stored"
    );
}

/// `LEITSTAND_CA_FILE` in the environment, read by `from_env()`: this test runs the ignored
/// test below in a child process (the environment of this process stays untouched), once with
/// the variable and once without.
#[test]
fn from_env_reads_leitstand_ca_file() {
    let pki = Pki::new();
    let server = pki.start_server();

    let (ok, output) = run_child(&server.url(), Some(&pki.ca));
    assert!(ok, "child failed: {output}");
    assert_stored(&server, "env.test", &[child_event()]);

    let (ok, output) = run_child(&server.url(), None);
    assert!(!ok, "child succeeded without the CA: {output}");
    assert!(
        output.contains("TLS with leitstand") && output.contains("set LEITSTAND_CA_FILE"),
        "{output}"
    );
    assert_eq!(server.stored("env.test").len(), 1, "nothing more stored");
}

fn child_event() -> Value {
    json!({"event": "from_env"})
}

/// Run `child_sends_one_event_from_env` with only the given LEITSTAND_* variables; its
/// success and its output.
fn run_child(url: &str, ca_file: Option<&PathBuf>) -> (bool, String) {
    let mut command = Command::new(std::env::current_exe().expect("test binary"));
    command
        .args(["--exact", "child_sends_one_event_from_env", "--ignored"])
        .args(["--nocapture", "--test-threads=1"]);
    for (name, _) in std::env::vars() {
        if name.starts_with("LEITSTAND_") {
            command.env_remove(name);
        }
    }
    command
        .env("LEITSTAND_URL", url)
        .env("LEITSTAND_TOKEN", TOKEN)
        .env("LEITSTAND_RETRIES", "0")
        .env("LEITSTAND_TEST_CHILD", "1");
    if let Some(path) = ca_file {
        command.env("LEITSTAND_CA_FILE", path);
    }
    let out = tempfile::tempfile().expect("temp file");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out.try_clone().unwrap())
        .spawn()
        .expect("start the child test");
    let deadline = Instant::now() + CHILD_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll child") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill(); // by PID
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = read_all(out);
    match status {
        Some(status) => (status.success(), output),
        None => panic!("child test not done within {CHILD_TIMEOUT:?}: {output}"),
    }
}

fn read_all(mut file: std::fs::File) -> String {
    use std::io::{Read, Seek};
    let mut text = String::new();
    file.rewind().unwrap();
    file.read_to_string(&mut text).unwrap();
    text
}

#[test]
#[ignore = "run by from_env_reads_leitstand_ca_file in a child process"]
fn child_sends_one_event_from_env() {
    assert!(
        std::env::var_os("LEITSTAND_TEST_CHILD").is_some(),
        "only meaningful as the child of from_env_reads_leitstand_ca_file"
    );
    let result = send_from_env();
    if let Err(error) = &result {
        eprintln!("error: {error}");
    }
    result.unwrap();
}

#[cfg(feature = "blocking")]
fn send_from_env() -> Result<leitstand_producer::Receipt, Error> {
    leitstand_producer::Client::from_env()?.send_one("env.test", &child_event())
}

#[cfg(not(feature = "blocking"))]
fn send_from_env() -> Result<leitstand_producer::Receipt, Error> {
    let client = leitstand_producer::AsyncClient::from_env()?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(client.send_one("env.test", &child_event()))
}
