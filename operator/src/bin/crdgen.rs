//! Writes the CRDs generated from the Rust types into `crds/` (or prints them with `--stdout`).

fn main() -> std::io::Result<()> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("crds");
    let stdout = std::env::args().any(|a| a == "--stdout");
    for (file, crd) in operator::crds::all() {
        let yaml = operator::crds::to_yaml(&crd);
        if stdout {
            println!("---\n{yaml}");
        } else {
            std::fs::write(dir.join(file), &yaml)?;
            let chart = dir
                .join("..")
                .join("charts")
                .join("parley-operator")
                .join("crds");
            std::fs::write(chart.join(file), &yaml)?;
            println!("wrote crds/{file} and charts/parley-operator/crds/{file}");
        }
    }
    Ok(())
}
