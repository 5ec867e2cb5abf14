use clap::Parser as _;

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    // One line that says what is wrong (and, where it can, how to fix it); no backtrace.
    if let Err(e) = operator::run::run(operator::run::Args::parse()).await {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
