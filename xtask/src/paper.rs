//! The paper's own setting (Li, Zhou, Chen, MECOMM 2018; journal version IEEE TWC 2020),
//! computed, not measured: B-AlexNet on CIFAR-10 (3×32×32 input), the paper's Table II
//! latency models (Raspberry Pi 3 device, desktop edge; DESIGN.md §4, columns swapped back),
//! the bytes its implementation sends and per-exit accuracies, with what Algorithm 1 picks
//! there. `cargo xtask experiments` draws its "paper's setting" lines from [`costs`] and
//! appends [`section`] to its report (`--paper-only` writes that section alone). Decisions
//! use the experiments' round trip ([`RTT_MS`]).

use std::fmt::Write as _;
use std::path::Path;

use runtime::plan::{Decision, ExitCosts, Policy};
use toolchain::costs::exit_costs;
use toolchain::latency::LatencyModels;

use crate::experiments::{Costs, RTT_MS};
use crate::lab::rate_in_words;
use crate::plot::{self, BarSeries, MapLabels};

/// CIFAR-10's colour channels.
pub const CHANNELS: usize = 3;
/// CIFAR-10's classes.
pub const CLASSES: usize = 10;

/// How the raw image travels at partition 0 (edge-only). Activations (`0 < p < N`) are
/// `f32` either way, as Chainer computes them (`runtime::plan::wire_bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputWire {
    /// The `float32` array Chainer's CIFAR-10 loader yields and its network takes, sent as
    /// it is (the paper's implementation; a pickle adds a header of about 100 bytes,
    /// left out): 3×32×32×4 = 12,288 bytes.
    F32,
    /// The `u8` pixels, as this project's device sends them: 3×32×32 = 3,072 bytes.
    U8,
}

impl InputWire {
    /// Both assumptions, the paper's implementation first.
    pub const ALL: [InputWire; 2] = [Self::F32, Self::U8];

    /// Bytes of the raw image on the wire.
    pub fn bytes(self) -> u64 {
        let pixels = (CHANNELS * 32 * 32) as u64;
        match self {
            Self::F32 => 4 * pixels,
            Self::U8 => pixels,
        }
    }

    /// Short name for tables.
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32 input",
            Self::U8 => "u8 input",
        }
    }
}

/// Test accuracy of exits 1 to 5 assumed for the paper's B-AlexNet on CIFAR-10.
///
/// Exit 5 is the plain AlexNet's CIFAR-10 accuracy in BranchyNet (Teerapittayanon et al.,
/// ICPR 2016, Table I: 78.38 %), the network the paper's B-AlexNet extends; the per-exit
/// values of the paper's figures could not be retrieved here. Exits 1–4 are an assumed
/// ladder below it, not from a source. Algorithm 1 ranks exits by accuracy, so the
/// (exit, partition) it picks depends only on their order, not on these values (tested);
/// only accuracies reported against the deadline do.
pub const ACCURACY: [f64; 5] = [0.62, 0.69, 0.73, 0.76, 0.7838];

/// Where [`ACCURACY`] comes from, for the report.
pub const ACCURACY_SOURCE: &str = "exit 5 is the plain AlexNet's CIFAR-10 accuracy in BranchyNet (ICPR 2016, Table I), the network the paper's B-AlexNet extends; exits 1–4 are an assumed ladder below it, not from a source (the paper's per-exit values could not be retrieved). Selections depend only on the order of the accuracies; only the accuracy table and figure depend on the values.";

/// Bandwidths of the selection table, bit/s: 50 kbit/s to 1.5 Mbit/s, the range of the
/// measured sweep and our reading of the paper's Fig. 6 axis (not checked against its text).
pub const BANDWIDTHS_BPS: [f64; 11] = [
    50e3, 100e3, 150e3, 200e3, 250e3, 300e3, 400e3, 500e3, 750e3, 1e6, 1.5e6,
];

/// Deadlines of the selection table (its columns), ms.
pub const TABLE_DEADLINES_MS: [f64; 5] = [100.0, 200.0, 300.0, 500.0, 1000.0];

/// Deadlines of the selection figure, ms.
pub const FIGURE_DEADLINES_MS: [f64; 3] = [300.0, 500.0, 1000.0];

/// Deadlines of the accuracy comparison, ms: 100 ms to 1 s, the range of the measured sweep
/// and our reading of the paper's Figs. 8 and 9 (not checked against its text).
pub const DEADLINES_MS: [f64; 10] = [
    100.0, 200.0, 300.0, 400.0, 500.0, 600.0, 700.0, 800.0, 900.0, 1000.0,
];

/// Bandwidth of the accuracy comparison, bit/s: our choice (the paper's could not be
/// retrieved), a rate at which the 100 ms – 1 s sweep passes through the exits.
pub const FIXED_BANDWIDTH_BPS: f64 = 100e3;

/// Deadline of the partition map, ms.
pub const MAP_DEADLINE_MS: f64 = 500.0;

/// Every (exit, partition) pair's costs in the paper's setting, with the raw image sent as
/// `input` says.
pub fn costs(input: InputWire) -> anyhow::Result<Vec<ExitCosts>> {
    let table = runtime::model::layers::b_alexnet(CHANNELS, CLASSES);
    let mut costs =
        exit_costs(&table, &LatencyModels::paper(), &ACCURACY).map_err(anyhow::Error::msg)?;
    for exit in &mut costs {
        exit.pairs[0].bytes = input.bytes();
    }
    Ok(costs)
}

/// A decision as "exit, partition", or "none (fastest: exit, partition)" when no plan meets
/// the deadline.
pub(crate) fn plan_in_words(d: &Decision) -> String {
    if d.feasible {
        format!("{}, {}", d.exit, d.partition)
    } else {
        format!("none (fastest: {}, {})", d.exit, d.partition)
    }
}

/// A decision in words: "exit, partition" and where it runs, or "none" when no plan meets
/// the deadline.
fn cell(costs: &[ExitCosts], d: &Decision) -> String {
    if !d.feasible {
        return "none".into();
    }
    let n = costs[d.exit - 1].pairs.len() - 1;
    let side = match d.partition {
        0 => "edge",
        p if p == n => "device",
        _ => "split",
    };
    format!("{} {side}", plan_in_words(d))
}

/// Whether a decision splits the exit between device and edge.
fn is_middle(costs: &[ExitCosts], d: &Decision) -> bool {
    d.feasible && d.partition > 0 && d.partition + 1 < costs[d.exit - 1].pairs.len()
}

/// Edgent's decision at every (bandwidth, deadline) of the table: `[bandwidth][deadline]`.
fn selections(costs: &[ExitCosts]) -> Vec<Vec<Decision>> {
    BANDWIDTHS_BPS
        .iter()
        .map(|&rate| {
            TABLE_DEADLINES_MS
                .iter()
                .map(|&deadline| Costs::decide(costs, Policy::Edgent, rate, deadline))
                .collect()
        })
        .collect()
}

/// Whether the selections at one deadline (a column of [`selections`]) go the way the
/// paper's Fig. 6 goes: a shallower exit at the lowest bandwidth, exit 5 at the highest.
fn shallow_to_deepest(column: &[Decision]) -> bool {
    let (first, last) = (column[0], column[column.len() - 1]);
    first.feasible && first.exit < 5 && last.feasible && last.exit == 5
}

/// What the selection table shows for one assumption on the input's bytes.
struct Findings {
    input: InputWire,
    /// Deadlines (in words) at which the selection goes from a shallow exit at the lowest
    /// bandwidth to exit 5 at the highest.
    reproduced: Vec<String>,
    /// Exits chosen anywhere in the table (plans that meet the deadline).
    exits: Vec<usize>,
    /// Cells with a middle partition.
    middles: usize,
}

impl Findings {
    /// The findings of `table` (`[bandwidth][deadline]`, see [`selections`]).
    fn of(input: InputWire, costs: &[ExitCosts], table: &[Vec<Decision>]) -> Self {
        let reproduced = TABLE_DEADLINES_MS
            .iter()
            .enumerate()
            .filter(|&(col, _)| {
                let column: Vec<Decision> = table.iter().map(|row| row[col]).collect();
                shallow_to_deepest(&column)
            })
            .map(|(_, d)| format!("{d:.0} ms"))
            .collect();
        let mut exits: Vec<usize> = table
            .iter()
            .flatten()
            .filter(|d| d.feasible)
            .map(|d| d.exit)
            .collect();
        exits.sort_unstable();
        exits.dedup();
        let middles = table
            .iter()
            .flatten()
            .filter(|d| is_middle(costs, d))
            .count();
        Self {
            input,
            reproduced,
            exits,
            middles,
        }
    }

    /// "1, 3 and 5".
    fn exits_in_words(&self) -> String {
        let names: Vec<String> = self.exits.iter().map(ToString::to_string).collect();
        match names.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
            _ => names.join(""),
        }
    }

    /// One sentence for the report.
    fn describe(&self) -> String {
        format!(
            "*{}*: a shallow exit at {} and exit 5 at {} at {}; exits chosen in the table: {}; middle partitions in {} of {} cells.",
            self.input.name(),
            rate_in_words(BANDWIDTHS_BPS[0]),
            rate_in_words(BANDWIDTHS_BPS[BANDWIDTHS_BPS.len() - 1]),
            if self.reproduced.is_empty() {
                "no deadline of the table".to_string()
            } else {
                self.reproduced.join(", ")
            },
            self.exits_in_words(),
            self.middles,
            BANDWIDTHS_BPS.len() * TABLE_DEADLINES_MS.len()
        )
    }
}

/// The report section and a summary line.
pub struct Section {
    /// Markdown, starting with its heading.
    pub markdown: String,
    /// One sentence for the report's summary.
    pub summary: String,
}

/// Computes the paper's setting, writes its figures into `out` and returns the report
/// section: Algorithm 1's selections per bandwidth and deadline under both assumptions on
/// the input's bytes, next to what the paper reports; the accuracy of Edgent and the
/// baselines against the deadline; and where a middle partition wins.
pub fn section(out: &Path) -> anyhow::Result<Section> {
    let by_input: Vec<(InputWire, Vec<ExitCosts>)> = InputWire::ALL
        .iter()
        .map(|&input| Ok((input, costs(input)?)))
        .collect::<anyhow::Result<_>>()?;
    let mut md = String::new();
    let selection = selection_part(&mut md, out, &by_input)?;
    let f32_costs = &by_input[0].1;
    accuracy_part(&mut md, out, f32_costs)?;
    let counts = map_part(&mut md, out, f32_costs)?;
    let summary = format!(
        "The paper's own setting (computed): {selection} Middle partitions on the bandwidth × device-speed map at {MAP_DEADLINE_MS:.0} ms: {} of {} cells.",
        counts.middle,
        counts.total()
    );
    Ok(Section {
        markdown: md,
        summary,
    })
}

/// The selection table and figure against bandwidth and what they show next to the paper's
/// Fig. 6; returns the f32 input's finding in one sentence.
fn selection_part(
    md: &mut String,
    out: &Path,
    by_input: &[(InputWire, Vec<ExitCosts>)],
) -> anyhow::Result<String> {
    let (f32_costs, u8_costs) = (&by_input[0].1, &by_input[1].1);
    let chosen: Vec<Vec<Vec<Decision>>> = by_input.iter().map(|(_, c)| selections(c)).collect();
    writeln!(
        md,
        "## The paper's own setting\n\nComputed, not measured: Algorithm 1 (`decide`, the device runs `[0, p)`) over the paper's B-AlexNet on CIFAR-10 (input 3×32×32, `b_alexnet(3, 10)`), with the paper's Table II latency models (Raspberry Pi 3 device, desktop edge; DESIGN.md §4, columns swapped back) and a {RTT_MS} ms round trip. Assumptions:\n\n* Bytes on the wire: activations as `f32` (Chainer computes in float32); the raw image at p = 0 either as the `float32` array Chainer's CIFAR-10 loader yields and the network takes, sent as it is — our assumption of what the paper's Chainer implementation sends ({} bytes, a pickle header of about 100 bytes left out) — or as `u8` pixels ({} bytes, what this project's device sends). Cells show the f32 choice, and the u8 one after a slash where it differs.\n* Accuracies of exits 1 to 5: {}; {ACCURACY_SOURCE}\n* A cell is exit, partition and where it runs (edge = edge-only, p = 0; device = device-only, p = N; split = a middle partition); *none*: no plan meets the deadline.\n",
        InputWire::F32.bytes(),
        InputWire::U8.bytes(),
        ACCURACY.map(|a| format!("{:.1} %", 100.0 * a)).join(", "),
    )?;
    write!(md, "| bandwidth |")?;
    for d in TABLE_DEADLINES_MS {
        write!(md, " {d:.0} ms |")?;
    }
    write!(md, "\n|---|")?;
    for _ in TABLE_DEADLINES_MS {
        write!(md, "---|")?;
    }
    md.push('\n');
    for ((rate, f32_row), u8_row) in BANDWIDTHS_BPS.iter().zip(&chosen[0]).zip(&chosen[1]) {
        write!(md, "| {} |", rate_in_words(*rate))?;
        for (f32_choice, u8_choice) in f32_row.iter().zip(u8_row) {
            let a = cell(f32_costs, f32_choice);
            let b = cell(u8_costs, u8_choice);
            if a == b {
                write!(md, " {a} |")?;
            } else {
                write!(md, " {a} / {b} |")?;
            }
        }
        md.push('\n');
    }
    // What the table shows, for each assumption.
    let findings: Vec<Findings> = by_input
        .iter()
        .zip(&chosen)
        .map(|((input, costs), table)| Findings::of(*input, costs, table))
        .collect();
    let described: Vec<String> = findings.iter().map(Findings::describe).collect();
    let exit5 = &f32_costs[4].pairs;
    let (device_only_5, edge_only_5) = (exit5[exit5.len() - 1].device_ms, exit5[0].edge_ms);
    // The first partition of exit 5 that sends less than the raw image.
    let smaller = exit5
        .iter()
        .enumerate()
        .position(|(p, c)| p > 0 && c.bytes < InputWire::F32.bytes());
    let reproduced = &findings[0].reproduced;
    let mut verdict = if reproduced.is_empty() {
        format!(
            "No: at no deadline of the table does the f32 setting go from a shallow exit at {} to exit 5 at {}.",
            rate_in_words(BANDWIDTHS_BPS[0]),
            rate_in_words(BANDWIDTHS_BPS[BANDWIDTHS_BPS.len() - 1])
        )
    } else {
        format!(
            "In direction, at {}: a shallow exit at the lowest bandwidth, exit 5 at the highest.",
            reproduced.join(", ")
        )
    };
    if findings.iter().all(|f| f.middles == 0) {
        write!(
            verdict,
            " Not in detail: every choice is edge-only or device-only. With Table II's models the desktop runs all of exit 5 in {edge_only_5:.1} ms and the Raspberry Pi in {device_only_5:.0} ms, and no activation of exit 5 is smaller than the raw f32 image before partition {} of {}, so a middle partition pays device time for no saving on the wire.",
            smaller.map_or("N".into(), |p| p.to_string()),
            exit5.len() - 1
        )?;
    }
    if findings[0].exits.len() < 5 {
        // How often the other exits win on a finer grid of bandwidths.
        let fine = plot::log_grid(
            BANDWIDTHS_BPS[0],
            BANDWIDTHS_BPS[BANDWIDTHS_BPS.len() - 1],
            200,
        );
        let mut wins = [0usize; 5];
        for &rate in &fine {
            for &deadline in &TABLE_DEADLINES_MS {
                let d = Costs::decide(f32_costs, Policy::Edgent, rate, deadline);
                if d.feasible {
                    wins[d.exit - 1] += 1;
                }
            }
        }
        let others: Vec<String> = (1..=5)
            .filter(|e| !findings[0].exits.contains(e))
            .map(|e| {
                let n = wins[e - 1];
                format!("exit {e} in {n} cell{}", if n == 1 { "" } else { "s" })
            })
            .collect();
        write!(
            verdict,
            " Against bandwidth the other exits win only in narrow bands: on a grid of {} bandwidths from {} to {} at the same deadlines ({} cells), {} (f32 input); against the deadline, below, they do appear, on the device.",
            fine.len(),
            rate_in_words(fine[0]),
            rate_in_words(fine[fine.len() - 1]),
            fine.len() * TABLE_DEADLINES_MS.len(),
            others.join(", ")
        )?;
    }
    if device_only_5 <= 1000.0 {
        write!(
            verdict,
            " At 1000 ms, exit 5 fits on the device alone ({device_only_5:.0} ms) at any bandwidth: with these models a latency requirement of 1 s cannot give a shallow exit at low bandwidth."
        )?;
    }
    writeln!(
        md,
        "\n**What the paper reports** (its Fig. 6, the exit and partition Edgent selects against bandwidth at a fixed latency requirement): the exit rises with the bandwidth, from exit 1 at the lowest bandwidth to exit 5 at the highest. That much is as this project's brief describes the figure; the figure's exact values, its partition points, its bandwidth axis (we read it as 50 kbit/s to 1.5 Mbit/s) and its latency requirement could not be retrieved from the sources searched here, so they are not compared cell by cell.\n\n**What Algorithm 1 picks here**: {}\n\n**Does it reproduce the paper?** {verdict}\n",
        described.join(" ")
    )?;

    // The selection figure (f32 input).
    let categories: Vec<String> = BANDWIDTHS_BPS
        .iter()
        .map(|r| format!("{:.0}", r / 1e3))
        .collect();
    let series: Vec<BarSeries> = FIGURE_DEADLINES_MS
        .iter()
        .map(|&deadline| {
            let decisions: Vec<Decision> = BANDWIDTHS_BPS
                .iter()
                .map(|&rate| Costs::decide(f32_costs, Policy::Edgent, rate, deadline))
                .collect();
            plot::selection_bars(format!("deadline {deadline:.0} ms"), &decisions, true)
        })
        .collect();
    plot::bars(
        &out.join("paper-selection-vs-bandwidth.png"),
        "Paper's setting (f32 input): exit and partition Algorithm 1 picks",
        ("bandwidth (kbit/s)", &categories),
        &["exit", "partition"],
        &series,
    )?;
    writeln!(
        md,
        "![paper's setting: selection](paper-selection-vs-bandwidth.png)\n\n(×: no plan meets the deadline.)\n"
    )?;
    Ok(described[0].clone())
}

/// Edgent and the baselines against the deadline at [`FIXED_BANDWIDTH_BPS`]: table and bars.
fn accuracy_part(md: &mut String, out: &Path, costs: &[ExitCosts]) -> anyhow::Result<()> {
    writeln!(
        md,
        "### Accuracy against the deadline (the paper's Figs. 8, 9)\n\nBandwidth {} (our choice: the paper's could not be retrieved; at this rate the 100 ms – 1 s sweep passes through the exits), f32 input, the baselines of the measured part. Promised accuracy: the exit's accuracy when its plan meets the deadline, else 0.\n",
        rate_in_words(FIXED_BANDWIDTH_BPS)
    )?;
    write!(md, "| deadline | Edgent exit, partition |")?;
    for policy in Policy::ALL {
        write!(md, " {} acc. % |", policy.name())?;
    }
    write!(md, "\n|---|---|")?;
    for _ in Policy::ALL {
        write!(md, "---|")?;
    }
    md.push('\n');
    let promised: Vec<Vec<f64>> = Policy::ALL
        .iter()
        .map(|&policy| {
            DEADLINES_MS
                .iter()
                .map(|&d| 100.0 * Costs::promised(costs, policy, FIXED_BANDWIDTH_BPS, d))
                .collect()
        })
        .collect();
    for (i, &deadline) in DEADLINES_MS.iter().enumerate() {
        let d = Costs::decide(costs, Policy::Edgent, FIXED_BANDWIDTH_BPS, deadline);
        write!(md, "| {deadline:.0} ms | {} |", cell(costs, &d))?;
        for row in &promised {
            write!(md, " {:.1} |", row[i])?;
        }
        md.push('\n');
    }
    let categories: Vec<String> = DEADLINES_MS.iter().map(|d| format!("{d:.0}")).collect();
    let series: Vec<BarSeries> = Policy::ALL
        .iter()
        .zip(promised)
        .map(|(policy, values)| BarSeries {
            name: policy.name().into(),
            values: vec![values],
            computed: true,
        })
        .collect();
    plot::bars(
        &out.join("paper-accuracy-vs-deadline.png"),
        &format!(
            "Paper's setting: accuracy within the deadline at {}",
            rate_in_words(FIXED_BANDWIDTH_BPS)
        ),
        ("deadline (ms)", &categories),
        &["accuracy (%)"],
        &series,
    )?;
    writeln!(
        md,
        "\n![paper's setting: accuracy](paper-accuracy-vs-deadline.png)\n"
    )?;
    Ok(())
}

/// The map of where a middle partition wins over bandwidth × device speed.
fn map_part(
    md: &mut String,
    out: &Path,
    costs: &[ExitCosts],
) -> anyhow::Result<plot::PlacementCounts> {
    let bandwidths = plot::log_grid(10e3, 100e6, 8);
    let factors = plot::log_grid(0.1, 100.0, 8);
    let counts = plot::partition_map(
        &out.join("paper-partition-map.png"),
        &MapLabels {
            title: "Paper's setting (f32 input)",
            y_desc: "device time × (1 = Raspberry Pi 3, Table II)",
        },
        costs,
        (MAP_DEADLINE_MS, RTT_MS),
        &bandwidths,
        &factors,
    )?;
    writeln!(
        md,
        "### Where a middle partition wins\n\nAlgorithm 1's placement over bandwidth (10 kbit/s to 100 Mbit/s) × device speed (every device time of Table II multiplied by 0.1 to 100; the edge unchanged), deadline {MAP_DEADLINE_MS:.0} ms, f32 input: edge-only in {} cells, a middle partition in **{}**, device-only in {}, nothing in time in {} (of {}).\n\n![paper's setting: placement map](paper-partition-map.png)\n",
        counts.edge_only,
        counts.middle,
        counts.device_only,
        counts.infeasible,
        counts.total()
    )?;
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use runtime::plan::{Link, decide};

    fn link(bandwidth_bps: f64) -> Link {
        Link {
            bandwidth_bps,
            rtt_ms: 1.0,
        }
    }

    #[test]
    fn costs_are_the_cifar_network_with_the_assumed_input_bytes() {
        let table = runtime::model::layers::b_alexnet(3, 10);
        for input in InputWire::ALL {
            let costs = costs(input).unwrap();
            assert_eq!(costs.len(), 5);
            for (exit, spec) in costs.iter().zip(&table.exits) {
                assert_eq!(exit.pairs.len(), spec.len() + 1);
                assert_eq!(exit.pairs[0].bytes, input.bytes());
                assert_eq!(exit.pairs[0].device_ms, 0.0);
                // conv1's output, 32×32×32 f32, enters layer 1.
                assert_eq!(exit.pairs[1].bytes, 4 * 32 * 32 * 32);
                assert_eq!(exit.pairs[spec.len()].bytes, 0);
            }
        }
        assert_eq!(InputWire::F32.bytes(), 4 * InputWire::U8.bytes());
    }

    #[test]
    fn a_short_deadline_goes_from_a_shallow_exit_on_the_device_to_exit_5_on_the_edge() {
        let costs = costs(InputWire::F32).unwrap();
        let low = decide(&costs, link(BANDWIDTHS_BPS[0]), 500.0);
        assert!(low.feasible && low.exit < 5, "{low:?}");
        assert_eq!(low.partition, costs[low.exit - 1].pairs.len() - 1);
        let high = decide(&costs, link(BANDWIDTHS_BPS[10]), 500.0);
        assert_eq!((high.exit, high.partition, high.feasible), (5, 0, true));
        // The exit never falls as the bandwidth rises.
        let exits: Vec<usize> = BANDWIDTHS_BPS
            .iter()
            .map(|&b| decide(&costs, link(b), 500.0).exit)
            .collect();
        assert!(exits.windows(2).all(|w| w[0] <= w[1]), "{exits:?}");
    }

    #[test]
    fn at_one_second_exit_5_fits_on_the_device_alone_at_any_bandwidth() {
        let costs = costs(InputWire::F32).unwrap();
        for &b in &BANDWIDTHS_BPS {
            let d = decide(&costs, link(b), 1000.0);
            assert_eq!((d.exit, d.feasible), (5, true), "{b} bit/s");
        }
        let low = decide(&costs, link(50e3), 1000.0);
        assert_eq!(low.partition, costs[4].pairs.len() - 1);
    }

    #[test]
    fn the_input_assumption_changes_the_selection() {
        // 300 ms at 100 kbit/s: 3,072 bytes upload in 246 ms, 12,288 bytes in 983 ms.
        let d = decide(&costs(InputWire::U8).unwrap(), link(100e3), 300.0);
        assert_eq!((d.exit, d.partition, d.feasible), (5, 0, true));
        let d = decide(&costs(InputWire::F32).unwrap(), link(100e3), 300.0);
        assert!(!d.feasible);
    }

    #[test]
    fn selections_depend_on_the_order_of_the_accuracies_only() {
        let base = costs(InputWire::F32).unwrap();
        let mut other = base.clone();
        for (exit, accuracy) in other.iter_mut().zip([0.1, 0.5, 0.51, 0.9, 0.99]) {
            exit.accuracy = accuracy;
        }
        for &b in &BANDWIDTHS_BPS {
            for &deadline in &DEADLINES_MS {
                assert_eq!(
                    decide(&base, link(b), deadline),
                    decide(&other, link(b), deadline)
                );
            }
        }
    }

    #[test]
    fn no_middle_partition_wins_with_the_papers_models() {
        let costs = costs(InputWire::F32).unwrap();
        let cells = plot::placements(
            &costs,
            MAP_DEADLINE_MS,
            1.0,
            &plot::log_grid(10e3, 100e6, 8),
            &plot::log_grid(0.1, 100.0, 8),
        );
        assert!(
            !cells
                .iter()
                .flatten()
                .any(|c| *c == plot::Placement::Middle)
        );
    }

    #[test]
    fn the_section_writes_its_figures() {
        let dir = tempfile::tempdir().unwrap();
        let section = section(dir.path()).unwrap();
        for name in [
            "paper-selection-vs-bandwidth.png",
            "paper-accuracy-vs-deadline.png",
            "paper-partition-map.png",
        ] {
            assert!(section.markdown.contains(name));
            let len = std::fs::metadata(dir.path().join(name)).unwrap().len();
            assert!(len > 1000, "{name}: {len} bytes");
        }
        assert!(section.markdown.contains("| 1.5 Mbit/s |"));
    }
}
