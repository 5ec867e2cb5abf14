//! `parley-bench`: load against a chat-node, printing figures (never asserting). The
//! programs live in `parley_e2e::bench` (`e2e/src/bench/`); `--help` lists them.
//!
//! ```text
//! cargo run --release -p parley-e2e --bin parley-bench -- --url http://127.0.0.1:8080 \
//!     --senders 20 --listeners 200 --messages 50
//! cargo run -p parley-e2e --bin parley-bench -- hostile --node-bin target/debug/chat-node [--check]
//! ```

use clap::Parser as _;

#[tokio::main(flavor = "multi_thread")]
async fn main() -> std::process::ExitCode {
    parley_e2e::bench::main(parley_e2e::bench::Cli::parse()).await
}
