//! What the server answered to a successful send.

use std::fmt;

/// The server's answer to a successful send: `202 {"status":"accepted","accepted":N,"domain":"..."}`.
///
/// For a batch sent in several requests, `accepted` is the sum and `requests` the count.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Receipt {
    /// The server's `status` (`accepted`).
    pub status: String,
    /// Events the server stored (and fsynced) for this send.
    pub accepted: u64,
    /// The domain as the server normalised it (trimmed, lower case).
    pub domain: String,
    /// HTTP requests that carried the events (0 for an empty batch).
    pub requests: usize,
    /// Whether the server replayed an earlier answer for at least one request
    /// (`Idempotent-Replayed: true`): a retry found the events already stored.
    pub replayed: bool,
    /// Events of this send that could not be delivered now and are kept in the spool (feature
    /// `spool`), to be sent later under their Idempotency-Key; always 0 without a spool.
    /// `status` is `spooled` when nothing was stored now.
    pub spooled: u64,
}

impl Receipt {
    /// The receipt of a batch with no events: nothing was sent.
    pub(crate) fn empty(domain: &str) -> Receipt {
        Receipt {
            status: "accepted".to_owned(),
            accepted: 0,
            domain: domain.to_owned(),
            requests: 0,
            replayed: false,
            spooled: 0,
        }
    }

    /// A request's events went to the spool instead of the server.
    #[cfg_attr(not(feature = "spool"), allow(dead_code))]
    pub(crate) fn spooled(domain: &str, events: usize) -> Receipt {
        Receipt {
            status: "spooled".to_owned(),
            spooled: events as u64,
            ..Receipt::empty(domain)
        }
    }

    /// Read a 2xx answer. The server's JSON is used when it is there; any 2xx means the whole
    /// request was stored (batches are all-or-nothing), so a body without the fields falls back
    /// to the request's own numbers.
    pub(crate) fn from_answer(body: &[u8], replayed: bool, events: usize, domain: &str) -> Receipt {
        #[derive(serde::Deserialize)]
        struct Accepted {
            status: Option<String>,
            accepted: Option<u64>,
            domain: Option<String>,
        }
        let parsed = serde_json::from_slice::<Accepted>(body).ok();
        let parsed = parsed.as_ref();
        Receipt {
            status: parsed
                .and_then(|a| a.status.clone())
                .unwrap_or_else(|| "accepted".to_owned()),
            accepted: parsed.and_then(|a| a.accepted).unwrap_or(events as u64),
            domain: parsed
                .and_then(|a| a.domain.clone())
                .unwrap_or_else(|| domain.to_owned()),
            requests: 1,
            replayed,
            spooled: 0,
        }
    }

    /// Add the receipt of the next request of the same batch.
    pub(crate) fn add(&mut self, next: Receipt) {
        if self.requests == 0 && self.spooled == 0 {
            *self = next;
            return;
        }
        self.accepted += next.accepted;
        self.requests += next.requests;
        self.replayed |= next.replayed;
        self.spooled += next.spooled;
        if self.accepted > 0 {
            self.status = "accepted".to_owned();
        }
    }
}

impl fmt::Display for Receipt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.requests == 0 && self.spooled > 0 {
            return write!(
                f,
                "spooled: {} event(s) for domain {:?}, kept in the spool to be sent later",
                self.spooled, self.domain
            );
        }
        write!(
            f,
            "{}: {} event(s) for domain {:?} in {} request(s)",
            self.status, self.accepted, self.domain, self.requests
        )?;
        if self.replayed {
            write!(f, " (replayed: already stored by an earlier attempt)")?;
        }
        if self.spooled > 0 {
            write!(
                f,
                "; {} more kept in the spool to be sent later",
                self.spooled
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_servers_answer() {
        let body = br#"{"status":"accepted","accepted":3,"domain":"aussen"}"#;
        let receipt = Receipt::from_answer(body, false, 3, "Aussen ");
        assert_eq!(receipt.accepted, 3);
        assert_eq!(receipt.domain, "aussen");
        assert_eq!(receipt.status, "accepted");
        assert_eq!(
            receipt.to_string(),
            r#"accepted: 3 event(s) for domain "aussen" in 1 request(s)"#
        );
    }

    #[test]
    fn a_2xx_without_json_counts_what_was_sent() {
        let receipt = Receipt::from_answer(b"ok", true, 5, "aussen");
        assert_eq!((receipt.accepted, receipt.replayed), (5, true));
        assert_eq!(receipt.domain, "aussen");
    }

    #[test]
    fn batch_receipts_add_up() {
        let mut total = Receipt::empty("x");
        total.add(Receipt::from_answer(
            br#"{"accepted":2,"domain":"x"}"#,
            false,
            2,
            "x",
        ));
        total.add(Receipt::from_answer(
            br#"{"accepted":5,"domain":"x"}"#,
            true,
            5,
            "x",
        ));
        assert_eq!(
            (total.accepted, total.requests, total.replayed),
            (7, 2, true)
        );
    }
}
