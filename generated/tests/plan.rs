//! The compiled-in plan: same decisions as a brute-force search, monotone in bandwidth and
//! deadline, and in step with the committed plan file and the layer table.

use std::path::Path;
use std::process::Command;

use generated::plan;
use proptest::prelude::*;
use runtime::BranchyAlexNetConfig;
use runtime::planner::{ExitCosts, Link, decide};

fn search_input() -> Vec<ExitCosts> {
    plan::TABLES
        .iter()
        .map(|t| ExitCosts {
            exit: t.exit,
            accuracy: t.accuracy,
            pairs: t.pairs.to_vec(),
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn tables_decide_like_a_brute_force_search(
        bandwidth in 1e3f64..1e8,
        rtt in 0.0f64..50.0,
        deadline in 0.0f64..3000.0,
    ) {
        let fast = plan::decide(bandwidth, rtt, deadline);
        let slow = decide(&search_input(), Link { bandwidth_bps: bandwidth, rtt_ms: rtt }, deadline);
        prop_assert_eq!(fast.exit, slow.exit);
        prop_assert_eq!(fast.feasible, slow.feasible);
        prop_assert!((fast.predicted_ms - slow.predicted_ms).abs() <= 1e-9 * slow.predicted_ms.max(1.0));
        // The partition may differ only on a tie, which the time check above covers.
    }

    #[test]
    fn more_bandwidth_or_time_never_gives_a_less_accurate_exit(
        bandwidth in 1e3f64..1e7,
        more in 1.0f64..100.0,
        deadline in 1.0f64..2000.0,
        later in 0.0f64..2000.0,
    ) {
        let accuracy = |d: runtime::planner::Decision| if d.feasible { plan::ACCURACY[d.exit - 1] } else { -1.0 };
        let base = plan::decide(bandwidth, 2.0, deadline);
        prop_assert!(accuracy(plan::decide(bandwidth * more, 2.0, deadline)) >= accuracy(base));
        prop_assert!(accuracy(plan::decide(bandwidth, 2.0, deadline + later)) >= accuracy(base));
    }
}

#[test]
fn committed_plan_matches_the_layer_table_and_the_binary() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("plan.json");
    let plan_file = codegen::load(&path).expect("the committed plan is valid");
    assert_eq!(
        plan_file.digest,
        plan::DIGEST,
        "the binary was compiled from another plan"
    );
    let table = BranchyAlexNetConfig::new()
        .with_channels(plan_file.input[0])
        .with_classes(plan_file.classes)
        .layer_table();
    assert_eq!(plan_file.exits.len(), table.exits.len());
    for (planned, spec) in plan_file.exits.iter().zip(&table.exits) {
        let planned: Vec<(&str, &str, &[usize], &[usize])> = planned
            .layers
            .iter()
            .map(|l| {
                (
                    l.name.as_str(),
                    l.kind.as_str(),
                    l.input.as_slice(),
                    l.output.as_slice(),
                )
            })
            .collect();
        let current: Vec<(&str, &str, &[usize], &[usize])> = spec
            .layers
            .iter()
            .map(|l| {
                (
                    l.name.as_str(),
                    l.kind.name(),
                    l.input.as_slice(),
                    l.output.as_slice(),
                )
            })
            .collect();
        assert_eq!(
            planned, current,
            "generated/plan.json is stale for exit {}: run `cargo xtask generate`",
            spec.exit
        );
    }
}

fn device_plan(bandwidth: &str, deadline: &str) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_edgent-device"))
        .args([
            "plan",
            "--bandwidth",
            bandwidth,
            "--deadline",
            deadline,
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn device_plan_command_prints_the_decision() {
    let v = device_plan("400kbit", "300ms");
    for key in [
        "exit",
        "partition",
        "feasible",
        "predicted_ms",
        "device_ms",
        "network_ms",
        "edge_ms",
    ] {
        assert!(v.get(key).is_some(), "{key} missing in {v}");
    }
    let sum = v["device_ms"].as_f64().unwrap()
        + v["network_ms"].as_f64().unwrap()
        + v["edge_ms"].as_f64().unwrap();
    assert!((sum - v["predicted_ms"].as_f64().unwrap()).abs() < 1e-6);
}

#[test]
fn bad_units_are_rejected_clearly() {
    for (args, expected) in [
        (
            ["--bandwidth", "fast", "--deadline", "300ms"],
            "does not start with a number",
        ),
        (
            ["--bandwidth", "10furlongs", "--deadline", "300ms"],
            "unknown bandwidth unit",
        ),
        (
            ["--bandwidth", "1Mbit", "--deadline", "3h"],
            "unknown duration unit",
        ),
        (["--bandwidth", "0kbit", "--deadline", "1s"], "positive"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_edgent-device"))
            .arg("plan")
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expected), "{args:?}: {err}");
    }
}

/// The paper's models (Raspberry Pi 3 device, desktop edge) with this model's accuracies.
fn paper_costs() -> Vec<ExitCosts> {
    let table = BranchyAlexNetConfig::new()
        .with_channels(plan::INPUT[0])
        .with_classes(plan::CLASSES)
        .layer_table();
    runtime::planner::exit_costs(
        &table,
        &runtime::latency::LatencyModels::paper(),
        &plan::ACCURACY,
    )
    .unwrap()
}

/// Exits chosen along a sweep; an infeasible answer counts as exit 0.
fn exits_along(points: &[(f64, f64)]) -> Vec<usize> {
    let costs = paper_costs();
    points
        .iter()
        .map(|&(bandwidth, deadline)| {
            let d = decide(
                &costs,
                Link {
                    bandwidth_bps: bandwidth,
                    rtt_ms: 0.0,
                },
                deadline,
            );
            if d.feasible { d.exit } else { 0 }
        })
        .collect()
}

#[test]
fn paper_profile_moves_to_deeper_exits_with_bandwidth_and_deadline() {
    let bandwidths: Vec<f64> = (0..=29).map(|i| 50e3 + i as f64 * 50e3).collect(); // 50 kbit/s … 1.5 Mbit/s
    let deadlines: Vec<f64> = (0..=18).map(|i| 100.0 + i as f64 * 50.0).collect(); // 100 ms … 1 s
    let by_bandwidth = exits_along(&bandwidths.iter().map(|&b| (b, 170.0)).collect::<Vec<_>>());
    let by_deadline = exits_along(&deadlines.iter().map(|&d| (50e3, d)).collect::<Vec<_>>());
    let best = (1..=plan::EXITS)
        .max_by(|a, b| plan::ACCURACY[a - 1].total_cmp(&plan::ACCURACY[b - 1]))
        .unwrap();
    let accuracy = |exit: usize| {
        if exit == 0 {
            -1.0
        } else {
            plan::ACCURACY[exit - 1]
        }
    };
    for (what, exits) in [("bandwidth", &by_bandwidth), ("deadline", &by_deadline)] {
        // Never a less accurate exit; from a shallow exit (or none) to the most accurate one.
        assert!(
            exits.windows(2).all(|w| accuracy(w[0]) <= accuracy(w[1])),
            "exits along {what}: {exits:?}"
        );
        assert!(
            exits[0] < exits[exits.len() - 1],
            "no movement along {what}: {exits:?}"
        );
        assert_eq!(
            exits[exits.len() - 1],
            best,
            "exits along {what}: {exits:?}"
        );
    }
}
