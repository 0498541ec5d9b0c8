//! Send one event to a running leitstand and print its answer.
//!
//! ```sh
//! make dev                                   # in the repository root: server on :8788, token `dev`
//! LEITSTAND_TOKEN=dev cargo run --example send            # → data/aussen.jsonl
//! LEITSTAND_TOKEN=dev cargo run --example send -- innen   # → data/innen.jsonl
//! ```
//!
//! Reads `LEITSTAND_URL` (default `http://localhost:8788`) and `LEITSTAND_TOKEN`.

use std::process::ExitCode;

use leitstand_producer::Client;
use serde_json::json;

fn main() -> ExitCode {
    let domain = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "aussen".to_owned());
    let event = json!({
        "event": "example",
        "status": "ok",
        "source": "leitstand_producer/examples/send.rs",
    });
    let result = Client::from_env().and_then(|client| client.send_one(&domain, &event));
    match result {
        Ok(receipt) => {
            println!(
                "leitstand answered: status={} accepted={} domain={}",
                receipt.status, receipt.accepted, receipt.domain
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
