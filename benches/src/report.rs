//! Collecting and printing results.

use std::time::Duration;

/// A throughput measurement.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rate {
    /// Messages delivered.
    pub(crate) delivered: u64,
    /// Messages dropped on the way (client limits, slow consumers).
    pub(crate) dropped: u64,
    pub(crate) elapsed: Duration,
}

impl Rate {
    fn per_sec(&self) -> f64 {
        self.delivered as f64 / self.elapsed.as_secs_f64()
    }
}

#[derive(Debug, Default)]
pub(crate) struct Report {
    rows: Vec<String>,
}

impl Report {
    pub(crate) fn rate(&mut self, name: &str, size: usize, r: Rate) {
        let mbs = r.per_sec() * size as f64 / 1e6;
        let row = format!(
            "| {name} | {:.0} msg/s | {mbs:.1} MB/s | {} delivered, {} dropped |",
            r.per_sec(),
            r.delivered,
            r.dropped
        );
        eprintln!("{row}");
        self.rows.push(row);
    }

    pub(crate) fn latency(&mut self, name: &str, mut samples: Vec<Duration>) {
        samples.sort();
        let pct = |p: f64| samples[((samples.len() - 1) as f64 * p) as usize];
        let total: Duration = samples.iter().sum();
        let row = format!(
            "| {name} | p50 {:.1} µs | p99 {:.1} µs | {} round trips, {:.0}/s one at a time |",
            pct(0.5).as_secs_f64() * 1e6,
            pct(0.99).as_secs_f64() * 1e6,
            samples.len(),
            samples.len() as f64 / total.as_secs_f64()
        );
        eprintln!("{row}");
        self.rows.push(row);
    }

    /// A row already formatted.
    pub(crate) fn row(&mut self, row: String) {
        eprintln!("{row}");
        self.rows.push(row);
    }

    pub(crate) fn print(&self) {
        println!("| what | rate or p50 | bytes or p99 | notes |");
        println!("|---|---|---|---|");
        for r in &self.rows {
            println!("{r}");
        }
    }
}
