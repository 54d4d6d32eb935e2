//! The tables `flotilla bench` prints.

use std::io::Write;

use super::failover::Distribution;
use super::load::LoadResult;

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

/// One row per workload run.
pub fn write_table(out: &mut dyn Write, rows: &[LoadResult]) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<8} {:<6} {:>7} {:>11} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7}  peak RSS MiB per node",
        "target",
        "load",
        "clients",
        "ops/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "p999 ms",
        "max ms",
        "errors",
    )?;
    for r in rows {
        let rss: Vec<String> = r.rss_peak_kib.values().map(|k| mib(*k)).collect();
        writeln!(
            out,
            "{:<8} {:<6} {:>7} {:>11.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>7}  {}",
            format!("{:?}", r.target).to_lowercase(),
            format!("{:?}", r.workload).to_lowercase(),
            r.clients,
            r.ops_per_s,
            r.latency.p50_ms,
            r.latency.p90_ms,
            r.latency.p99_ms,
            r.latency.p999_ms,
            r.latency.max_ms,
            r.errors,
            if rss.is_empty() { "—".to_string() } else { rss.join(" / ") }
        )?;
        if !r.error_kinds.is_empty() {
            writeln!(out, "         errors by kind: {:?}", r.error_kinds)?;
        }
    }
    Ok(())
}

pub fn print_table(rows: &[LoadResult]) {
    let _ = write_table(&mut std::io::stdout().lock(), rows);
}

pub fn print_table_stderr(rows: &[LoadResult]) {
    let _ = write_table(&mut std::io::stderr().lock(), rows);
}

pub fn print_failover(
    label: &str,
    runs: usize,
    elect: Option<Distribution>,
    unavail: Option<Distribution>,
) {
    println!("failover after kill -9 of the leader, {label}, {runs} runs (ms)");
    println!("{:<34} {:>4} {:>8} {:>8} {:>8} {:>8}", "", "n", "min", "median", "p90", "max");
    for (name, d) in [("time to a new leader", elect), ("unavailability (kill → write)", unavail)]
    {
        match d {
            Some(d) => println!(
                "{name:<34} {:>4} {:>8.1} {:>8.1} {:>8.1} {:>8.1}",
                d.n, d.min, d.median, d.p90, d.max
            ),
            None => println!("{name:<34} {:>4}", 0),
        }
    }
}
