//! `cargo xtask bench`: forward latency at batch 1 of every exit of the committed model, on
//! the generated engine (the kernels compiled from the plan), the same kernels interpreted
//! from the layer table, and burn-flex — and, with `--onnxruntime`, onnxruntime on the same
//! weights as the outside anchor, with `--wgpu` burn on the GPU (or lavapipe) — measured in
//! one run, with their ratios; with `--batches`, each in-process engine's throughput against
//! the batch size.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail, ensure};
use clap::Args;
use runtime::slowdown::Repeats;
use runtime::{Activation, Backend, BurnEngine, Engine, Isa, NUM_EXITS, PackedNetwork};
use serde_json::json;

/// Flags of `cargo xtask bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Timed repetitions per exit and engine (the median is reported).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
    repeats: u32,
    /// CPU threads every engine runs on (the generated one splits each convolution's
    /// output channels between them).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    threads: u16,
    /// Instruction set of the generated kernels (default: the best this CPU has).
    #[arg(long)]
    isa: Option<Isa>,
    /// Also time onnxruntime on the same weights (a Python venv made by
    /// `scripts/onnxruntime/setup.sh`; its logits are checked against the project's first).
    #[arg(long)]
    onnxruntime: bool,
    /// Also time burn on wgpu: the GPU wgpu picks, or Mesa's CPU Vulkan driver (lavapipe).
    #[arg(long)]
    wgpu: bool,
    /// Batch sizes for a throughput sweep of exit 5 (images/s per in-process engine), e.g.
    /// `1,8,64,256`.
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u32).range(1..=4096))]
    batches: Vec<u32>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

/// The committed model's weights, and the input every engine is timed on (the profiler's
/// probe input of the first layer).
struct Workload {
    weights_file: PathBuf,
    weights: runtime::WeightMap,
    table: runtime::LayerTable,
    input: Activation,
}

impl Workload {
    fn load() -> anyhow::Result<Self> {
        let root = crate::project_root();
        let plan: codegen::plan::Plan = serde_json::from_str(
            &std::fs::read_to_string(root.join("generated/plan.json"))
                .context("cannot read generated/plan.json")?,
        )
        .context("generated/plan.json is not a plan: run `cargo xtask generate`")?;
        let weights_file = root.join("generated").join(&plan.weights_file);
        let weights = runtime::WeightMap::load(&weights_file)?;
        let table = runtime::BranchyAlexNetConfig::new()
            .with_channels(plan.input[0])
            .with_classes(plan.classes)
            .layer_table();
        let input = runtime::slowdown::probe_input(&table.exits[0].layers[0]);
        Ok(Self {
            weights_file,
            weights,
            table,
            input,
        })
    }

    /// Median ms of every exit's whole chain on `engine` (each checked to run first).
    fn time(&self, engine: &dyn Engine, repeats: u32) -> anyhow::Result<Vec<f64>> {
        let repeats = Repeats::exactly(repeats as usize);
        (1..=NUM_EXITS)
            .map(|exit| {
                let n = engine.exit_len(exit)?;
                engine.forward_slice(exit, 0..n, &self.input)?;
                Ok(repeats.median_ms(|| {
                    let start = Instant::now();
                    let _ = std::hint::black_box(engine.forward_slice(exit, 0..n, &self.input));
                    start.elapsed()
                }))
            })
            .collect()
    }
}

/// What `edgent-device bench --json` reports: the generated engine compiled from the
/// committed plan, run in its own process.
#[derive(serde::Deserialize)]
struct DeviceBench {
    engine: String,
    ms: Vec<f64>,
    input: Vec<f32>,
    logits: Vec<Vec<f32>>,
    /// Exit 5's images/s at each of `--batches`.
    images_per_s: Vec<f64>,
}

/// Builds the binaries of the committed plan and times the generated engine with
/// `edgent-device bench` (xtask does not link the generated crate: a stale plan must not
/// stop `cargo xtask generate` from building).
fn generated(args: &BenchArgs, isa: Isa) -> anyhow::Result<DeviceBench> {
    let bins = crate::lab::Binaries::build(None)?;
    let out = Command::new(&bins.device)
        .args(["bench", "--json", "--engine", "generated"])
        .args(["--repeats", &args.repeats.to_string()])
        .args(["--threads", &args.threads.to_string()])
        .args(if args.batches.is_empty() {
            Vec::new()
        } else {
            vec!["--batches".to_string(), batches_arg(&args.batches)]
        })
        .env("EDGENT_ISA", isa.name())
        .output()
        .context("cannot run edgent-device bench")?;
    ensure!(
        out.status.success(),
        "edgent-device bench failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bench: DeviceBench = serde_json::from_slice(&out.stdout)
        .context("edgent-device bench printed no JSON report")?;
    ensure!(
        bench.ms.len() == NUM_EXITS && bench.logits.len() == NUM_EXITS,
        "edgent-device bench reported {} exits, expected {NUM_EXITS}",
        bench.ms.len()
    );
    Ok(bench)
}

/// `--batches` as the binaries take it: `1,8,64`.
fn batches_arg(batches: &[u32]) -> String {
    batches
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// onnxruntime's medians per exit, from `scripts/onnxruntime/bench.py` run on the same
/// weights; the script checks its logits against `reference` (the generated engine's).
fn onnxruntime(
    workload: &Workload,
    reference: &DeviceBench,
    threads: u16,
    repeats: u32,
) -> anyhow::Result<(Vec<f64>, String)> {
    let root = crate::project_root();
    let setup = Command::new("bash")
        .arg(root.join("scripts/onnxruntime/setup.sh"))
        .output()
        .context("cannot run scripts/onnxruntime/setup.sh")?;
    ensure!(
        setup.status.success(),
        "scripts/onnxruntime/setup.sh failed:\n{}",
        String::from_utf8_lossy(&setup.stderr)
    );
    let stdout = String::from_utf8_lossy(&setup.stdout);
    let python = stdout
        .lines()
        .last()
        .context("setup.sh printed no python")?;
    let dir = root.join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let reference_file = dir.join("onnxruntime-reference.json");
    let file = json!({
        "channels": workload.table.input[0],
        "input": reference.input,
        "logits": reference.logits,
    });
    std::fs::write(&reference_file, serde_json::to_vec(&file)?)?;
    let out = Command::new(python)
        .arg(root.join("scripts/onnxruntime/bench.py"))
        .args(["--weights".as_ref(), workload.weights_file.as_os_str()])
        .args([
            "--threads",
            &threads.to_string(),
            "--repeats",
            &repeats.to_string(),
        ])
        .args(["--reference".as_ref(), reference_file.as_os_str()])
        .output()
        .context("cannot run scripts/onnxruntime/bench.py")?;
    if !out.status.success() {
        bail!(
            "onnxruntime's bench failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().context("bench.py printed nothing")?;
    let result: serde_json::Value = serde_json::from_str(last).context("bench.py's JSON")?;
    let ms = result["ms"]
        .as_array()
        .context("bench.py's JSON has no ms")?
        .iter()
        .map(|v| v.as_f64().context("a time is not a number"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    ensure!(
        ms.len() == NUM_EXITS,
        "bench.py timed {} exits, expected {NUM_EXITS}",
        ms.len()
    );
    let version = result["onnxruntime"].as_str().unwrap_or("?").to_string();
    Ok((ms, version))
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let workload = Workload::load()?;
    let isa = match args.isa {
        Some(isa) if !isa.supported() => bail!("this CPU cannot run {isa} kernels"),
        Some(isa) => isa,
        None => Isa::detect().map_err(anyhow::Error::msg)?,
    };
    let pool = runtime::model::backend::thread_pool(usize::from(args.threads))
        .map_err(anyhow::Error::msg)?;
    let generated = generated(&args, isa)?;
    let interpreted = PackedNetwork::new(&workload.table, &workload.weights, isa)?;
    let burn_on = |device: burn::prelude::Device| -> anyhow::Result<BurnEngine> {
        let model = runtime::BranchyAlexNetConfig::new()
            .with_channels(workload.table.input[0])
            .with_classes(workload.table.classes)
            .init(&device)
            .load_weights(&workload.weights, &device)?;
        Ok(BurnEngine::new(model, device))
    };
    let flex = burn_on(Backend::Flex.device())?;
    let wgpu = if args.wgpu {
        let device = Backend::Wgpu
            .open()
            .map_err(|why| anyhow::anyhow!("--wgpu: {why}"))?;
        Some(burn_on(device)?)
    } else {
        None
    };
    let mut columns: Vec<(&str, Vec<f64>)> = vec![
        ("generated", generated.ms.clone()),
        (
            "interpreted",
            pool.install(|| workload.time(&interpreted, args.repeats))?,
        ),
        ("flex", pool.install(|| workload.time(&flex, args.repeats))?),
    ];
    if let Some(wgpu) = &wgpu {
        columns.push(("wgpu", workload.time(wgpu, args.repeats)?));
    }
    let mut ort_version = None;
    if args.onnxruntime {
        let (ms, version) = onnxruntime(&workload, &generated, args.threads, args.repeats)?;
        columns.push(("onnxruntime", ms));
        ort_version = Some(version);
    }
    // Exit 5's images/s against batch size: the generated engine as its own process
    // measured it, the others here.
    let mut sweep: Vec<(&str, Vec<f64>)> = Vec::new();
    if !args.batches.is_empty() {
        let throughput = |engine: &dyn Engine| {
            engine.throughput(NUM_EXITS, &workload.input, &args.batches, args.repeats)
        };
        sweep.push(("generated", generated.images_per_s.clone()));
        sweep.push(("interpreted", pool.install(|| throughput(&interpreted))?));
        sweep.push(("flex", pool.install(|| throughput(&flex))?));
        if let Some(wgpu) = &wgpu {
            sweep.push(("wgpu", throughput(wgpu)?));
        }
    }
    let ratio =
        |a: &[f64], b: &[f64]| -> Vec<f64> { a.iter().zip(b).map(|(a, b)| a / b).collect() };
    let column = |name: &str| columns.iter().find(|(n, _)| *n == name).map(|(_, v)| v);
    let flex_ms = column("flex").context("flex was timed")?;
    let mut ratios = vec![("flex/generated", ratio(flex_ms, &generated.ms))];
    if let Some(wgpu_ms) = column("wgpu") {
        ratios.push(("wgpu/generated", ratio(wgpu_ms, &generated.ms)));
    }
    if let Some(ort) = column("onnxruntime") {
        ratios.push(("generated/onnxruntime", ratio(&generated.ms, ort)));
    }
    if args.json {
        let ms: serde_json::Map<String, serde_json::Value> = columns
            .iter()
            .map(|(name, v)| (name.to_string(), json!(v)))
            .collect();
        let r: serde_json::Map<String, serde_json::Value> = ratios
            .iter()
            .map(|(name, v)| (name.to_string(), json!(v)))
            .collect();
        let throughput: serde_json::Map<String, serde_json::Value> = sweep
            .iter()
            .map(|(name, v)| (name.to_string(), json!(v)))
            .collect();
        let out = json!({
            "threads": args.threads,
            "wgpu_adapter": wgpu.as_ref().map(|_| Backend::Wgpu.adapter()),
            "batches": args.batches,
            "images_per_s_exit5": throughput,
            "isa": isa.name(),
            "generated": generated.engine,
            "repeats": args.repeats,
            "onnxruntime_version": ort_version,
            "ms": ms,
            "ratios": r,
        });
        println!("{out}");
        return Ok(());
    }
    println!(
        "forward latency, batch 1, median of {} runs (ms), {} thread(s); generated and interpreted kernels: {isa}",
        args.repeats, args.threads,
    );
    print!("{:<5}", "exit");
    for (name, _) in &columns {
        print!(" {name:>12}");
    }
    for (name, _) in &ratios {
        print!(" {name:>22}");
    }
    println!();
    for exit in 0..NUM_EXITS {
        print!("{:<5}", exit + 1);
        for (_, v) in &columns {
            print!(" {:>12.3}", v[exit]);
        }
        for (_, v) in &ratios {
            print!(" {:>21.2}×", v[exit]);
        }
        println!();
    }
    if let Some(version) = ort_version {
        println!(
            "onnxruntime {version}; its logits matched the generated engine's (≤ 1e-4 relative)"
        );
    }
    if wgpu.is_some() {
        println!("wgpu adapter: {}", Backend::Wgpu.adapter());
    }
    if !sweep.is_empty() {
        println!("\nthroughput of exit 5 against batch size (images/s)");
        print!("{:<6}", "batch");
        for (name, _) in &sweep {
            print!(" {name:>12}");
        }
        println!();
        for (i, b) in args.batches.iter().enumerate() {
            print!("{b:<6}");
            for (_, v) in &sweep {
                print!(" {:>12.0}", v[i]);
            }
            println!();
        }
    }
    Ok(())
}
