//! Collected samples, their medians and ratios, and the markdown that presents them.

use crate::phases::Phase;
use crate::workloads::Workload;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::Duration;

/// An engine under comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// arbor's engine.
    Arbor,
    /// redb.
    Redb,
}

impl Side {
    fn index(self) -> usize {
        match self {
            Side::Arbor => 0,
            Side::Redb => 1,
        }
    }
}

/// Every measurement of a run: phase times, and space growth of the snapshot workload.
#[derive(Debug, Default)]
pub struct Results {
    times: BTreeMap<Phase, [Vec<Duration>; 2]>,
    space: [Vec<u64>; 2],
    notes: BTreeSet<String>,
}

impl Results {
    /// Records one timing of `phase` on `side`.
    pub fn time(&mut self, phase: Phase, side: Side, d: Duration) {
        self.times.entry(phase).or_default()[side.index()].push(d);
    }

    /// Records the bytes one snapshot workload added on `side`.
    pub fn space(&mut self, side: Side, bytes: u64) {
        self.space[side.index()].push(bytes);
    }

    /// Keeps a fact observed during a run; identical facts from several runs are kept once.
    pub fn note(&mut self, note: String) {
        self.notes.insert(note);
    }

    /// The facts observed during the runs.
    pub fn notes(&self) -> impl Iterator<Item = &str> {
        self.notes.iter().map(String::as_str)
    }

    /// The results as a markdown table: one row per workload, arbor median, redb
    /// median, their ratio and what it means.
    pub fn table(&self, w: &Workload) -> String {
        let mut out = String::from(
            "| workload | arbor (median) | redb (median) | arbor / redb | per-run ratios | verdict |\n\
             |---|--:|--:|--:|--:|---|\n",
        );
        for (&phase, [a, r]) in &self.times {
            let ops = phase.ops(w) as f64;
            let runs = spread(
                a.iter()
                    .zip(r)
                    .map(|(a, r)| a.as_secs_f64() / r.as_secs_f64()),
            );
            let (a, r) = (median(a, ops), median(r, ops));
            let per = if phase.ops(w) > 1 { " per txn" } else { "" };
            row(
                &mut out,
                &phase.describe(w),
                &format!("{}{per}", secs(a)),
                &format!("{}{per}", secs(r)),
                (a / r, &runs),
                ("faster", "slower"),
            );
        }
        let [a, r] = &self.space;
        if !a.is_empty() && !r.is_empty() {
            let to_f = |v: &Vec<u64>| -> Vec<f64> { v.iter().map(|&b| b as f64).collect() };
            let runs = spread(a.iter().zip(r).map(|(&a, &r)| a as f64 / r as f64));
            let (a, r) = (median_f(to_f(a)), median_f(to_f(r)));
            row(
                &mut out,
                "space added by the clone/savepoint workload",
                &bytes(a),
                &bytes(r),
                (a / r, &runs),
                ("smaller", "larger"),
            );
        }
        out
    }
}

/// Appends a table row; `ratio` is the ratio of medians and the range of the per-run
/// ratios, and `words` what a ratio below and above 1 means.
fn row(out: &mut String, what: &str, a: &str, r: &str, ratio: (f64, &str), words: (&str, &str)) {
    let (ratio, runs) = ratio;
    let verdict = if !ratio.is_finite() || ratio <= 0.0 {
        "n/a".to_string()
    } else if ratio <= 1.0 {
        format!("arbor {:.2}× {}", 1.0 / ratio, words.0)
    } else {
        format!("arbor {ratio:.2}× {}", words.1)
    };
    let _ = writeln!(
        out,
        "| {what} | {a} | {r} | {ratio:.2} | {runs} | {verdict} |"
    );
}

/// The range of the ratios of single runs, `min–max`, or the one ratio.
fn spread(ratios: impl Iterator<Item = f64>) -> String {
    let v: Vec<f64> = ratios.collect();
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    match v.len() {
        0 => "n/a".to_string(),
        1 => format!("{lo:.2}"),
        _ => format!("{lo:.2}–{hi:.2}"),
    }
}

fn median(samples: &[Duration], ops: f64) -> f64 {
    median_f(samples.iter().map(|d| d.as_secs_f64() / ops).collect())
}

/// The median; the mean of the middle two for an even count; NaN when empty.
fn median_f(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// Seconds in a readable unit.
fn secs(s: f64) -> String {
    if s < 1e-3 {
        format!("{:.1} µs", s * 1e6)
    } else if s < 1.0 {
        format!("{:.2} ms", s * 1e3)
    } else {
        format!("{s:.2} s")
    }
}

/// Bytes in a readable unit.
fn bytes(b: f64) -> String {
    if b < 1024.0 * 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{:.2} MiB", b / (1024.0 * 1024.0))
    }
}

#[cfg(test)]
mod tests {
    use super::{median_f, secs};

    #[test]
    fn medians() {
        assert_eq!(median_f(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median_f(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median_f(vec![]).is_nan());
    }

    #[test]
    fn units() {
        assert_eq!(secs(0.000_5), "500.0 µs");
        assert_eq!(secs(0.25), "250.00 ms");
        assert_eq!(secs(2.0), "2.00 s");
    }
}
