//! `cargo bench -p generated`: one decision through the generated tables against a plain
//! run-time search over the same (exit, partition) pairs, measured in the same run, with
//! the ratio printed. Each figure is the median of several rounds.

use std::hint::black_box;
use std::time::Instant;

use generated::plan;
use runtime::plan::{ExitCosts, Link, decide};

/// Bandwidths (50 kbit/s … 1.5 Mbit/s), deadlines (50 ms … 1 s) and round trips cycled
/// through, so no branch predictor learns one answer.
fn queries() -> Vec<(f64, f64, f64)> {
    (0..256)
        .map(|i| {
            let bandwidth = 50e3 + (i * 97 % 256) as f64 * 5.7e3;
            let deadline = 50.0 + (i * 37 % 256) as f64 * 3.7;
            let rtt = (i % 7) as f64;
            (bandwidth, deadline, rtt)
        })
        .collect()
}

/// Median nanoseconds per call of `f` over the queries.
fn ns_per_decision(mut f: impl FnMut(f64, f64, f64) -> usize) -> f64 {
    let q = queries();
    let mut rounds: Vec<f64> = (0..15)
        .map(|_| {
            let reps = 200;
            let start = Instant::now();
            let mut sink = 0;
            for _ in 0..reps {
                for &(b, d, r) in &q {
                    sink += f(black_box(b), black_box(d), black_box(r));
                }
            }
            black_box(sink);
            start.elapsed().as_nanos() as f64 / (reps * q.len()) as f64
        })
        .collect();
    rounds.sort_by(f64::total_cmp);
    rounds[rounds.len() / 2]
}

fn main() {
    let exits: Vec<ExitCosts> = ExitCosts::from_tables(&plan::TABLES, &plan::FAMILIES);
    let tables = ns_per_decision(|b, d, r| plan::decide(b, r, d).partition);
    let search = ns_per_decision(|b, d, r| {
        decide(
            &exits,
            Link {
                bandwidth_bps: b,
                rtt_ms: r,
            },
            d,
        )
        .partition
    });
    println!(
        "decision (plan {}, {} exits)",
        &plan::DIGEST[..12],
        plan::EXITS
    );
    println!("  generated tables  {tables:8.1} ns");
    println!("  run-time search   {search:8.1} ns");
    println!("  search / tables   {:8.1}x", search / tables);
}
