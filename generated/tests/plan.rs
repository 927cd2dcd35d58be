//! The compiled-in plan: same decisions as a brute-force search, monotone in bandwidth and
//! deadline, and in step with the committed plan file and the layer table.

use std::path::Path;
use std::process::Command;

use generated::plan;
use proptest::prelude::*;
use runtime::BranchyAlexNetConfig;
use runtime::plan::{ExitCosts, Link, decide};

fn search_input() -> Vec<ExitCosts> {
    ExitCosts::from_tables(&plan::TABLES, &plan::FAMILIES)
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
        let accuracy = |d: runtime::plan::Decision| if d.feasible { plan::ACCURACY[d.exit - 1] } else { -1.0 };
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
fn units_in_any_case_and_byte_rates_are_read() {
    // 1 MB/s is 8 Mbit/s: the same plan as 8Mbit; 300MS is 300 ms.
    let bytes = device_plan("1MB/s", "300MS");
    let bits = device_plan("8Mbit", "300ms");
    assert_eq!(bytes, bits);
    assert_eq!(device_plan("1kb/s", "1S"), device_plan("1kbit", "1000ms"));
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
        (
            ["--bandwidth", "1Mbit", "--deadline", "1e20s"],
            "deadline `1e20s` must be a finite positive time up to 3600s",
        ),
        (
            ["--bandwidth", "1Mbit", "--deadline", "0ms"],
            "must be a finite positive time",
        ),
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

#[test]
fn the_plan_schema_names_the_same_kinds_of_values_as_the_runtime() {
    use runtime::wire::encoding::Values;
    let runtime: Vec<(&str, bool)> = Values::ALL.iter().map(|v| (v.name(), !v.lossy())).collect();
    assert_eq!(codegen::plan::VALUES.to_vec(), runtime);
}
