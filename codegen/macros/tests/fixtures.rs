//! The plan files the compile-fail cases read, generated here so that their digests match
//! their content (a hand-edited plan would fail on its digest first).
//!
//! `EDGENT_BLESS=1 cargo test -p codegen-macros --test fixtures` rewrites them.

use std::path::Path;

use codegen::plan::{PLAN_VERSION, Plan, PlanExit, PlanLayer, PlanParams, PlanPartition};

/// A valid plan: `[1, 4, 4]` inputs, 3 classes, two exits.
fn valid() -> Plan {
    let conv = |name: &str, input: usize| PlanLayer {
        name: name.into(),
        kind: "conv".into(),
        input: vec![input, 4, 4],
        output: vec![2, 4, 4],
        params: PlanParams::Conv {
            in_channels: input,
            out_channels: 2,
            kernel: 3,
            padding: 1,
        },
        device_ms: 1.5,
        edge_ms: 0.25,
    };
    let relu = |name: &str| PlanLayer {
        name: name.into(),
        kind: "relu".into(),
        input: vec![2, 4, 4],
        output: vec![2, 4, 4],
        params: PlanParams::None,
        device_ms: 0.125,
        edge_ms: 0.0625,
    };
    let fc = |name: &str| PlanLayer {
        name: name.into(),
        kind: "fc".into(),
        input: vec![2, 4, 4],
        output: vec![3],
        params: PlanParams::Fc {
            in_features: 32,
            out_features: 3,
        },
        device_ms: 0.5,
        edge_ms: 0.125,
    };
    let exit = |exit: usize, accuracy: f64, layers: Vec<PlanLayer>| {
        let n = layers.len();
        let partitions = (0..=n)
            .map(|p| PlanPartition {
                device_ms: layers[..p]
                    .iter()
                    .map(|l| l.device_ms)
                    .fold(0.0, |a, b| a + b),
                edge_ms: layers[p..]
                    .iter()
                    .map(|l| l.edge_ms)
                    .fold(0.0, |a, b| a + b),
                edge_ms_per_image: layers[p..]
                    .iter()
                    .map(|l| 0.5 * l.edge_ms)
                    .fold(0.0, |a, b| a + b),
                bytes: match p {
                    0 => 16,
                    p if p == n => 0,
                    p => 4 * layers[p].input.iter().product::<usize>() as u64,
                },
                encodings: Vec::new(),
            })
            .collect();
        PlanExit {
            exit,
            accuracy,
            layers,
            partitions,
        }
    };
    Plan {
        version: PLAN_VERSION,
        digest: String::new(),
        dataset: "tiny".into(),
        input: vec![1, 4, 4],
        classes: 3,
        normalization_mean: vec![0.5],
        normalization_std: vec![0.25],
        weights_file: "weights.safetensors".into(),
        weights_digest: "0123abcd".into(),
        latency_source: "paper".into(),
        device_slowdown: 10.0,
        device_threads: 1,
        edge_threads: 1,
        device_engine: "generated".into(),
        edge_engine: "generated".into(),
        exits: vec![
            exit(
                1,
                0.5,
                vec![conv("conv1", 1), relu("relu1"), fc("exit1.fc")],
            ),
            exit(
                2,
                0.75,
                vec![
                    conv("conv1", 1),
                    relu("relu1"),
                    conv("conv2", 2),
                    relu("relu2"),
                    fc("exit2.fc"),
                ],
            ),
        ],
    }
    .seal()
}

/// Exit 2's `conv2` takes 3 channels where `relu1` gives 2.
fn inconsistent_shapes() -> Plan {
    let mut plan = valid();
    plan.exits[1].layers[2].input = vec![3, 4, 4];
    plan.seal()
}

/// Several problems at once: a shape, an accuracy, a missing partition.
fn several_problems() -> Plan {
    let mut plan = valid();
    plan.exits[0].layers[2].input = vec![8];
    plan.exits[1].accuracy = 1.25;
    plan.exits[1].partitions.pop();
    plan.seal()
}

fn fixtures() -> Vec<(&'static str, String)> {
    let json = |plan: Plan| serde_json::to_string_pretty(&plan).unwrap() + "\n";
    vec![
        ("valid.json", json(valid())),
        ("inconsistent_shapes.json", json(inconsistent_shapes())),
        ("several_problems.json", json(several_problems())),
    ]
}

fn fixture_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures"))
}

#[test]
fn fixtures_are_up_to_date() {
    let bless = std::env::var_os("EDGENT_BLESS").is_some();
    for (name, text) in fixtures() {
        let path = fixture_dir().join(name);
        if bless {
            std::fs::write(&path, &text).unwrap();
        }
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == text,
            "tests/fixtures/{name} is stale: run `EDGENT_BLESS=1 cargo test -p codegen-macros --test fixtures`"
        );
    }
}

#[test]
fn the_valid_fixture_loads_and_expands() {
    let path = fixture_dir().join("valid.json");
    let plan = codegen::load(&path).unwrap();
    assert_eq!(plan, valid());
    let text = codegen::tokens::expand(&plan, &path).to_string();
    assert!(text.contains(&plan.digest));
    syn::parse2::<syn::File>(codegen::tokens::expand(&plan, &path)).unwrap();
}

#[test]
fn each_failing_fixture_fails_for_its_reason() {
    let problems = |name: &str| codegen::load(&fixture_dir().join(name)).unwrap_err();
    assert_eq!(problems("inconsistent_shapes.json").len(), 1);
    assert_eq!(problems("several_problems.json").len(), 3);
    assert!(problems("bad_json.json")[0].contains("not valid JSON"));
    assert!(
        problems("unknown_version.json")[0]
            .contains(&format!("schema version 99 is not {PLAN_VERSION}"))
    );
}
