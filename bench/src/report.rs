//! Raw results (one JSON line per run or per process) and the summary table.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

pub const OURS: &str = "ours";
pub const SENTINEL: &str = "sentinel";

/// One measurement: a failover run, or one process in a footprint run.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Record {
    /// `kill`, `host-loss`, `switchover`, `footprint` or `scaling`.
    pub scenario: String,
    /// [`OURS`] or [`SENTINEL`].
    pub system: String,
    /// Detection timeout (`1s`), `default`, or what a footprint figure is of.
    pub config: String,
    pub run: usize,
    /// A configuration of one system that differs from the equal-timeout one, e.g.
    /// `defaults` or `redis-down-after 50ms`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// For per-process figures: `data agent`, `witness`, `coordinator`, `sentinel`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<String>,
    pub metrics: BTreeMap<String, f64>,
    /// UTC times of a failover run's moments (`event`, `first new ack`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub timeline: BTreeMap<String, String>,
    /// Why the run produced no figures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Record {
    pub fn new(scenario: &str, system: &str, config: &str, run: usize) -> Record {
        Record {
            scenario: scenario.into(),
            system: system.into(),
            config: config.into(),
            run,
            ..Record::default()
        }
    }

    pub fn with_role(mut self, role: &str, process: &str) -> Record {
        self.role = Some(role.into());
        self.process = Some(process.into());
        self
    }

    pub fn metric(mut self, name: &str, value: f64) -> Record {
        self.metrics.insert(name.into(), value);
        self
    }
}

/// Appends records to a JSON-lines file as they are produced, so an interrupted
/// benchmark keeps what it measured.
pub struct JsonLines {
    out: BufWriter<File>,
}

impl JsonLines {
    pub fn create(path: &Path) -> Result<JsonLines> {
        let file = File::create(path).with_context(|| format!("create {}", path.display()))?;
        Ok(JsonLines {
            out: BufWriter::new(file),
        })
    }

    pub fn write(&mut self, record: &Record) -> Result<()> {
        serde_json::to_writer(&mut self.out, record)?;
        self.out.write_all(b"\n")?;
        self.out.flush()?;
        Ok(())
    }
}

/// min, median, max of `values` (median of an even count: the mean of the middle two).
pub fn stats(values: &[f64]) -> Option<(f64, f64, f64)> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let (first, last) = (*v.first()?, *v.last()?);
    let mid = v.len() / 2;
    let median = if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    };
    Some((first, median, last))
}

fn fmt_value(metric: &str, v: f64) -> String {
    if metric.contains('%') {
        format!("{v:.2}")
    } else if metric.contains("MiB") {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

/// (scenario, config, metric) → rows of (system, label) → values, in first-seen order.
type Groups = Vec<((String, String, String), Vec<((String, String), Vec<f64>)>)>;

fn group(records: &[Record]) -> Groups {
    let mut groups: Groups = Vec::new();
    for r in records.iter().filter(|r| r.error.is_none()) {
        for (metric, value) in &r.metrics {
            let key = (r.scenario.clone(), r.config.clone(), metric.clone());
            let role = r.role.as_ref().filter(|role| **role != r.system);
            let who = [Some(&r.system), r.variant.as_ref(), role]
                .into_iter()
                .flatten()
                .cloned()
                .collect::<Vec<_>>()
                .join(" ");
            let row = (r.system.clone(), who);
            let index = match groups.iter().position(|(k, _)| *k == key) {
                Some(i) => i,
                None => {
                    groups.push((key, Vec::new()));
                    groups.len() - 1
                }
            };
            let rows = &mut groups[index].1;
            match rows.iter_mut().find(|(k, _)| *k == row) {
                Some((_, values)) => values.push(*value),
                None => rows.push((row, vec![*value])),
            }
        }
    }
    // Scenarios in the order they run (peak RSS of failover runs with the other footprint
    // figures), keeping first-seen order within each.
    let rank = |scenario: &str| {
        ["kill", "host-loss", "switchover", "footprint", "scaling"]
            .iter()
            .position(|s| *s == scenario)
            .unwrap_or(usize::MAX)
    };
    groups.sort_by_key(|((scenario, _, _), _)| rank(scenario));
    // Sentinel rows after ours in each group, so a ratio reads down the table.
    for (_, rows) in &mut groups {
        rows.sort_by_key(|((system, _), _)| system != OURS);
    }
    groups
}

/// The summary: min / median / max per system (and process role), and the ratio of
/// medians ours/Sentinel where Sentinel was measured in the same scenario and config.
pub fn table(records: &[Record]) -> String {
    let mut out = format!(
        "{:<10} {:<15} {:<25} {:<29} {:>3} {:>9} {:>9} {:>9} {:>8}\n",
        "scenario", "config", "metric", "system", "n", "min", "median", "max", "ours/sen"
    );
    out.push_str(&"-".repeat(out.len().saturating_sub(1)));
    out.push('\n');
    let mut last_group: Option<(String, String)> = None;
    for ((scenario, config, metric), rows) in group(records) {
        let sentinel_median = rows
            .iter()
            .find(|((system, _), _)| system == SENTINEL)
            .and_then(|(_, v)| stats(v))
            .map(|(_, median, _)| median);
        let this_group = (scenario.clone(), config.clone());
        let show_group = last_group.as_ref() != Some(&this_group);
        last_group = Some(this_group);
        for (i, ((system, who), values)) in rows.iter().enumerate() {
            let Some((min, median, max)) = stats(values) else {
                continue;
            };
            let ratio = match sentinel_median {
                Some(s) if system == OURS && s > 0.0 => format!("{:.2}", median / s),
                _ => String::new(),
            };
            let (sc, cf, me) = match (i, show_group) {
                (0, true) => (scenario.as_str(), config.as_str(), metric.as_str()),
                (0, false) => ("", "", metric.as_str()),
                _ => ("", "", ""),
            };
            out.push_str(&format!(
                "{sc:<10} {cf:<15} {me:<25} {who:<29} {:>3} {:>9} {:>9} {:>9} {ratio:>8}\n",
                values.len(),
                fmt_value(metric.as_str(), min),
                fmt_value(metric.as_str(), median),
                fmt_value(metric.as_str(), max),
            ));
        }
    }
    let failed: Vec<&Record> = records.iter().filter(|r| r.error.is_some()).collect();
    if !failed.is_empty() {
        out.push_str(&format!("\n{} failed runs:\n", failed.len()));
        for r in failed {
            out.push_str(&format!(
                "  {} {} {} run {}: {}\n",
                r.scenario,
                r.system,
                r.config,
                r.run,
                r.error.as_deref().unwrap_or_default()
            ));
        }
    }
    out
}

/// The scaling scenario by cluster size: medians of the coordinator's and of the other
/// data agents' idle CPU and RSS and of the failover time, then how each grows per added
/// data node (the least-squares slope over the sizes measured). `None` without two sizes.
pub fn scaling_table(records: &[Record]) -> Option<String> {
    // (data nodes, coordinator CPU, coordinator RSS, agent CPU, agent RSS, failover)
    let columns: [(&str, Option<&str>, &str); 5] = [
        ("coord CPU %", Some("coordinator"), "CPU %"),
        ("coord RSS MiB", Some("coordinator"), "RSS MiB"),
        ("agent CPU %", Some("data agent"), "CPU %"),
        ("agent RSS MiB", Some("data agent"), "RSS MiB"),
        ("failover ms", None, "failure to new ack ms"),
    ];
    let mut sizes: Vec<usize> = records
        .iter()
        .filter(|r| r.scenario == "scaling" && r.error.is_none())
        .filter_map(|r| r.config.strip_suffix(" data nodes")?.parse().ok())
        .collect();
    sizes.sort_unstable();
    sizes.dedup();
    if sizes.len() < 2 {
        return None;
    }
    let median = |n: usize, role: Option<&str>, metric: &str| {
        let config = format!("{n} data nodes");
        let values: Vec<f64> = records
            .iter()
            .filter(|r| r.scenario == "scaling" && r.error.is_none() && r.config == config)
            .filter(|r| r.role.as_deref() == role)
            .filter_map(|r| r.metrics.get(metric).copied())
            .collect();
        stats(&values).map(|(_, m, _)| m)
    };
    let mut out = format!("{:<12}", "data nodes");
    for (title, _, _) in &columns {
        out.push_str(&format!(" {title:>14}"));
    }
    out.push('\n');
    let mut series: Vec<Vec<(f64, f64)>> = vec![Vec::new(); columns.len()];
    for &n in &sizes {
        out.push_str(&format!("{n:<12}"));
        for (i, (_, role, metric)) in columns.iter().enumerate() {
            match median(n, *role, metric) {
                Some(v) => {
                    series[i].push((n as f64, v));
                    out.push_str(&format!(" {:>14}", fmt_value(metric, v)));
                }
                None => out.push_str(&format!(" {:>14}", "-")),
            }
        }
        out.push('\n');
    }
    out.push_str(&format!("{:<12}", "per node"));
    for (points, (_, _, metric)) in series.iter().zip(&columns) {
        let cell = slope(points).map_or_else(
            || "-".to_string(),
            |s| {
                if metric.contains('%') {
                    format!("{s:+.3}")
                } else if metric.contains("MiB") {
                    format!("{s:+.2}")
                } else {
                    format!("{s:+.1}")
                }
            },
        );
        out.push_str(&format!(" {cell:>14}"));
    }
    out.push('\n');
    Some(out)
}

/// Least-squares slope of y over x; `None` with fewer than two distinct x.
fn slope(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_take_the_middle() {
        assert_eq!(stats(&[3.0, 1.0, 2.0]), Some((1.0, 2.0, 3.0)));
        assert_eq!(stats(&[4.0, 1.0, 2.0, 3.0]), Some((1.0, 2.5, 4.0)));
        assert_eq!(stats(&[]), None);
    }

    #[test]
    fn table_shows_ratio_of_medians_and_failures() {
        let m = "write unavailability ms";
        let records = vec![
            Record::new("kill", OURS, "1s", 1).metric(m, 400.0),
            Record::new("kill", OURS, "1s", 2).metric(m, 500.0),
            Record::new("kill", SENTINEL, "1s", 1).metric(m, 2000.0),
            Record {
                error: Some("boom".into()),
                ..Record::new("kill", SENTINEL, "1s", 2)
            },
        ];
        let t = table(&records);
        let ours = t.lines().find(|l| l.contains(" ours ")).expect("ours row");
        assert!(
            ours.contains("450") && ours.trim_end().ends_with("0.23"),
            "{t}"
        );
        assert!(t.contains("1 failed runs") && t.contains("boom"), "{t}");
    }

    #[test]
    fn scaling_table_gives_medians_and_growth_per_node() {
        let mut records = Vec::new();
        for (n, coord_cpu, failover) in [(2, 1.0, 300.0), (4, 2.0, 400.0), (8, 4.0, 600.0)] {
            let config = format!("{n} data nodes");
            records.push(
                Record::new("scaling", OURS, &config, 1)
                    .with_role("coordinator", "data-1 agent")
                    .metric("CPU %", coord_cpu)
                    .metric("RSS MiB", 6.0),
            );
            records.push(
                Record::new("scaling", OURS, &config, 1).metric("failure to new ack ms", failover),
            );
        }
        let t = scaling_table(&records).expect("three sizes");
        let last = t.lines().last().expect("growth row");
        // CPU 1, 2, 4 at 2, 4, 8 nodes: slope 0.5 per node; RSS flat; failover 50 ms.
        assert!(last.starts_with("per node"), "{t}");
        assert!(
            last.contains("+0.500") && last.contains("+0.00") && last.contains("+50.0"),
            "{t}"
        );
        assert!(t.lines().nth(3).is_some_and(|l| l.starts_with("8 ")), "{t}");
        assert_eq!(scaling_table(&records[..2]), None);
    }
}
