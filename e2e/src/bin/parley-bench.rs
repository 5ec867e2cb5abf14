//! `parley-bench`: load against a chat-node, printing figures (never asserting). The
//! programs live in `parley_e2e::bench` (`e2e/src/bench/`); `--help` lists them.
//!
//! ```text
//! cargo run --release -p parley-e2e --bin parley-bench -- --url http://127.0.0.1:8080 \
//!     --senders 20 --listeners 200 --messages 50
//! cargo run -p parley-e2e --bin parley-bench -- hostile --node-bin target/debug/chat-node [--check]
//! target/release/parley-bench compare fanout --system parley --addr 127.0.0.1:8095 --pid PID
//! ```
//!
//! `compare` runs on a current-thread runtime (the driver is pinned to one core); the
//! other programs on a multi-threaded one.

use clap::Parser as _;

fn main() -> std::process::ExitCode {
    let cli = parley_e2e::bench::Cli::parse();
    let mut runtime = if cli.single_threaded() {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    runtime
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(parley_e2e::bench::main(cli))
}
