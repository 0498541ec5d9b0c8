//! When to try again, and how long to wait first. Pure: no I/O, so both clients share it.

use std::time::{Duration, SystemTime};

/// Statuses that say "try again later": the request was not (or may not have been) handled.
/// Every other 4xx is final: the same request would fail the same way.
pub(crate) fn is_retryable_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RetryPolicy {
    /// Retries after the first attempt (`LEITSTAND_RETRIES`).
    pub retries: u32,
    /// The first backoff (`LEITSTAND_BACKOFF`); doubled for every further retry.
    pub backoff: Duration,
    /// No backoff grows beyond this.
    pub max_backoff: Duration,
    /// A `Retry-After` longer than this is not waited for: the send fails at once.
    pub max_retry_after: Duration,
}

impl RetryPolicy {
    /// The wait before retry number `retry` (0 = the first retry) when the server gave no
    /// `Retry-After`: `backoff * 2^retry`, capped, then "equal jitter" — a random point in the
    /// upper half — so that many producers failing together do not come back together.
    pub fn backoff(&self, retry: u32) -> Duration {
        let factor = 2f64.powi(retry.min(30) as i32);
        let base = (self.backoff.as_secs_f64() * factor).min(self.max_backoff.as_secs_f64());
        Duration::from_secs_f64(base * (0.5 + fastrand::f64() * 0.5))
    }

    /// The wait before retry number `retry`: the server's `Retry-After` when it sent one (never
    /// shorter), else the jittered backoff. `None`: do not retry.
    pub fn wait_before(&self, retry: u32, retry_after: Option<Duration>) -> Option<Duration> {
        if retry >= self.retries {
            return None;
        }
        match retry_after {
            Some(wait) if wait > self.max_retry_after => None,
            Some(wait) => Some(wait),
            None => Some(self.backoff(retry)),
        }
    }
}

/// `Retry-After` as delay-seconds (`120`, also `1.5`) or as an HTTP-date
/// (`Wed, 21 Oct 2015 07:28:00 GMT`), relative to `now`. A date in the past means "now".
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<f64>() {
        return (seconds.is_finite() && seconds >= 0.0)
            .then(|| Duration::from_secs_f64(seconds.min(1e9)));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            retries: 3,
            backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(4),
            max_retry_after: Duration::from_secs(60),
        }
    }

    #[test]
    fn retries_exactly_the_transient_statuses() {
        for status in [408, 429, 500, 502, 503, 504] {
            assert!(is_retryable_status(status), "{status}");
        }
        for status in [200, 202, 400, 401, 403, 404, 409, 413, 415, 422, 501, 507] {
            assert!(!is_retryable_status(status), "{status}");
        }
    }

    #[test]
    fn backoff_doubles_with_jitter_in_the_upper_half_and_is_capped() {
        let p = policy();
        for _ in 0..200 {
            for (retry, full_ms) in [(0, 500), (1, 1000), (2, 2000), (3, 4000), (10, 4000)] {
                let wait = p.backoff(retry).as_secs_f64() * 1000.0;
                assert!(
                    wait >= full_ms as f64 / 2.0 - 1e-6 && wait <= full_ms as f64 + 1e-6,
                    "retry {retry}: {wait} ms"
                );
            }
        }
        // Jitter: not every wait is the same.
        let waits: Vec<Duration> = (0..20).map(|_| p.backoff(1)).collect();
        assert!(waits.iter().any(|w| *w != waits[0]));
    }

    #[test]
    fn waits_for_retry_after_and_stops_after_the_last_retry() {
        let p = policy();
        let asked = Some(Duration::from_secs(2));
        assert_eq!(p.wait_before(0, asked), asked);
        assert_eq!(p.wait_before(2, asked), asked);
        assert_eq!(p.wait_before(3, asked), None);
        assert_eq!(p.wait_before(3, None), None);
        assert_eq!(p.wait_before(0, Some(Duration::from_secs(61))), None);
        let no_retries = RetryPolicy { retries: 0, ..p };
        assert_eq!(no_retries.wait_before(0, None), None);
    }

    #[test]
    fn parses_retry_after_seconds_and_http_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_460); // 07:27:40 GMT
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("1.5", now),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(Duration::from_secs(20))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        for junk in ["", "-1", "soon", "NaN", "inf"] {
            assert_eq!(parse_retry_after(junk, now), None, "{junk:?}");
        }
    }
}
