//! The paper's latency profile (Raspberry Pi 3 device, desktop edge) planned over this
//! project's model: Algorithm 1 moves to deeper exits as bandwidth and deadline grow.

use runtime::BranchyAlexNetConfig;
use runtime::plan::{ExitCosts, Link, decide};
use toolchain::costs::exit_costs;
use toolchain::latency::LatencyModels;

/// The committed plan's input shape, classes and per-exit accuracies.
struct Committed {
    input: Vec<usize>,
    classes: usize,
    accuracy: Vec<f64>,
}

fn committed() -> Committed {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../generated/plan.json");
    let plan: serde_json::Value =
        serde_json::from_slice(&std::fs::read(path).expect("the committed plan")).unwrap();
    Committed {
        input: serde_json::from_value(plan["input"].clone()).unwrap(),
        classes: plan["classes"].as_u64().unwrap() as usize,
        accuracy: plan["exits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["accuracy"].as_f64().unwrap())
            .collect(),
    }
}

/// The paper's models (Raspberry Pi 3 device, desktop edge) with this model's accuracies.
fn paper_costs(plan: &Committed) -> Vec<ExitCosts> {
    let table = BranchyAlexNetConfig::new()
        .with_channels(plan.input[0])
        .with_classes(plan.classes)
        .layer_table();
    exit_costs(&table, &LatencyModels::paper(), &plan.accuracy).unwrap()
}

/// Exits chosen along a sweep; an infeasible answer counts as exit 0.
fn exits_along(plan: &Committed, points: &[(f64, f64)]) -> Vec<usize> {
    let costs = paper_costs(plan);
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
    let plan = committed();
    let bandwidths: Vec<f64> = (0..=29).map(|i| 50e3 + i as f64 * 50e3).collect(); // 50 kbit/s … 1.5 Mbit/s
    let deadlines: Vec<f64> = (0..=18).map(|i| 100.0 + i as f64 * 50.0).collect(); // 100 ms … 1 s
    let by_bandwidth = exits_along(
        &plan,
        &bandwidths.iter().map(|&b| (b, 170.0)).collect::<Vec<_>>(),
    );
    let by_deadline = exits_along(
        &plan,
        &deadlines.iter().map(|&d| (50e3, d)).collect::<Vec<_>>(),
    );
    let best = (1..=plan.accuracy.len())
        .max_by(|a, b| plan.accuracy[a - 1].total_cmp(&plan.accuracy[b - 1]))
        .unwrap();
    let accuracy = |exit: usize| {
        if exit == 0 {
            -1.0
        } else {
            plan.accuracy[exit - 1]
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
