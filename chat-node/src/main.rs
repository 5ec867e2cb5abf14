use anyhow::Context as _;
use chat_node::config::{Command, Config, StartError};
use chat_node::{ShutdownSignals, node};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Logs go to stderr: stdout carries the one line tools read the address from, and a
    // warning logged before it (a data directory tightened at start) must not displace it.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn".into()),
        )
        .init();
    let config = match Config::from_args_and_files(std::env::args_os(), |k| std::env::var(k).ok()) {
        Ok(c) => c,
        // clap names the key of a malformed value (and prints --help and --version).
        Err(StartError::Arguments(e)) => e.exit(),
        Err(StartError::Config(e)) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    if config.command == Command::Migrate {
        return node::migrate_all(&config).await;
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding PARLEY_LISTEN={}", config.listen))?;
    let addr = listener.local_addr()?;
    if config.command == Command::Persist {
        println!("parley persister listening on http://{addr}");
        let mut signals = ShutdownSignals::new().context("installing signal handlers")?;
        return node::persist(config, listener, async move { signals.recv().await }).await;
    }
    let node = node::build(config, addr).await?;
    // One line on stdout that tools (and people) can read the address from.
    println!("parley chat-node listening on http://{addr}");
    tracing::info!(%addr, mode = ?node.chat.config().mode, "chat-node ready: open http://{addr}");
    // The first signal drains the node; a second one stops it at once (close 1001).
    let hard = node.chat.lifecycle().shutdown().clone();
    let mut signals = ShutdownSignals::new().context("installing signal handlers")?;
    node::serve(listener, node, async move {
        signals.recv().await;
        tokio::spawn(async move {
            signals.recv().await;
            hard.cancel();
        });
    })
    .await?;
    Ok(())
}
