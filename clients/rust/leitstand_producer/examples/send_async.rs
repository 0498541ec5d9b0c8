//! The async client: send one event to a running leitstand and print its answer.
//!
//! ```sh
//! LEITSTAND_TOKEN=dev cargo run --no-default-features --features async --example send_async
//! ```

use std::process::ExitCode;

use leitstand_producer::AsyncClient;
use serde_json::json;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let domain = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "aussen".to_owned());
    let client = match AsyncClient::from_env() {
        Ok(client) => client,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    let event = json!({"event": "example", "status": "ok", "client": "async"});
    match client.send_one(&domain, &event).await {
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
