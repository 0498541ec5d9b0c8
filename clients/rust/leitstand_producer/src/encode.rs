//! Events → NDJSON request bodies, each under the body and event limits.

use std::io::Write;

use flate2::write::GzEncoder;
use flate2::Compression;
use serde::Serialize;

use crate::error::Error;

/// One request's worth of events, ready to send (and to re-send unchanged on a retry).
#[derive(Debug, Clone)]
pub(crate) struct Chunk {
    /// NDJSON, gzip-compressed when `gzip` is set.
    pub body: Vec<u8>,
    pub gzip: bool,
    pub events: usize,
    /// Sent as `Idempotency-Key` on every attempt of this request.
    pub key: String,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub max_body_bytes: usize,
    pub max_events: usize,
    pub gzip: bool,
}

/// One event as a compact JSON line with its `\n`.
pub(crate) fn encode_line<T: Serialize + ?Sized>(
    index: usize,
    event: &T,
    limits: Limits,
) -> Result<Vec<u8>, Error> {
    let mut line =
        serde_json::to_vec(event).map_err(|source| Error::Serialization { index, source })?;
    // serde_json writes objects compactly, starting with `{`; anything else is not an event.
    if line.first() != Some(&b'{') {
        return Err(Error::not_an_object(index));
    }
    line.push(b'\n');
    if line.len() > limits.max_body_bytes {
        return Err(Error::TooLarge {
            detail: format!(
                "event #{index} is {} bytes as JSON, more than the body limit of {} bytes",
                line.len(),
                limits.max_body_bytes
            ),
        });
    }
    Ok(line)
}

/// Lazily cuts a stream of events into chunks, so a huge batch is never all in memory.
pub(crate) struct Chunker<I> {
    events: I,
    limits: Limits,
    next_index: usize,
    /// The line that did not fit into the previous chunk.
    carry: Option<Vec<u8>>,
    failed: bool,
}

impl<I> Chunker<I> {
    pub fn new(events: I, limits: Limits) -> Self {
        Chunker {
            events,
            limits,
            next_index: 0,
            carry: None,
            failed: false,
        }
    }
}

impl<I, T> Iterator for Chunker<I>
where
    I: Iterator<Item = T>,
    T: Serialize,
{
    type Item = Result<Chunk, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let mut body = Vec::new();
        let mut count = 0;
        if let Some(line) = self.carry.take() {
            body.extend_from_slice(&line);
            count = 1;
        }
        while count < self.limits.max_events {
            let Some(event) = self.events.next() else {
                break;
            };
            let index = self.next_index;
            self.next_index += 1;
            let line = match encode_line(index, &event, self.limits) {
                Ok(line) => line,
                Err(err) => {
                    self.failed = true;
                    return Some(Err(err));
                }
            };
            if body.len() + line.len() > self.limits.max_body_bytes {
                self.carry = Some(line);
                break;
            }
            body.extend_from_slice(&line);
            count += 1;
        }
        (count > 0).then(|| Ok(chunk(body, count, self.limits.gzip)))
    }
}

/// Wrap an NDJSON body (at most the body limit) as a chunk with a fresh idempotency key.
/// With gzip, the compressed body is used unless it came out larger (incompressible data).
pub(crate) fn chunk(body: Vec<u8>, events: usize, gzip: bool) -> Chunk {
    let key = uuid::Uuid::new_v4().to_string();
    if gzip {
        let compressed = compress(&body);
        if compressed.len() <= body.len() {
            return Chunk {
                body: compressed,
                gzip: true,
                events,
                key,
            };
        }
    }
    Chunk {
        body,
        gzip: false,
        events,
        key,
    }
}

fn compress(data: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::with_capacity(data.len() / 4), Compression::fast());
    encoder
        .write_all(data)
        .expect("writing to a Vec never fails");
    encoder.finish().expect("writing to a Vec never fails")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};
    use std::io::Read;

    fn limits(max_body_bytes: usize, max_events: usize) -> Limits {
        Limits {
            max_body_bytes,
            max_events,
            gzip: false,
        }
    }

    fn lines(chunk: &Chunk) -> Vec<Value> {
        let mut text = String::new();
        if chunk.gzip {
            flate2::read::GzDecoder::new(&chunk.body[..])
                .read_to_string(&mut text)
                .unwrap();
        } else {
            text = String::from_utf8(chunk.body.clone()).unwrap();
        }
        assert!(text.ends_with('\n'));
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn splits_by_event_count_keeping_order() {
        let events: Vec<Value> = (0..10).map(|i| json!({ "n": i })).collect();
        let chunks: Vec<Chunk> = Chunker::new(events.iter(), limits(1 << 20, 3))
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            chunks.iter().map(|c| c.events).collect::<Vec<_>>(),
            [3, 3, 3, 1]
        );
        let all: Vec<Value> = chunks.iter().flat_map(lines).collect();
        assert_eq!(all, events);
        let mut keys: Vec<&str> = chunks.iter().map(|c| c.key.as_str()).collect();
        keys.dedup();
        assert_eq!(keys.len(), 4, "every request has its own idempotency key");
    }

    #[test]
    fn splits_by_body_size_and_never_exceeds_it() {
        let events: Vec<Value> = (0..1000)
            .map(|i| json!({ "n": i, "pad": "x".repeat(i % 50) }))
            .collect();
        let max = 1000;
        let chunks: Vec<Chunk> = Chunker::new(events.iter(), limits(max, 10_000))
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(chunks.len() > 10);
        for chunk in &chunks {
            assert!(chunk.body.len() <= max, "{}", chunk.body.len());
        }
        for chunk in &chunks[..chunks.len() - 1] {
            assert!(
                chunk.body.len() > max - 80,
                "chunks are filled: {}",
                chunk.body.len()
            );
        }
        let all: Vec<Value> = chunks.iter().flat_map(lines).collect();
        assert_eq!(all, events);
    }

    #[test]
    fn an_exactly_fitting_body_is_one_chunk() {
        let line = serde_json::to_vec(&json!({"a": 1})).unwrap().len() + 1;
        let events = vec![json!({"a": 1}); 4];
        let chunks: Vec<Chunk> = Chunker::new(events.iter(), limits(4 * line, 4))
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].body.len(), 4 * line);
    }

    #[test]
    fn an_event_larger_than_the_limit_is_reported_before_sending() {
        let events = [json!({"a": 1}), json!({"big": "y".repeat(2000)})];
        let mut chunker = Chunker::new(events.iter(), limits(1000, 10));
        let err = chunker.next().unwrap().unwrap_err();
        assert!(
            matches!(&err, Error::TooLarge { detail }
                if detail.starts_with("event #1 is 2011 bytes") && detail.contains("1000 bytes")),
            "{err}"
        );
        assert!(chunker.next().is_none());
    }

    #[test]
    fn non_objects_are_refused_with_their_index() {
        let events = [json!({"a": 1}), json!([1, 2])];
        let err = Chunker::new(events.iter(), limits(1000, 10))
            .collect::<Result<Vec<_>, _>>()
            .unwrap_err();
        assert!(
            matches!(err, Error::Serialization { index: 1, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("JSON object"), "{err}");

        let mut bad = std::collections::HashMap::new();
        bad.insert(vec![1u8], 2); // a map with non-string keys cannot be JSON
        let err = encode_line(0, &bad, limits(1000, 10)).unwrap_err();
        assert!(
            matches!(err, Error::Serialization { index: 0, .. }),
            "{err}"
        );
    }

    #[test]
    fn gzip_compresses_and_round_trips() {
        let events: Vec<Value> = (0..500).map(|i| json!({"event": "tick", "n": i})).collect();
        let lim = Limits {
            gzip: true,
            ..limits(1 << 20, 10_000)
        };
        let chunks: Vec<Chunk> = Chunker::new(events.iter(), lim)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(chunks.len(), 1);
        assert!(chunks[0].gzip);
        assert_eq!(&chunks[0].body[..2], &[0x1f, 0x8b]);
        assert_eq!(lines(&chunks[0]), events);
    }

    #[test]
    fn empty_input_makes_no_request() {
        let events: Vec<Value> = Vec::new();
        assert!(Chunker::new(events.iter(), limits(10, 10)).next().is_none());
    }
}
