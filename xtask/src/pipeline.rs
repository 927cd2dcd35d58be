//! `cargo xtask pipeline`: the whole chain the design card describes, in one command —
//! train, profile both roles, fit (with the chain check), generate the plan, build
//! `edgent-device` and `edgent-edge` with that plan compiled in, and a short co-inference
//! demonstration over a shaped link.
//!
//! Every step writes under one output directory and records a stamp (the digest of its
//! settings and input files, and of each output): a step whose stamp still matches is
//! skipped, so a second run redoes only what changed. Each step is also a command of its own
//! (`cargo xtask train`, `profile`, `fit`, `generate`, `experiments`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, ensure};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use runtime::Backend;
use runtime::EngineKind;
use runtime::plan::Policy;
use runtime::slowdown::Slowdown;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use toolchain::profile::Role;

use crate::lab::{Binaries, Lab, Point, rate_in_words};
use crate::plot::{self, Series};
use crate::{generate, latency, train};

/// Options of `cargo xtask pipeline`.
#[derive(Args, Debug)]
pub struct PipelineArgs {
    /// Output directory: each step's outputs, stamps, the binaries and the demonstration.
    #[arg(long, default_value = "runs/pipeline")]
    out: PathBuf,
    /// Training epochs (default: 5; 1 with --quick).
    #[arg(long, value_parser = train::positive)]
    epochs: Option<usize>,
    /// A short run (minutes after the build on 2 cores): one epoch, a one-round latency
    /// check, a 20-image demonstration per bandwidth.
    #[arg(long)]
    quick: bool,
    /// Run every step, even those whose outputs are up to date.
    #[arg(long)]
    force: bool,
    /// The emulated device is this many times slower than this machine (DESIGN.md §8): by
    /// default a Raspberry-Pi-class device, whose exit 5 takes about the 788 ms of the
    /// paper's Raspberry Pi 3 profile (the generated engine runs it in about 0.48 ms here).
    #[arg(long, default_value = "1600")]
    slowdown: Slowdown,
    /// CPU threads per role (0: one per core), as `cargo xtask profile --threads`.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// The engine both roles are profiled on and the binaries run: generated or burn.
    #[arg(long, default_value = "generated")]
    engine: EngineKind,
    /// The demonstration's deadline per image, ms.
    #[arg(long, default_value_t = 200.0, value_parser = positive_ms)]
    deadline_ms: f64,
}

/// Parses a positive, finite number of milliseconds.
fn positive_ms(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(ms) if ms.is_finite() && ms > 0.0 => Ok(ms),
        _ => Err(format!("`{s}` is not a positive number of milliseconds")),
    }
}

/// What a step leaves behind: the digest of what it was run from and of what it wrote.
#[derive(Debug, Serialize, Deserialize)]
struct Stamp {
    inputs: String,
    outputs: BTreeMap<String, String>,
    seconds: f64,
}

/// One step of the pipeline, described before it runs.
struct Step {
    name: &'static str,
    /// Settings in words; part of the inputs' digest.
    settings: String,
    /// Files read (or directories, whose files are read in name order).
    inputs: Vec<PathBuf>,
    /// Files written.
    outputs: Vec<PathBuf>,
}

/// Runs steps in order, skipping those whose stamps match, with an ETA for the rest.
struct Runner {
    stamps: PathBuf,
    /// What every step also depends on: this program's code and the machine it measures.
    context: String,
    force: bool,
    /// Each step's name and expected duration, in order.
    plan: Vec<(&'static str, f64)>,
    done: usize,
    started: Instant,
}

impl Runner {
    fn stamp_path(&self, name: &str) -> PathBuf {
        self.stamps.join(format!("{name}.json"))
    }

    fn read_stamp(&self, name: &str) -> Option<Stamp> {
        let text = std::fs::read_to_string(self.stamp_path(name)).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// The expected seconds of the steps from `from` on: the last run's where there was one.
    fn remaining(&self, from: usize) -> f64 {
        self.plan
            .get(from..)
            .unwrap_or_default()
            .iter()
            .map(|(name, default)| self.read_stamp(name).map_or(*default, |s| s.seconds))
            .sum()
    }

    /// Runs `step` with `work`, unless its stamp says its outputs are up to date.
    fn run(&mut self, step: Step, work: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<()> {
        self.run_step(step, self.force, work)
    }

    /// Runs `step` with `work` whatever its stamp says (a step whose own tool knows best
    /// what is stale, such as cargo), and records its stamp.
    fn run_always(
        &mut self,
        step: Step,
        work: impl FnOnce() -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        self.run_step(step, true, work)
    }

    fn run_step(
        &mut self,
        step: Step,
        force: bool,
        work: impl FnOnce() -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let index = self.done;
        self.done += 1;
        let total = self.plan.len();
        let inputs = inputs_digest(&self.context, &step)?;
        let previous = self.read_stamp(step.name);
        let up_to_date = !force
            && previous.as_ref().is_some_and(|stamp| {
                stamp.inputs == inputs
                    && step.outputs.len() == stamp.outputs.len()
                    && step.outputs.iter().all(|path| {
                        let recorded = stamp.outputs.get(&path.display().to_string());
                        recorded.is_some_and(|r| file_digest(path).is_ok_and(|d| d == *r))
                    })
            });
        if up_to_date {
            println!(
                "\n[{}/{total}] {}: up to date (its inputs and outputs match the stamp), skipped",
                index + 1,
                step.name
            );
            return Ok(());
        }
        let expected = previous
            .as_ref()
            .map(|s| s.seconds)
            .or_else(|| self.plan.get(index).map(|p| p.1))
            .unwrap_or(0.0);
        println!(
            "\n[{}/{total}] {} — {}; about {} for this step, {} for the pipeline ({} so far)",
            index + 1,
            step.name,
            step.settings,
            words(expected),
            words(self.remaining(index)),
            words(self.started.elapsed().as_secs_f64())
        );
        let started = Instant::now();
        work().with_context(|| format!("pipeline step `{}` failed", step.name))?;
        let seconds = started.elapsed().as_secs_f64();
        let mut outputs = BTreeMap::new();
        for path in &step.outputs {
            let digest = file_digest(path).with_context(|| {
                format!("step `{}` did not write {}", step.name, path.display())
            })?;
            outputs.insert(path.display().to_string(), digest);
        }
        std::fs::create_dir_all(&self.stamps)?;
        let stamp = Stamp {
            inputs,
            outputs,
            seconds,
        };
        std::fs::write(
            self.stamp_path(step.name),
            serde_json::to_string_pretty(&stamp)? + "\n",
        )?;
        println!(
            "[{}/{total}] {} done in {}",
            index + 1,
            step.name,
            words(seconds)
        );
        Ok(())
    }
}

/// SHA-256 of a file, hex.
fn file_digest(path: &Path) -> anyhow::Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

/// SHA-256 over the context, a step's settings and every input file's name and content.
fn inputs_digest(context: &str, step: &Step) -> anyhow::Result<String> {
    let mut hasher = Sha256::new();
    hasher.update(context.as_bytes());
    hasher.update([0]);
    hasher.update(step.name.as_bytes());
    hasher.update([0]);
    hasher.update(step.settings.as_bytes());
    for input in &step.inputs {
        let mut files = Vec::new();
        if input.is_dir() {
            for entry in std::fs::read_dir(input)? {
                files.push(entry?.path());
            }
            files.sort();
        } else {
            files.push(input.clone());
        }
        for file in files {
            hasher.update([0]);
            hasher.update(file.display().to_string().as_bytes());
            hasher.update([0]);
            hasher.update(file_digest(&file)?.as_bytes());
        }
    }
    Ok(hex::encode(hasher.finalize()))
}

/// This program's code (the digest of its binary, which holds the trainer, the toolchain
/// and the code generator) and this machine (its CPU and core count): a step run by other
/// code, or measured on another machine, is not up to date.
fn context() -> anyhow::Result<String> {
    let exe = std::env::current_exe().context("cannot find this program's binary")?;
    let code = file_digest(&exe)?;
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    Ok(format!("xtask {code}; {cpu}, {cores} cores"))
}

/// A duration in words: `45 s`, `3 min 20 s`.
fn words(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    if s < 60 {
        format!("{s} s")
    } else if s < 3600 {
        format!("{} min {} s", s / 60, s % 60)
    } else {
        format!("{} h {} min", s / 3600, (s % 3600) / 60)
    }
}

/// The demonstration's bandwidths: slow enough that the device answers alone, then fast
/// enough for the edge.
fn demo_rates(quick: bool) -> Vec<f64> {
    if quick {
        vec![25e3, 50e3, 100e3, 200e3, 1e6]
    } else {
        vec![25e3, 50e3, 100e3, 200e3, 500e3, 1e6]
    }
}

/// Runs the whole pipeline.
pub fn run(args: PipelineArgs) -> anyhow::Result<()> {
    let out = args.out.clone();
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let out = out
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", out.display()))?;
    let epochs = args.epochs.unwrap_or(if args.quick { 1 } else { 5 });
    let images = if args.quick { 20 } else { 50 };
    // Expected seconds per step on this project's 2-core machine (a step's last run, where
    // there was one, replaces these).
    let train_s = 230.0 * epochs as f64 + 20.0;
    let runner_plan = vec![
        ("train", train_s),
        ("profile-device", 30.0),
        ("profile-edge", 30.0),
        ("profile-batches", if args.quick { 40.0 } else { 110.0 }),
        ("fit", if args.quick { 90.0 } else { 480.0 }),
        ("encodings", if args.quick { 60.0 } else { 420.0 }),
        ("generate", 2.0),
        ("build", 90.0),
        (
            "demonstration",
            10.0 + demo_rates(args.quick).len() as f64 * images as f64 * 0.3,
        ),
    ];
    let mut runner = Runner {
        stamps: out.join("stamps"),
        context: context()?,
        force: args.force,
        plan: runner_plan,
        done: 0,
        started: Instant::now(),
    };

    // 1. Train.
    let train_dir = out.join("train");
    let data_dir = PathBuf::from(datasets::fashion_mnist::DEBIAN_DIR);
    ensure!(
        data_dir.is_dir(),
        "Fashion-MNIST is not at {}: run `bash scripts/setup.sh` (it installs Debian's dataset-fashion-mnist)",
        data_dir.display()
    );
    runner.run(
        Step {
            name: "train",
            settings: format!(
                "Fashion-MNIST, {epochs} epoch(s), seed {}",
                trainer::TrainConfig::default().seed
            ),
            inputs: vec![data_dir.clone()],
            outputs: ["model.safetensors", "metrics.json", "config.json"]
                .iter()
                .map(|f| train_dir.join(f))
                .collect(),
        },
        || {
            train::run(train::TrainArgs {
                dataset: datasets::DatasetKind::FashionMnist,
                data_dir: Some(data_dir.clone()),
                epochs,
                batch_size: trainer::TrainConfig::default().batch_size,
                lr: trainer::TrainConfig::default().lr,
                seed: trainer::TrainConfig::default().seed,
                limit: None,
                test_limit: None,
                exit_weights: None,
                no_augment: false,
                backend: Backend::Flex,
                out: train_dir.clone(),
                quiet: false,
            })
        },
    )?;

    // 2, 3. Profile both roles.
    let engine_args = latency::EngineArgs {
        engine: args.engine,
        backend: Backend::Flex,
        threads: args.threads,
    };
    let profiles = out.join("profile");
    for role in Role::ALL {
        let csv = profiles.join(format!("{}.csv", role.name()));
        let slowdown = match role {
            Role::Device => args.slowdown,
            Role::Edge => Slowdown::NONE,
        };
        runner.run(
            Step {
                name: match role {
                    Role::Device => "profile-device",
                    Role::Edge => "profile-edge",
                },
                settings: format!(
                    "{} role, {} engine, slowdown {}, {} thread(s)",
                    role.name(),
                    args.engine,
                    slowdown.factor(),
                    args.threads
                ),
                inputs: vec![],
                outputs: vec![csv.clone()],
            },
            || {
                latency::run_profile(latency::ProfileArgs {
                    role,
                    slowdown,
                    engine: engine_args,
                    out: csv.clone(),
                })
            },
        )?;
    }

    // The edge's suffixes at batch sizes: what batching adds to the plan's edge times.
    let batches_json = profiles.join("batches.json");
    let batches: Vec<usize> = if args.quick {
        vec![1, 8, 64]
    } else {
        vec![1, 2, 4, 8, 16, 32, 64]
    };
    runner.run(
        Step {
            name: "profile-batches",
            settings: format!(
                "edge suffixes at batches {batches:?}, {} engine, {} thread(s)",
                args.engine, args.threads
            ),
            inputs: vec![],
            outputs: vec![batches_json.clone()],
        },
        || {
            latency::run_profile_batches(latency::ProfileBatchesArgs {
                engine: engine_args,
                batches: batches.clone(),
                channels: datasets::DatasetKind::FashionMnist.channels(),
                rounds: if args.quick { 1 } else { 3 },
                out: batches_json.clone(),
            })
        },
    )?;

    // 4. Fit, and check against the real chains.
    let latency_json = out.join("latency").join("latency.json");
    let csvs: Vec<PathBuf> = Role::ALL
        .iter()
        .map(|r| profiles.join(format!("{}.csv", r.name())))
        .collect();
    runner.run(
        Step {
            name: "fit",
            settings: format!(
                "linfa fits of both profiles, {} check of every slice",
                if args.quick {
                    "a one-round"
                } else {
                    "the full"
                }
            ),
            inputs: csvs.clone(),
            outputs: vec![latency_json.clone()],
        },
        || {
            latency::run_fit(latency::FitArgs {
                profile: csvs.iter().map(|p| p.display().to_string()).collect(),
                out: latency_json.clone(),
                check: true,
                channels: datasets::DatasetKind::FashionMnist.channels(),
                quick: args.quick,
            })
        },
    )?;

    // 5. Measure the encodings of every split (on a plan of the paper's routes, which
    // names the weights and data), then generate the plan with them.
    let base_dir = out.join("base-plan");
    let base_json = base_dir.join("plan.json");
    let encodings_dir = out.join("encodings");
    let encodings_json = encodings_dir.join("encodings.json");
    let encoding_images: u32 = if args.quick { 1_000 } else { 10_000 };
    let trained = vec![
        train_dir.join("model.safetensors"),
        train_dir.join("metrics.json"),
        train_dir.join("config.json"),
        latency_json.clone(),
    ];
    runner.run(
        Step {
            name: "encodings",
            settings: format!(
                "bytes, accuracy and codec time of every encoding at every split, {encoding_images} test images"
            ),
            inputs: trained.clone(),
            outputs: vec![encodings_json.clone()],
        },
        || {
            generate::run(generate::GenerateArgs {
                run: train_dir.clone(),
                latency: latency_json.display().to_string(),
                out: base_json.clone(),
                encodings: None,
                batches: None,
            })?;
            crate::encodings::run(crate::encodings::EncodingsArgs::new(
                base_json.clone(),
                encodings_dir.clone(),
                encoding_images,
            ))
        },
    )?;
    let plan_dir = out.join("plan");
    let plan_json = plan_dir.join("plan.json");
    let weights = plan_dir.join("model.safetensors");
    runner.run(
        Step {
            name: "generate",
            settings: "plan from the trained model, the fitted models and the encodings".into(),
            inputs: [trained, vec![encodings_json.clone(), batches_json.clone()]].concat(),
            outputs: vec![plan_json.clone(), weights.clone()],
        },
        || {
            generate::run(generate::GenerateArgs {
                run: train_dir.clone(),
                latency: latency_json.display().to_string(),
                out: plan_json.clone(),
                encodings: Some(encodings_json.clone()),
                batches: Some(batches_json.clone()),
            })
        },
    )?;

    // 6. Build the binaries with this plan compiled in. Cargo decides what is stale (the
    // code may have changed too), so this step always asks it; it is quick when nothing is.
    let bin_dir = out.join("bin");
    let bins = Binaries {
        edge: bin_dir.join("edgent-edge"),
        device: bin_dir.join("edgent-device"),
    };
    runner.run_always(
        Step {
            name: "build",
            settings: "cargo build --release -p generated with EDGENT_PLAN set to the plan".into(),
            inputs: vec![plan_json.clone(), weights.clone()],
            outputs: vec![bins.edge.clone(), bins.device.clone()],
        },
        || {
            Binaries::build(Some(&plan_json))?.copy_to(&bin_dir)?;
            // Leave cargo's own binaries built from the committed plan, as the tests and
            // `cargo run -p generated` expect them.
            Binaries::build(None)?;
            Ok(())
        },
    )?;

    // 7. The demonstration.
    let demo_dir = out.join("demonstration");
    let summary = demo_dir.join("summary.md");
    let why_not_shaped = toolchain::shaping::unavailable();
    runner.run(
        Step {
            name: "demonstration",
            settings: format!(
                "{images} images per bandwidth, deadline {} ms, {}",
                args.deadline_ms,
                if why_not_shaped.is_none() {
                    "shaped link"
                } else {
                    "loopback"
                }
            ),
            inputs: vec![bins.edge.clone(), bins.device.clone()],
            outputs: vec![summary.clone(), demo_dir.join("demonstration.png")],
        },
        || {
            let demo = Demonstration {
                images,
                deadline_ms: args.deadline_ms,
                rates: demo_rates(args.quick),
                why_not_shaped: why_not_shaped.clone(),
            };
            demo.run(&demo_dir, &bins, &plan_json)
        },
    )?;
    let text = std::fs::read_to_string(&summary)?;
    println!("\n{text}");
    println!(
        "pipeline finished in {}; everything is under {}",
        words(runner.started.elapsed().as_secs_f64()),
        args.out.display()
    );
    Ok(())
}

/// The demonstration's settings.
struct Demonstration {
    images: usize,
    deadline_ms: f64,
    rates: Vec<f64>,
    /// Why the link cannot be shaped here (not root, no iproute2), if it cannot.
    why_not_shaped: Option<String>,
}

impl Demonstration {
    /// Runs the device at each bandwidth against one edge and writes `summary.md` and
    /// `demonstration.png` under `dir`. On unshaped loopback each device plans for the
    /// stated bandwidth but its transfers are not slowed: the plans are shown, the latency
    /// comparison is not (it would compare a slow link's prediction with loopback).
    fn run(&self, dir: &Path, bins: &Binaries, plan_path: &Path) -> anyhow::Result<()> {
        let Self {
            images,
            deadline_ms,
            rates,
            why_not_shaped,
        } = self;
        let (images, deadline_ms) = (*images, *deadline_ms);
        let shaped = why_not_shaped.is_none();
        std::fs::create_dir_all(dir)?;
        let plan = codegen::load(plan_path).map_err(|e| anyhow::anyhow!(e.join("\n")))?;
        let bar = ProgressBar::new(rates.len() as u64).with_style(ProgressStyle::with_template(
            "{bar:30} {pos}/{len} bandwidths, eta {eta} {msg}",
        )?);
        if let Some(reason) = why_not_shaped {
            println!(
                "no shaped link ({reason}): the demonstration runs on unshaped loopback, each device planning for the stated bandwidth; run as root for a shaped link"
            );
        }
        let lab = Lab::start(
            "edgent-demo",
            dir,
            bins.clone(),
            images,
            bar.clone(),
            shaped,
            &[],
        )?;
        let mut points = Vec::new();
        for &rate in rates {
            let name = format!("bandwidth-{:.0}kbit", rate / 1e3);
            points.push(lab.run(&name, rate, deadline_ms, Policy::Edgent, &[], &[])?);
        }
        bar.finish_and_clear();
        drop(lab);

        let accuracy: Vec<f64> = plan.exits.iter().map(|e| e.accuracy).collect();
        let mut text = String::new();
        writeln!(
            text,
            "# Edgent co-inference demonstration\n\n{} link, deadline {deadline_ms:.0} ms, {images} Fashion-MNIST test images per bandwidth; device emulated {}× slower than this machine; plan `{}`.\n",
            if shaped {
                "tc-shaped (two network namespaces, a veth pair, `tbf` both ways)"
            } else {
                "Unshaped loopback (not root: the plans are for the stated bandwidths, the transfers are not slowed)"
            },
            plan.device_slowdown,
            &plan.digest[..16]
        )?;
        writeln!(
            text,
            "| bandwidth | exit, partition chosen | split | in deadline | predicted ms | measured ms | error | expected accuracy |\n|---|---|---|---|---|---|---|---|"
        )?;
        let mut errors = Vec::new();
        let (mut hits, mut total) = (0usize, 0usize);
        for (rate, point) in rates.iter().zip(&points) {
            let (exit, partition) = point.choice();
            let n = plan
                .exits
                .get(exit.wrapping_sub(1))
                .map_or(0, |e| e.layers.len());
            let split = if partition == 0 {
                "edge only"
            } else if partition >= n {
                "device only"
            } else {
                "device + edge"
            };
            let (measured, predicted) = (point.total_ms(), point.predicted_ms());
            let error = 100.0 * (measured - predicted).abs() / measured;
            errors.push(error);
            let met = point.lines.iter().filter(|l| l["met"] == true).count();
            hits += met;
            total += point.lines.len();
            let error = if shaped {
                format!("{error:.1} %")
            } else {
                "–".into()
            };
            writeln!(
                text,
                "| {} | {exit}, {partition} | {split} | {met}/{} | {predicted:.1} | {measured:.1} | {error} | {:.1} % |",
                rate_in_words(*rate),
                point.lines.len(),
                100.0 * point.expected_accuracy(&accuracy)
            )?;
        }
        errors.sort_by(f64::total_cmp);
        let comparison = if shaped {
            format!(
                "; predicted against measured median latency: median error {:.1} %, worst {:.1} %",
                errors[errors.len() / 2],
                errors.last().copied().unwrap_or(f64::NAN)
            )
        } else {
            String::new()
        };
        writeln!(
            text,
            "\n**Summary.** {hits} of {total} requests answered within {deadline_ms:.0} ms ({:.1} %){comparison}.\n\n![latency against bandwidth](demonstration.png)",
            100.0 * hits as f64 / total.max(1) as f64,
        )?;
        std::fs::write(dir.join("summary.md"), &text)?;

        let xs: Vec<f64> = rates.iter().map(|r| r / 1e3).collect();
        let series = |name: &str, ys: Vec<f64>, dashed: bool| Series {
            name: name.into(),
            points: xs.iter().copied().zip(ys).collect(),
            dashed,
        };
        plot::lines(
            &dir.join("demonstration.png"),
            &format!(
                "Edgent over {}, deadline {deadline_ms:.0} ms",
                if shaped { "a shaped link" } else { "loopback" }
            ),
            ("bandwidth (kbit/s)", "latency (ms)"),
            &[
                series(
                    "measured (median)",
                    points.iter().map(Point::total_ms).collect(),
                    false,
                ),
                series(
                    "predicted",
                    points.iter().map(Point::predicted_ms).collect(),
                    true,
                ),
                series("deadline", vec![deadline_ms; xs.len()], true),
            ],
            plot::Scale::LOG_X,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_are_positive_milliseconds() {
        assert_eq!(positive_ms("150"), Ok(150.0));
        for bad in ["0", "-5", "NaN", "inf", "200ms"] {
            assert!(positive_ms(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_in_words() {
        assert_eq!(words(4.4), "4 s");
        assert_eq!(words(200.0), "3 min 20 s");
        assert_eq!(words(7300.0), "2 h 1 min");
    }

    #[test]
    fn a_step_is_skipped_only_while_inputs_and_outputs_match() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.txt");
        let output = dir.path().join("out.txt");
        std::fs::write(&input, "a").unwrap();
        let mut runner = Runner {
            stamps: dir.path().join("stamps"),
            context: "test".into(),
            force: false,
            plan: vec![("copy", 1.0); 4],
            done: 0,
            started: Instant::now(),
        };
        let step = || Step {
            name: "copy",
            settings: "copy".into(),
            inputs: vec![input.clone()],
            outputs: vec![output.clone()],
        };
        let runs = std::cell::Cell::new(0);
        let copy = || {
            runs.set(runs.get() + 1);
            std::fs::copy(&input, &output)?;
            Ok(())
        };
        runner.run(step(), copy).unwrap();
        runner.run(step(), copy).unwrap();
        assert_eq!(runs.get(), 1, "the second run is up to date");
        std::fs::write(&input, "b").unwrap();
        runner.run(step(), copy).unwrap();
        assert_eq!(runs.get(), 2, "a changed input reruns the step");
        std::fs::write(&output, "edited").unwrap();
        runner.run(step(), copy).unwrap();
        assert_eq!(runs.get(), 3, "an edited output reruns the step");
        runner.plan.push(("copy", 1.0));
        runner.run_always(step(), copy).unwrap();
        assert_eq!(runs.get(), 4, "run_always runs an up-to-date step");
        let missing = Step {
            outputs: vec![dir.path().join("never-written")],
            ..step()
        };
        runner.plan.push(("copy", 1.0));
        assert!(runner.run(missing, || Ok(())).is_err());
    }

    #[test]
    fn a_step_reads_the_files_of_an_input_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), "1").unwrap();
        let step = Step {
            name: "s",
            settings: String::new(),
            inputs: vec![dir.path().to_path_buf()],
            outputs: vec![],
        };
        let before = inputs_digest("test", &step).unwrap();
        assert_ne!(inputs_digest("other code", &step).unwrap(), before);
        std::fs::write(dir.path().join("a"), "2").unwrap();
        assert_ne!(inputs_digest("test", &step).unwrap(), before);
    }
}
