//! `compare report FILE.jsonl`: for every record key (`idle conns=1000`, `fanout 10x100
//! rate=2000`, ...) and metric, the median over the runs of each system and the ratio
//! Parley / Centrifugo. The sweep's intermediate steps are left out (their rates differ
//! per system); its final record holds the highest rate sustained.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context as _;
use serde_json::Value;

/// The settings of `report`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The JSONL file the scenarios appended to.
    pub file: PathBuf,
}

/// The median of `v` (the mean of the middle two for an even count); `None` when empty.
pub fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Values per (key, metric) and system, keys in the order they first appear.
type Table = (
    Vec<String>,
    BTreeMap<(String, String), BTreeMap<String, Vec<f64>>>,
);

/// Reads the records of `text` (one JSON object a line; bad lines are skipped).
pub fn collect(text: &str) -> Table {
    let mut order: Vec<String> = Vec::new();
    let mut values: BTreeMap<(String, String), BTreeMap<String, Vec<f64>>> = BTreeMap::new();
    for line in text.lines() {
        let Ok(rec) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let (Some(key), Some(system), Some(metrics)) = (
            rec["key"].as_str(),
            rec["system"].as_str(),
            rec["metrics"].as_object(),
        ) else {
            continue;
        };
        if key.starts_with("fanout-sweep-step") {
            continue;
        }
        if !order.iter().any(|k| k == key) {
            order.push(key.to_owned());
        }
        for (m, v) in metrics {
            if let Some(v) = v.as_f64() {
                values
                    .entry((key.to_owned(), m.clone()))
                    .or_default()
                    .entry(system.to_owned())
                    .or_default()
                    .push(v);
            }
        }
    }
    (order, values)
}

/// Prints the table of medians.
pub fn run(a: &Args) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&a.file)
        .with_context(|| format!("reading {}", a.file.display()))?;
    let (order, mut values) = collect(&text);
    println!(
        "{:<34} {:<24} {:>14} {:>14} {:>8}",
        "scenario", "metric (median of runs)", "parley", "centrifugo", "P/C"
    );
    for key in &order {
        let metrics: Vec<String> = values
            .keys()
            .filter(|(k, _)| k == key)
            .map(|(_, m)| m.clone())
            .collect();
        for m in metrics {
            let by_system = values.get_mut(&(key.clone(), m.clone())).expect("listed");
            let mut med = |s: &str| by_system.get_mut(s).and_then(|v| median(v));
            let (p, c) = (med("parley"), med("centrifugo"));
            let n = by_system.values().map(Vec::len).max().unwrap_or(0);
            let cell = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.3}"));
            let ratio = match (p, c) {
                (Some(p), Some(c)) if c != 0.0 => format!("{:.2}", p / c),
                _ => "-".to_owned(),
            };
            println!(
                "{key:<34} {:<24} {:>14} {:>14} {ratio:>8}",
                format!("{m} (n={n})"),
                cell(p),
                cell(c)
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&mut []), None);
    }

    #[test]
    fn records_are_grouped_by_key_metric_and_system() {
        let text = r#"{"system":"parley","key":"idle conns=10","metrics":{"kib_per_conn":12.0}}
{"system":"centrifugo","key":"idle conns=10","metrics":{"kib_per_conn":6.0}}
not json
{"system":"parley","key":"fanout-sweep-step 1x1 rate=5","metrics":{"x":1}}
{"system":"parley","key":"idle conns=10","metrics":{"kib_per_conn":14.0}}"#;
        let (order, values) = collect(text);
        assert_eq!(order, ["idle conns=10"]);
        let v = &values[&("idle conns=10".to_owned(), "kib_per_conn".to_owned())];
        assert_eq!(v["parley"], [12.0, 14.0]);
        assert_eq!(v["centrifugo"], [6.0]);
    }
}
