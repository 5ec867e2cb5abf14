//! `parley-e2e-kube`: the end-to-end scenario of `parley_e2e::kube` against any cluster
//! (`e2e/kind/run` runs it against kind). `--help` lists the inputs; the last line printed is
//! the summary of figures. Exit status 0 only when every step passed.

use clap::Parser as _;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let options = parley_e2e::kube::Options::parse();
    match parley_e2e::kube::run(&options).await {
        Ok(summary) => {
            println!("{summary}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("parley-e2e-kube failed: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
