use anyhow::Context as _;
use chat_node::{AppState, config::Config, run, shutdown_signal};
use clap::Parser as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let config = Config::parse();
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding PARLEY_LISTEN={}", config.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "parley chat-node (embedded) listening");
    println!(
        "Parley chat-node is up: http://{addr}/healthz (embedded mode; the chat itself lands next)"
    );
    run(listener, AppState::new(config), shutdown_signal()).await?;
    Ok(())
}
