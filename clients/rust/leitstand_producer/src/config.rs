//! Settings of a client: from a builder, from the environment, or both.

use std::fmt;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::Url;

use crate::encode::Limits;
use crate::error::Error;
use crate::retry::RetryPolicy;
use crate::tls::Tls;

/// `LEITSTAND_URL` when it is not set.
pub const DEFAULT_URL: &str = "http://localhost:8788";
/// `LEITSTAND_TIMEOUT` when it is not set: seconds per HTTP attempt.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// `LEITSTAND_RETRIES` when it is not set: retries after the first attempt.
pub const DEFAULT_RETRIES: u32 = 3;
/// `LEITSTAND_BACKOFF` when it is not set: the first wait before a retry.
pub const DEFAULT_BACKOFF: Duration = Duration::from_millis(500);
/// The server's default body limit (`LEITSTAND_MAX_BODY`, 1 MiB); batches are split below it.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1_048_576;
/// The server's default event limit per request (`LEITSTAND_MAX_EVENTS`).
pub const DEFAULT_MAX_EVENTS: usize = 10_000;
/// `LEITSTAND_SPOOL_MAX_BYTES` when it is not set (100 MiB, as in the Python client).
pub const DEFAULT_SPOOL_MAX_BYTES: u64 = 104_857_600;

const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(30);
const DEFAULT_MAX_RETRY_AFTER: Duration = Duration::from_secs(120);

/// Validated settings shared by both clients.
#[derive(Clone)]
pub(crate) struct Config {
    pub ingest_url: Url,
    pub token: String,
    pub timeout: Duration,
    pub retry: RetryPolicy,
    pub gzip: bool,
    pub max_body_bytes: usize,
    pub max_events: usize,
    pub ca_file: Option<PathBuf>,
    /// Handed to reqwest by the clients; without the `tls` feature there is nothing to hand.
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    pub tls: Tls,
    /// The spool (feature `spool`), shared by the clones of a client.
    #[cfg(feature = "spool")]
    pub spooler: Option<std::sync::Arc<crate::spooling::Spooler>>,
}

impl Config {
    pub fn limits(&self) -> Limits {
        Limits {
            max_body_bytes: self.max_body_bytes,
            max_events: self.max_events,
            gzip: self.gzip,
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("ingest_url", &self.ingest_url.as_str())
            .field("token", &"<redacted>")
            .field("timeout", &self.timeout)
            .field("retry", &self.retry)
            .field("gzip", &self.gzip)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_events", &self.max_events)
            .field("ca_file", &self.ca_file)
            .finish_non_exhaustive()
    }
}

/// Builds a `Client` or an `AsyncClient`; get one from
/// `Client::builder()` or `AsyncClient::builder()`.
///
/// Every setting has the default of the Python client. [`Builder::with_env`] reads the same
/// environment variables; setters called afterwards override them.
pub struct Builder<C> {
    url: Option<String>,
    token: Option<String>,
    timeout: Duration,
    retries: u32,
    backoff: Duration,
    max_backoff: Duration,
    max_retry_after: Duration,
    gzip: bool,
    max_body_bytes: usize,
    max_events: usize,
    ca_file: Option<PathBuf>,
    spool_dir: Option<PathBuf>,
    spool_max_bytes: u64,
    client: PhantomData<fn() -> C>,
}

impl<C> fmt::Debug for Builder<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .field("retries", &self.retries)
            .field("backoff", &self.backoff)
            .field("gzip", &self.gzip)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_events", &self.max_events)
            .field("ca_file", &self.ca_file)
            .field("spool_dir", &self.spool_dir)
            .field("spool_max_bytes", &self.spool_max_bytes)
            .finish_non_exhaustive()
    }
}

impl<C> Default for Builder<C> {
    fn default() -> Self {
        Builder {
            url: None,
            token: None,
            timeout: DEFAULT_TIMEOUT,
            retries: DEFAULT_RETRIES,
            backoff: DEFAULT_BACKOFF,
            max_backoff: DEFAULT_MAX_BACKOFF,
            max_retry_after: DEFAULT_MAX_RETRY_AFTER,
            gzip: false,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_events: DEFAULT_MAX_EVENTS,
            ca_file: None,
            spool_dir: None,
            spool_max_bytes: DEFAULT_SPOOL_MAX_BYTES,
            client: PhantomData,
        }
    }
}

impl<C> Builder<C> {
    /// Base URL of the server, e.g. `http://leitstand.lan:8788` (default [`DEFAULT_URL`]).
    /// Events go to `<url>/v1/ingest`.
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.url = Some(url.into());
        self
    }

    /// The shared secret, sent as `X-Auth` (required).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Timeout of one HTTP attempt, connecting included (default 5 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Retries after the first attempt on transport errors, 408, 429, 500, 502, 503 and 504
    /// (default 3; 0 turns retries off).
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// First wait before a retry, doubled for each further one, with jitter (default 0.5 s).
    pub fn backoff(mut self, backoff: Duration) -> Self {
        self.backoff = backoff;
        self
    }

    /// Upper bound of one backoff wait (default 30 s).
    pub fn max_backoff(mut self, max_backoff: Duration) -> Self {
        self.max_backoff = max_backoff;
        self
    }

    /// The longest `Retry-After` the client waits for (default 120 s). When the server asks for
    /// more, the send fails at once with [`Error::RateLimited`] or [`Error::Server`] instead of
    /// blocking the caller.
    pub fn max_retry_after(mut self, max_retry_after: Duration) -> Self {
        self.max_retry_after = max_retry_after;
        self
    }

    /// Compress request bodies with gzip (`Content-Encoding: gzip`; default off).
    pub fn gzip(mut self, gzip: bool) -> Self {
        self.gzip = gzip;
        self
    }

    /// Largest uncompressed body of one request; batches are split below it. Match the
    /// server's `LEITSTAND_MAX_BODY` (default 1 MiB).
    pub fn max_body_bytes(mut self, max_body_bytes: usize) -> Self {
        self.max_body_bytes = max_body_bytes;
        self
    }

    /// Most events in one request; batches are split below it. Match the server's
    /// `LEITSTAND_MAX_EVENTS` (default 10,000).
    pub fn max_events(mut self, max_events: usize) -> Self {
        self.max_events = max_events;
        self
    }

    /// For `https://` URLs (feature `tls`): trust only the CA certificate(s) in this PEM file,
    /// e.g. the certificate of a self-signed server or of a private CA. Without it the
    /// system's trust store is used. Read and checked by `build()`; without the `tls` feature
    /// setting it is an [`Error::Config`].
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }

    /// Keep what cannot be delivered after the retries (no answer, 5xx, 429, 408) in this
    /// directory, durably, and send it later in order (feature `spool`; the format of the
    /// Python client, so `leitstand spool status|flush` work on it too). See the crate docs.
    /// Without the `spool` feature setting it is an [`Error::Config`].
    pub fn spool_dir(mut self, path: impl Into<PathBuf>) -> Self {
        self.spool_dir = Some(path.into());
        self
    }

    /// The most bytes the spool holds (default 100 MiB); a batch that does not fit is
    /// [`Error::SpoolFull`].
    pub fn spool_max_bytes(mut self, max_bytes: u64) -> Self {
        self.spool_max_bytes = max_bytes;
        self
    }

    /// Read `LEITSTAND_URL`, `LEITSTAND_TOKEN`, `LEITSTAND_TIMEOUT` (seconds),
    /// `LEITSTAND_RETRIES` and `LEITSTAND_BACKOFF` (seconds) from the environment — and, like
    /// the Python client, `LEITSTAND_MAX_BODY`, `LEITSTAND_MAX_EVENTS`,
    /// `LEITSTAND_MAX_BACKOFF`, `LEITSTAND_MAX_RETRY_AFTER` (seconds) and `LEITSTAND_CA_FILE`
    /// (see [`Builder::ca_file`]), `LEITSTAND_SPOOL_DIR` and `LEITSTAND_SPOOL_MAX_BYTES` (see
    /// [`Builder::spool_dir`]). Unset or empty
    /// variables keep the current value; an unparsable one is an [`Error::Config`] that names
    /// it.
    pub fn with_env(self) -> Result<Self, Error> {
        self.with_lookup(|name| std::env::var(name).ok())
    }

    pub(crate) fn with_lookup(
        mut self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, Error> {
        let get = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());
        if let Some(url) = get("LEITSTAND_URL") {
            self.url = Some(url.trim().to_owned());
        }
        if let Some(token) = lookup("LEITSTAND_TOKEN").filter(|t| !t.is_empty()) {
            self.token = Some(token);
        }
        if let Some(value) = get("LEITSTAND_TIMEOUT") {
            self.timeout = seconds("LEITSTAND_TIMEOUT", &value)?;
        }
        if let Some(value) = get("LEITSTAND_RETRIES") {
            self.retries = whole("LEITSTAND_RETRIES", &value)?;
        }
        if let Some(value) = get("LEITSTAND_BACKOFF") {
            self.backoff = seconds("LEITSTAND_BACKOFF", &value)?;
        }
        if let Some(value) = get("LEITSTAND_MAX_BACKOFF") {
            self.max_backoff = seconds("LEITSTAND_MAX_BACKOFF", &value)?;
        }
        if let Some(value) = get("LEITSTAND_MAX_RETRY_AFTER") {
            self.max_retry_after = seconds("LEITSTAND_MAX_RETRY_AFTER", &value)?;
        }
        if let Some(value) = get("LEITSTAND_MAX_BODY") {
            self.max_body_bytes = whole("LEITSTAND_MAX_BODY", &value)?;
        }
        if let Some(value) = get("LEITSTAND_MAX_EVENTS") {
            self.max_events = whole("LEITSTAND_MAX_EVENTS", &value)?;
        }
        if let Some(path) = get("LEITSTAND_CA_FILE") {
            self.ca_file = Some(PathBuf::from(path.trim()));
        }
        if let Some(path) = get("LEITSTAND_SPOOL_DIR") {
            self.spool_dir = Some(PathBuf::from(path.trim()));
        }
        if let Some(value) = get("LEITSTAND_SPOOL_MAX_BYTES") {
            self.spool_max_bytes = whole("LEITSTAND_SPOOL_MAX_BYTES", &value)?;
        }
        Ok(self)
    }

    pub(crate) fn config(self) -> Result<Config, Error> {
        let token = match self.token {
            Some(token) if !token.is_empty() => token,
            _ => {
                return Err(Error::Config(
                    "no token: set LEITSTAND_TOKEN (or call .token()) to the server's token".into(),
                ))
            }
        };
        if reqwest::header::HeaderValue::from_str(&token).is_err() {
            return Err(Error::Config(
                "the token must be printable ASCII (it is sent as the X-Auth header)".into(),
            ));
        }
        if self.timeout.is_zero() {
            return Err(Error::Config("the timeout must be more than 0 s".into()));
        }
        if self.max_body_bytes == 0 || self.max_events == 0 {
            return Err(Error::Config(
                "max_body_bytes and max_events must be at least 1".into(),
            ));
        }
        let url = self.url.unwrap_or_else(|| DEFAULT_URL.to_owned());
        let ingest_url = ingest_url(&url)?;
        let tls = Tls::new(self.ca_file.as_deref())?;
        if self.spool_max_bytes == 0 {
            return Err(Error::Config(
                "LEITSTAND_SPOOL_MAX_BYTES/spool_max_bytes must be at least 1".into(),
            ));
        }
        let retry = RetryPolicy {
            retries: self.retries,
            backoff: self.backoff,
            max_backoff: self.max_backoff,
            max_retry_after: self.max_retry_after,
        };
        #[cfg(feature = "spool")]
        let spooler = match &self.spool_dir {
            Some(dir) => Some(std::sync::Arc::new(crate::spooling::Spooler::open(
                dir,
                self.spool_max_bytes,
                &retry,
            )?)),
            None => None,
        };
        #[cfg(not(feature = "spool"))]
        if let Some(dir) = &self.spool_dir {
            return Err(Error::Config(format!(
                "LEITSTAND_SPOOL_DIR/spool_dir {} is set, but this build has no spool: enable \
                 the leitstand_producer crate's `spool` feature",
                dir.display()
            )));
        }
        Ok(Config {
            ingest_url,
            token,
            timeout: self.timeout,
            retry,
            gzip: self.gzip,
            max_body_bytes: self.max_body_bytes,
            max_events: self.max_events,
            ca_file: self.ca_file,
            tls,
            #[cfg(feature = "spool")]
            spooler,
        })
    }
}

/// `http://host:port[/prefix]` → `http://host:port[/prefix]/v1/ingest`.
fn ingest_url(base: &str) -> Result<Url, Error> {
    let invalid = |why: String| {
        Error::Config(format!(
            "LEITSTAND_URL/url {base:?} {why}; expected e.g. {DEFAULT_URL}"
        ))
    };
    let mut url = Url::parse(base).map_err(|e| invalid(format!("is not a URL ({e})")))?;
    match url.scheme() {
        "http" => {}
        "https" if cfg!(feature = "tls") => {}
        "https" => {
            return Err(invalid(
                "uses https, but this build of the client speaks plain HTTP only; enable the \
                 leitstand_producer crate's `tls` feature, or reach leitstand over http on a \
                 trusted network"
                    .into(),
            ))
        }
        other => return Err(invalid(format!("has the scheme {other:?}, not http(s)"))),
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("must not have a query or fragment".into()));
    }
    let path = format!("{}/v1/ingest", url.path().trim_end_matches('/'));
    url.set_path(&path);
    Ok(url)
}

fn whole<N: std::str::FromStr>(name: &str, value: &str) -> Result<N, Error> {
    value
        .trim()
        .parse()
        .map_err(|_| Error::Config(format!("{name}={value:?} is not a whole number >= 0")))
}

fn seconds(name: &str, value: &str) -> Result<Duration, Error> {
    value
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0 && *s < 1e9)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| {
            Error::Config(format!(
                "{name}={value:?} is not a number of seconds, e.g. 5 or 0.5"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    type B = Builder<()>;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn environment_defaults_match_the_python_client() {
        let config = B::default()
            .with_lookup(env(&[("LEITSTAND_TOKEN", "dev")]))
            .unwrap()
            .config()
            .unwrap();
        assert_eq!(
            config.ingest_url.as_str(),
            "http://localhost:8788/v1/ingest"
        );
        assert_eq!(config.token, "dev");
        assert_eq!(config.timeout, Duration::from_secs(5));
        assert_eq!(config.retry.retries, 3);
        assert_eq!(config.retry.backoff, Duration::from_millis(500));
        assert_eq!(config.max_body_bytes, 1_048_576);
        assert_eq!(config.max_events, 10_000);
        assert_eq!(config.retry.max_backoff, Duration::from_secs(30));
        assert_eq!(config.retry.max_retry_after, Duration::from_secs(120));
        assert!(!config.gzip);
    }

    #[test]
    fn environment_values_are_read_and_setters_override_them() {
        let lookup = env(&[
            ("LEITSTAND_URL", "http://10.0.0.5:9000/leitstand/"),
            ("LEITSTAND_TOKEN", "s3cret"),
            ("LEITSTAND_TIMEOUT", "2.5"),
            ("LEITSTAND_RETRIES", "7"),
            ("LEITSTAND_BACKOFF", "0.25"),
            ("LEITSTAND_MAX_BACKOFF", "8"),
            ("LEITSTAND_MAX_RETRY_AFTER", "30"),
            ("LEITSTAND_MAX_BODY", "65536"),
            ("LEITSTAND_MAX_EVENTS", "500"),
        ]);
        let config = B::default().with_lookup(lookup).unwrap().config().unwrap();
        assert_eq!(
            config.ingest_url.as_str(),
            "http://10.0.0.5:9000/leitstand/v1/ingest"
        );
        assert_eq!(config.timeout, Duration::from_millis(2500));
        assert_eq!(config.retry.retries, 7);
        assert_eq!(config.retry.backoff, Duration::from_millis(250));
        assert_eq!(config.retry.max_backoff, Duration::from_secs(8));
        assert_eq!(config.retry.max_retry_after, Duration::from_secs(30));
        assert_eq!((config.max_body_bytes, config.max_events), (65536, 500));

        let config = B::default()
            .with_lookup(env(&[("LEITSTAND_RETRIES", "7"), ("LEITSTAND_TOKEN", "a")]))
            .unwrap()
            .retries(1)
            .token("b")
            .config()
            .unwrap();
        assert_eq!(config.retry.retries, 1);
        assert_eq!(config.token, "b");
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (name, value) in [
            ("LEITSTAND_TIMEOUT", "five"),
            ("LEITSTAND_TIMEOUT", "-1"),
            ("LEITSTAND_RETRIES", "-1"),
            ("LEITSTAND_RETRIES", "2.5"),
            ("LEITSTAND_BACKOFF", "NaN"),
            ("LEITSTAND_MAX_BODY", "1MiB"),
            ("LEITSTAND_MAX_EVENTS", "-5"),
        ] {
            let err = B::default().with_lookup(env(&[(name, value)])).unwrap_err();
            assert!(
                matches!(&err, Error::Config(text) if text.contains(name)),
                "{err}"
            );
        }
    }

    #[test]
    fn a_missing_token_or_bad_url_is_a_config_error() {
        let err = B::default().config().unwrap_err();
        assert!(err.to_string().contains("LEITSTAND_TOKEN"), "{err}");
        for url in ["localhost:8788", "ftp://x", "not a url", "http://x/?a=b"] {
            let err = B::default().token("t").url(url).config().unwrap_err();
            assert!(matches!(err, Error::Config(_)), "{url}");
        }
        let err = B::default().token("bad\ntoken").config().unwrap_err();
        assert!(matches!(err, Error::Config(_)));
    }

    #[test]
    #[cfg(not(feature = "tls"))]
    fn without_the_tls_feature_https_and_a_ca_file_are_refused_with_the_way_out() {
        let err = B::default()
            .token("t")
            .url("https://x")
            .config()
            .unwrap_err();
        assert!(matches!(err, Error::Config(_)));
        assert!(err.to_string().contains("`tls` feature"), "{err}");

        let lookup = env(&[("LEITSTAND_CA_FILE", "/etc/leitstand/ca.pem")]);
        let builder = B::default().token("t").with_lookup(lookup).unwrap();
        let err = builder.config().unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("LEITSTAND_CA_FILE") && text.contains("/etc/leitstand/ca.pem"),
            "{text}"
        );
        assert!(text.contains("`tls` feature"), "{text}");
    }

    #[test]
    #[cfg(feature = "tls")]
    fn with_the_tls_feature_https_works_and_the_ca_file_is_checked_at_build() {
        let config = B::default()
            .token("t")
            .url("https://leitstand.lan:8443/")
            .config()
            .unwrap();
        assert_eq!(
            config.ingest_url.as_str(),
            "https://leitstand.lan:8443/v1/ingest"
        );

        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let lookup = env(&[("LEITSTAND_CA_FILE", missing.to_str().unwrap())]);
        let err = B::default()
            .token("t")
            .with_lookup(lookup)
            .unwrap()
            .config()
            .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, Error::Config(_)), "{err:?}");
        assert!(text.contains("LEITSTAND_CA_FILE"), "{text}");
        assert!(
            text.contains("missing.pem") && text.contains("cannot be read"),
            "{text}"
        );

        for (name, content) in [
            ("empty.pem", ""),
            (
                "key.pem",
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            ),
            ("garbage.pem", "not a certificate at all\n"),
        ] {
            let path = dir.path().join(name);
            std::fs::write(&path, content).unwrap();
            let err = B::default().token("t").ca_file(&path).config().unwrap_err();
            assert!(
                err.to_string().contains("holds no certificate"),
                "{name}: {err}"
            );
        }
    }

    #[test]
    fn spool_settings_are_read_and_checked() {
        let err = B::default()
            .with_lookup(env(&[("LEITSTAND_SPOOL_MAX_BYTES", "100MiB")]))
            .unwrap_err();
        assert!(
            err.to_string().contains("LEITSTAND_SPOOL_MAX_BYTES"),
            "{err}"
        );
        let err = B::default()
            .token("t")
            .spool_max_bytes(0)
            .config()
            .unwrap_err();
        assert!(err.to_string().contains("spool_max_bytes"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("spool");
        let lookup = env(&[
            ("LEITSTAND_SPOOL_DIR", spool.to_str().unwrap()),
            ("LEITSTAND_SPOOL_MAX_BYTES", "4096"),
        ]);
        let builder = B::default().token("t").with_lookup(lookup).unwrap();
        assert_eq!(builder.spool_max_bytes, 4096);
        let result = builder.config();
        if cfg!(feature = "spool") {
            result.unwrap();
            assert!(spool.join("queue").is_dir(), "created at build");
        } else {
            let text = result.unwrap_err().to_string();
            assert!(
                text.contains("LEITSTAND_SPOOL_DIR") && text.contains("`spool` feature"),
                "{text}"
            );
        }
    }

    #[test]
    fn debug_output_never_shows_the_token() {
        let builder = B::default().token("very-secret");
        assert!(!format!("{builder:?}").contains("very-secret"));
        let config = builder.config().unwrap();
        assert!(!format!("{config:?}").contains("very-secret"));
    }
}
