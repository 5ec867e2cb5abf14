use anyhow::Context as _;
use chat_node::{config::Config, node, shutdown_signal};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let config = Config::from_args(std::env::args_os()).unwrap_or_else(|e| e.exit());
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding PARLEY_LISTEN={}", config.listen))?;
    let addr = listener.local_addr()?;
    let chat = node::embedded(config, addr).await?;
    // One line on stdout that tools (and people) can read the address from.
    println!("parley chat-node listening on http://{addr}");
    tracing::info!(%addr, data_dir = %chat.config.data_dir.display(), "embedded chat-node ready: open http://{addr}");
    node::serve(listener, chat, shutdown_signal()).await?;
    Ok(())
}
