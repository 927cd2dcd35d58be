//! `cargo xtask experiments`: the paper's evaluation (Figs. 6–9 and the journal version's
//! changing bandwidth) with `edgent-edge` and `edgent-device` as separate processes in two
//! network namespaces over a tc-shaped link, each figure also computed in the paper's own
//! setting ([`crate::paper`]), which also gets a section of its own.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use runtime::plan::{ExitCosts, Link, PairCost, Policy, decide_policy};

use crate::lab::{Binaries, Lab, Point, rate_in_words};
use crate::plot::{self, BarSeries, Series};

/// Options of `cargo xtask experiments`.
#[derive(Args, Debug)]
pub struct ExperimentsArgs {
    /// Fewer points and images (finishes in a few minutes).
    #[arg(long)]
    quick: bool,
    /// Output directory: report.md, figures, traces.
    #[arg(long, default_value = "runs/experiments")]
    out: PathBuf,
    /// Images per measured point (default: 20 with --quick, 150 without).
    #[arg(long)]
    images: Option<usize>,
    /// The plan the binaries were generated from.
    #[arg(long, default_value = "generated/plan.json")]
    plan: PathBuf,
    /// Only the computed sections (the paper's own setting; this model's encodings and
    /// where a middle partition wins): no shaped links, no root.
    #[arg(long)]
    paper_only: bool,
    /// Run the edge on burn with this backend (e.g. wgpu: the GPU, or lavapipe) instead of
    /// the plan's engine; the plan's edge times stay the profiled engine's, and the device
    /// learns the difference as it goes.
    #[arg(long)]
    edge_backend: Option<runtime::Backend>,
}

/// Deadline of the computed-only report's placement map, ms (the full run's fixed deadline).
const COMPUTED_DEADLINE_MS: f64 = 200.0;

/// Round trip the computed lines assume, ms.
pub(crate) const RTT_MS: f64 = 1.0;

/// The plan's costs (this machine) and the paper's own setting's.
pub(crate) struct Costs {
    here: Vec<ExitCosts>,
    paper: Vec<ExitCosts>,
    slowdown: f64,
    source: String,
    plan: codegen::plan::Plan,
}

impl Costs {
    fn load(path: &Path) -> anyhow::Result<Self> {
        let plan = codegen::load(path).map_err(|e| anyhow::anyhow!(e.join("\n")))?;
        let here = crate::generate::plan_costs(&plan)?;
        let paper = crate::paper::costs(crate::paper::InputWire::F32)?;
        Ok(Self {
            here,
            paper,
            slowdown: plan.device_slowdown,
            source: plan.latency_source.clone(),
            plan,
        })
    }

    /// The decision under `policy` at `bandwidth_bps` with the computed lines' round trip.
    pub(crate) fn decide(
        costs: &[ExitCosts],
        policy: Policy,
        bandwidth_bps: f64,
        deadline_ms: f64,
    ) -> runtime::plan::Decision {
        let exits: Vec<(f64, &[PairCost])> = costs
            .iter()
            .map(|e| (e.accuracy, e.pairs.as_slice()))
            .collect();
        let link = Link {
            bandwidth_bps,
            rtt_ms: RTT_MS,
        };
        if policy == Policy::Edgent {
            // Edgent chooses among every family of routes (encodings included); the
            // baselines keep the paper's raw image and f32 activations.
            return runtime::plan::decide(costs, link, deadline_ms);
        }
        decide_policy(&exits, policy, link, deadline_ms)
    }

    /// Accuracy the plan promises: the exit's accuracy when feasible, else 0.
    pub(crate) fn promised(
        costs: &[ExitCosts],
        policy: Policy,
        bandwidth_bps: f64,
        deadline_ms: f64,
    ) -> f64 {
        let d = Self::decide(costs, policy, bandwidth_bps, deadline_ms);
        if d.feasible {
            costs[d.exit - 1].accuracy_of(d.encoding)
        } else {
            0.0
        }
    }
}

/// BranchyNet's early exit by entropy on the device alone: each image leaves at the first
/// exit whose softmax entropy is below the threshold, having run the trunk that far and
/// every branch it tried. Computed from the test set (in this process) and the latency
/// models, not measured over the link.
struct EntropyMode {
    /// `exits[i][j]`: logits of exit `j + 1` for test image `i`.
    logits: Vec<Vec<Vec<f32>>>,
    labels: Vec<u8>,
}

impl EntropyMode {
    const THRESHOLDS: [f32; 6] = [0.05, 0.1, 0.2, 0.4, 0.8, 1.6];

    fn load(plan_path: &Path, plan: &codegen::plan::Plan, images: usize) -> anyhow::Result<Self> {
        let device = runtime::Backend::default().device();
        let weights_path = plan_path
            .parent()
            .unwrap_or(Path::new("."))
            .join(&plan.weights_file);
        let weights = runtime::WeightMap::load(&weights_path)?;
        let model = runtime::BranchyAlexNetConfig::new()
            .with_channels(plan.input[0])
            .with_classes(plan.classes)
            .init(&device)
            .load_weights(&weights, &device)?;
        let kind: datasets::DatasetKind = plan.dataset.parse().map_err(anyhow::Error::msg)?;
        let mut set = datasets::load(kind, None, datasets::Split::Test)?;
        set.truncate(images);
        let batcher = datasets::Batcher::new(kind.normalization(), device.clone());
        let mut logits = Vec::new();
        for start in (0..set.len()).step_by(250) {
            let indices: Vec<usize> = (start..(start + 250).min(set.len())).collect();
            let outs: Vec<Vec<f32>> = model
                .forward_all(batcher.batch(&set, &indices).images)
                .into_iter()
                .map(|t| t.into_data().try_into_vec_as::<f32>().unwrap_or_default())
                .collect();
            for i in 0..indices.len() {
                let k = plan.classes;
                logits.push(
                    outs.iter()
                        .map(|o| o[i * k..(i + 1) * k].to_vec())
                        .collect(),
                );
            }
        }
        Ok(Self {
            logits,
            labels: set.labels,
        })
    }

    /// Device time of leaving at each exit: that exit's chain plus the branches tried.
    fn costs(exits: &[ExitCosts], table: &runtime::LayerTable) -> Vec<f64> {
        let local: Vec<f64> = exits
            .iter()
            .map(|e| e.pairs[e.pairs.len() - 1].device_ms)
            .collect();
        let branch: Vec<f64> = exits
            .iter()
            .zip(&table.exits)
            .map(|(e, spec)| {
                local[e.exit - 1] - e.pairs[spec.trunk_layers.min(e.pairs.len() - 1)].device_ms
            })
            .collect();
        (0..exits.len())
            .map(|k| local[k] + branch[..k].iter().sum::<f64>())
            .collect()
    }

    /// Best accuracy within `deadline_ms` over the thresholds, and that threshold.
    fn best(&self, costs: &[f64], deadline_ms: f64) -> (f64, f32) {
        Self::THRESHOLDS
            .iter()
            .map(|&t| {
                let right = self
                    .logits
                    .iter()
                    .zip(&self.labels)
                    .filter(|(l, label)| {
                        let e = runtime::model::entropy::entropy_exit(l, t);
                        costs[e - 1] <= deadline_ms
                            && runtime::model::entropy::argmax(&l[e - 1]) == usize::from(**label)
                    })
                    .count();
                (right as f64 / self.labels.len().max(1) as f64, t)
            })
            .fold((0.0, 0.0), |best, x| if x.0 > best.0 { x } else { best })
    }
}

/// Figs. 6 and 8: the exit and partition Edgent chose at each x (the most frequent per
/// point), beside those `computed` from latency models at the link `at(i)` gives, as bars
/// (one panel for the exit, one for the partition; a "×" instead of a computed bar where no
/// plan meets the deadline).
fn selection_figure<P: std::borrow::Borrow<Point>>(
    path: &Path,
    title: &str,
    (x_desc, xs): (&str, &[f64]),
    measured: &[P],
    computed: &[(&str, &[ExitCosts])],
    at: impl Fn(usize) -> (f64, f64),
) -> anyhow::Result<()> {
    let choices: Vec<(usize, usize)> = measured.iter().map(|p| p.borrow().choice()).collect();
    let mut series = vec![BarSeries {
        name: "measured".into(),
        values: vec![
            choices.iter().map(|c| c.0 as f64).collect(),
            choices.iter().map(|c| c.1 as f64).collect(),
        ],
        computed: false,
    }];
    for (label, costs) in computed {
        let decisions: Vec<_> = (0..xs.len())
            .map(|i| {
                let (rate, deadline) = at(i);
                Costs::decide(costs, Policy::Edgent, rate, deadline)
            })
            .collect();
        series.push(plot::selection_bars((*label).into(), &decisions, true));
    }
    let categories: Vec<String> = xs.iter().map(|x| format!("{x}")).collect();
    plot::bars(
        path,
        title,
        (x_desc, &categories),
        &["exit", "partition"],
        &series,
    )
}

/// Runs every experiment and writes the report.
pub fn run(args: ExperimentsArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let out = args.out.clone();
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let costs = Costs::load(&args.plan)?;
    if args.paper_only {
        let encodings = crate::encodings::section(
            &out,
            &costs.plan,
            &costs.here,
            (COMPUTED_DEADLINE_MS, RTT_MS),
        )?;
        let paper = crate::paper::section(&out)?;
        let path = out.join("report.md");
        std::fs::write(
            &path,
            format!(
                "# Edgent: the computed sections\n\n{}{}",
                encodings.markdown, paper.markdown
            ),
        )
        .with_context(|| format!("cannot write {}", path.display()))?;
        println!(
            "{}\n{}\nreport → {}",
            encodings.summary,
            paper.summary,
            path.display()
        );
        return Ok(());
    }
    let images = args.images.unwrap_or(if args.quick { 20 } else { 150 });
    let rates: Vec<f64> = if args.quick {
        vec![50e3, 200e3, 600e3, 1.5e6]
    } else {
        vec![50e3, 100e3, 200e3, 400e3, 700e3, 1e6, 1.5e6]
    };
    let deadlines: Vec<f64> = if args.quick {
        vec![100.0, 200.0, 400.0, 1000.0]
    } else {
        vec![100.0, 150.0, 200.0, 300.0, 500.0, 700.0, 1000.0]
    };
    let (fixed_deadline, fixed_rate) = (COMPUTED_DEADLINE_MS, 50e3);
    let segment_s = if args.quick { 8.0 } else { 20.0 };
    let schedule_rates = [1.5e6, 60e3, 600e3, 40e3, 1e6];
    let policies = Policy::ALL;
    let total = rates.len() + deadlines.len() * policies.len() + 2;
    let bar = ProgressBar::new(total as u64).with_style(ProgressStyle::with_template(
        "{bar:40} {pos}/{len} runs, {elapsed} {msg}",
    )?);
    if let Some(reason) = toolchain::shaping::unavailable() {
        anyhow::bail!("the experiments run on shaped links: {reason}");
    }
    let bins = Binaries::build(Some(&args.plan))?;
    let edge_args: Vec<String> = match args.edge_backend {
        Some(backend) => ["--engine", "burn", "--backend", backend.name()]
            .map(String::from)
            .to_vec(),
        None => Vec::new(),
    };
    let lab = Lab::start(
        "edgent-exp",
        &out,
        bins,
        images,
        bar.clone(),
        true,
        &edge_args,
    )?;
    let mut report = String::new();
    let mut summary = Vec::new();

    // Figs. 6 and 7: selection and latency against bandwidth at a fixed deadline.
    let mut by_rate = Vec::new();
    for &rate in &rates {
        let name = format!("bandwidth-{:.0}k", rate / 1e3);
        by_rate.push(lab.run(&name, rate, fixed_deadline, Policy::Edgent, &[], &[])?);
    }
    writeln!(
        report,
        "## Selection and latency against bandwidth (Figs. 6, 7)\n\nDeadline {fixed_deadline:.0} ms, {images} test images per point. *Measured*: device and edge processes over the shaped link; the plan is the one the device chose most often, with its own bandwidth estimate. *Paper*: the paper's own setting (its B-AlexNet on CIFAR-10 with its Raspberry Pi / desktop models; section \"The paper's own setting\") at the true rate.\n\n| bandwidth | exit, partition (measured) | measured ms (median) | predicted ms | error % | deadline met % | exit, partition (paper) | paper predicted ms |\n|---|---|---|---|---|---|---|---|"
    )?;
    let mut errors = Vec::new();
    for (rate, point) in rates.iter().zip(&by_rate) {
        let (e, p) = point.choice();
        let sent = point.encoding_note();
        let paper = Costs::decide(&costs.paper, Policy::Edgent, *rate, fixed_deadline);
        let (m, pr) = (point.total_ms(), point.predicted_ms());
        let error = 100.0 * (m - pr).abs() / m;
        errors.push(error);
        writeln!(
            report,
            "| {} | {e}, {p}{sent} | {m:.1} | {pr:.1} | {error:.1} | {:.1} | {} | {:.1} |",
            rate_in_words(*rate),
            100.0 * point.hit_rate(),
            crate::paper::plan_in_words(&paper),
            paper.predicted_ms
        )?;
    }
    let xs: Vec<f64> = rates.iter().map(|r| r / 1e3).collect();
    let series = |name: &str, ys: Vec<f64>, dashed: bool| Series {
        name: name.into(),
        points: xs.iter().copied().zip(ys).collect(),
        dashed,
    };
    selection_figure(
        &out.join("fig6-selection-vs-bandwidth.png"),
        &format!("Exit and partition chosen, deadline {fixed_deadline:.0} ms"),
        ("bandwidth (kbit/s)", &xs),
        &by_rate,
        &[
            ("this machine's models, true rate", &costs.here),
            ("paper's setting", &costs.paper),
        ],
        |i| (rates[i], fixed_deadline),
    )?;
    plot::lines(
        &out.join("fig7-latency-vs-bandwidth.png"),
        &format!("End-to-end latency, deadline {fixed_deadline:.0} ms"),
        ("bandwidth (kbit/s)", "latency (ms)"),
        &[
            series(
                "measured (median)",
                by_rate.iter().map(Point::total_ms).collect(),
                false,
            ),
            series(
                "predicted (this machine)",
                by_rate.iter().map(Point::predicted_ms).collect(),
                true,
            ),
            series(
                "predicted (paper's setting)",
                rates
                    .iter()
                    .map(|&r| {
                        Costs::decide(&costs.paper, Policy::Edgent, r, fixed_deadline).predicted_ms
                    })
                    .collect(),
                true,
            ),
        ],
        plot::Scale::LOG_X,
    )?;
    writeln!(
        report,
        "\n![selection](fig6-selection-vs-bandwidth.png)\n![latency](fig7-latency-vs-bandwidth.png)\n"
    )?;
    let mut sorted = errors.clone();
    sorted.sort_by(f64::total_cmp);
    summary.push(format!(
        "Predicted vs measured latency over {} bandwidths: median error {:.1} %, worst {:.1} %.",
        errors.len(),
        sorted[sorted.len() / 2],
        sorted.last().copied().unwrap_or(f64::NAN)
    ));

    // Figs. 8 and 9: selection and accuracy against the deadline, with the baselines.
    let mut grid: BTreeMap<(usize, Policy), Point> = BTreeMap::new();
    for (i, &deadline) in deadlines.iter().enumerate() {
        for policy in policies {
            let name = format!("deadline-{deadline:.0}ms-{}", policy.name());
            grid.insert(
                (i, policy),
                lab.run(&name, fixed_rate, deadline, policy, &[], &[])?,
            );
        }
    }
    writeln!(
        report,
        "## Selection and accuracy against the deadline (Figs. 8, 9)\n\nBandwidth {}. Accuracy counts a request that misses its deadline as wrong, as in the paper; each answer in time scores its exit's test-set accuracy (the sampled accuracy on the same images is in the second table). Baselines: device-only and edge-only run the whole network (exit 5) on one side; partition-only is Neurosurgeon (exit 5, best split); right-sizing-only picks the exit but never splits. Baselines wait for the edge (no local fallback).\n",
        rate_in_words(fixed_rate)
    )?;
    let accuracy: Vec<f64> = costs.here.iter().map(|e| e.accuracy).collect();
    let mut sampled = String::from("\n| deadline |");
    for policy in policies {
        write!(sampled, " {} sampled acc. % |", policy.name())?;
    }
    sampled.push_str("\n|---|");
    for _ in policies {
        sampled.push_str("---|");
    }
    sampled.push('\n');
    write!(
        report,
        "| deadline | Edgent exit, partition | paper exit, partition |"
    )?;
    for policy in policies {
        write!(report, " {} acc. % (met %) |", policy.name())?;
    }
    write!(report, " Edgent, paper's setting acc. % |\n|---|---|---|")?;
    for _ in policies {
        write!(report, "---|")?;
    }
    writeln!(report, "---|")?;
    let mut dominated = Vec::new();
    let mut hit = Vec::new();
    for (i, &deadline) in deadlines.iter().enumerate() {
        let edgent = &grid[&(i, Policy::Edgent)];
        let (e, p) = edgent.choice();
        let sent = edgent.encoding_note();
        let paper = Costs::decide(&costs.paper, Policy::Edgent, fixed_rate, deadline);
        write!(
            report,
            "| {deadline:.0} ms | {e}, {p}{sent} | {} |",
            crate::paper::plan_in_words(&paper)
        )?;
        write!(sampled, "| {deadline:.0} ms |")?;
        for policy in policies {
            let point = &grid[&(i, policy)];
            let expected = point.expected_accuracy(&accuracy);
            write!(
                report,
                " {:.1} ({:.0}) |",
                100.0 * expected,
                100.0 * point.hit_rate()
            )?;
            write!(sampled, " {:.1} |", 100.0 * point.accuracy_in_time())?;
            if policy != Policy::Edgent && expected > edgent.expected_accuracy(&accuracy) + 0.005 {
                dominated.push(format!("{} at {deadline:.0} ms", policy.name()));
            }
        }
        sampled.push('\n');
        writeln!(
            report,
            " {:.1} |",
            100.0 * Costs::promised(&costs.paper, Policy::Edgent, fixed_rate, deadline)
        )?;
        if let Some(h) = edgent.feasible_hit_rate() {
            hit.push(h);
        }
    }
    report.push_str(&sampled);
    let dseries = |name: &str, ys: Vec<f64>, computed: bool| BarSeries {
        name: name.into(),
        values: vec![ys],
        computed,
    };
    let at = |policy: Policy, f: &dyn Fn(&Point) -> f64| -> Vec<f64> {
        (0..deadlines.len())
            .map(|i| f(&grid[&(i, policy)]))
            .collect()
    };
    let edgent: Vec<&Point> = (0..deadlines.len())
        .map(|i| &grid[&(i, Policy::Edgent)])
        .collect();
    selection_figure(
        &out.join("fig8-selection-vs-deadline.png"),
        &format!("Exit and partition chosen at {}", rate_in_words(fixed_rate)),
        ("deadline (ms)", &deadlines),
        &edgent,
        &[("paper's setting", &costs.paper)],
        |i| (fixed_rate, deadlines[i]),
    )?;
    let mut accuracy_bars: Vec<BarSeries> = policies
        .iter()
        .map(|&policy| {
            dseries(
                policy.name(),
                at(policy, &|p| 100.0 * p.expected_accuracy(&accuracy)),
                false,
            )
        })
        .collect();
    let entropy = EntropyMode::load(
        &args.plan,
        &costs.plan,
        if args.quick { 1000 } else { 10_000 },
    )?;
    let table = runtime::model::layers::b_alexnet(costs.plan.input[0], costs.plan.classes);
    let entropy_costs = EntropyMode::costs(&costs.here, &table);
    let entropy_best: Vec<(f64, f32)> = deadlines
        .iter()
        .map(|&d| entropy.best(&entropy_costs, d))
        .collect();
    accuracy_bars.push(dseries(
        "entropy early exit on the device (computed)",
        entropy_best.iter().map(|b| 100.0 * b.0).collect(),
        true,
    ));
    writeln!(
        report,
        "\nBranchyNet's early exit by entropy, on the device alone (computed on {} test images with this machine's latency models; each image pays for the branches it tried): best threshold per deadline.\n\n| deadline | threshold (nats) | accuracy within deadline % |\n|---|---|---|",
        entropy.labels.len()
    )?;
    for (d, (acc, t)) in deadlines.iter().zip(&entropy_best) {
        writeln!(report, "| {d:.0} ms | {t} | {:.1} |", 100.0 * acc)?;
    }
    accuracy_bars.push(dseries(
        "edgent, paper's setting (CIFAR-10, computed)",
        deadlines
            .iter()
            .map(|&d| 100.0 * Costs::promised(&costs.paper, Policy::Edgent, fixed_rate, d))
            .collect(),
        true,
    ));
    let categories: Vec<String> = deadlines.iter().map(|d| format!("{d:.0}")).collect();
    plot::bars(
        &out.join("fig9-accuracy-vs-deadline.png"),
        &format!(
            "Accuracy within the deadline at {}",
            rate_in_words(fixed_rate)
        ),
        ("deadline (ms)", &categories),
        &["accuracy (%)"],
        &accuracy_bars,
    )?;
    writeln!(
        report,
        "\n![selection](fig8-selection-vs-deadline.png)\n![accuracy](fig9-accuracy-vs-deadline.png)\n"
    )?;
    summary.push(if dominated.is_empty() {
        "Edgent's accuracy within the deadline is at least every baseline's at every deadline (0.5-point tolerance).".into()
    } else {
        format!("A baseline beat Edgent at: {}.", dominated.join(", "))
    });
    let worst_hit = hit.iter().copied().fold(1.0, f64::min);
    summary.push(format!(
        "Edgent met the deadline for {:.1} % of requests whose plan was feasible (worst deadline).",
        100.0 * worst_hit
    ));

    // The journal version: changing bandwidth, per-request adaptation against a fixed plan.
    let schedule: Vec<(f64, f64)> = schedule_rates
        .iter()
        .enumerate()
        .map(|(i, &r)| (i as f64 * segment_s, r))
        .collect();
    let duration = segment_s * schedule.len() as f64;
    let trace_deadline = 200.0;
    let dynamic_extra = vec!["--duration".to_string(), format!("{duration}s")];
    let adaptive = lab.run(
        "trace-adaptive",
        schedule[0].1,
        trace_deadline,
        Policy::Edgent,
        &dynamic_extra,
        &schedule,
    )?;
    let mut fixed_extra = dynamic_extra.clone();
    // A static configuration: the plan for the starting rate, no local fallback.
    fixed_extra.extend([
        "--bandwidth".into(),
        format!("{}bit", schedule[0].1),
        "--no-fallback".into(),
        "--no-margin".into(),
    ]);
    let fixed = lab.run(
        "trace-fixed",
        schedule[0].1,
        trace_deadline,
        Policy::Edgent,
        &fixed_extra,
        &schedule,
    )?;
    let bins = |p: &Point| -> Vec<(f64, f64)> {
        let width = segment_s / 4.0;
        let mut acc: BTreeMap<i64, (usize, usize)> = BTreeMap::new();
        for l in &p.lines {
            let t = l["t_s"].as_f64().unwrap_or(0.0);
            let e = acc.entry((t / width) as i64).or_default();
            e.0 += usize::from(l["met"] == true);
            e.1 += 1;
        }
        acc.into_iter()
            .map(|(b, (met, n))| ((b as f64 + 0.5) * width, 100.0 * met as f64 / n as f64))
            .collect()
    };
    let mut rate_line: Vec<(f64, f64)> = Vec::new();
    for (i, &(at, r)) in schedule.iter().enumerate() {
        let end = schedule.get(i + 1).map_or(duration, |s| s.0);
        rate_line.push((at, r / 1.5e4));
        rate_line.push((end, r / 1.5e4));
    }
    plot::lines(
        &out.join("fig10-changing-bandwidth.png"),
        &format!("Deadline met over time, deadline {trace_deadline:.0} ms"),
        ("time (s)", "deadline met (%)"),
        &[
            Series {
                name: "per-request adaptation".into(),
                points: bins(&adaptive),
                dashed: false,
            },
            Series {
                name: "plan fixed at start".into(),
                points: bins(&fixed),
                dashed: false,
            },
            Series {
                name: "bandwidth (100 % = 1.5 Mbit/s)".into(),
                points: rate_line,
                dashed: true,
            },
        ],
        plot::Scale::LINEAR,
    )?;
    let rates_text: Vec<String> = schedule
        .iter()
        .map(|(t, r)| format!("{} from {t:.0} s", rate_in_words(*r)))
        .collect();
    writeln!(
        report,
        "## Changing bandwidth (journal version)\n\nThe tc rate changes during one run: {}. Deadline {trace_deadline:.0} ms. *Adaptive*: the device re-estimates the link from every transfer and re-plans per request. *Fixed*: the plan for the starting rate (`--bandwidth`), kept all run, without local fallback (a static configuration).\n\n| run | requests | deadline met % | accuracy within deadline % | local fallbacks |\n|---|---|---|---|---|\n| adaptive | {} | {:.1} | {:.1} | {} |\n| fixed plan | {} | {:.1} | {:.1} | {} |\n\n![changing bandwidth](fig10-changing-bandwidth.png)\n",
        rates_text.join(", "),
        adaptive.lines.len(),
        100.0 * adaptive.hit_rate(),
        100.0 * adaptive.expected_accuracy(&accuracy),
        adaptive
            .lines
            .iter()
            .filter(|l| l["source"] == "fallback")
            .count(),
        fixed.lines.len(),
        100.0 * fixed.hit_rate(),
        100.0 * fixed.expected_accuracy(&accuracy),
        fixed
            .lines
            .iter()
            .filter(|l| l["source"] == "fallback")
            .count(),
    )?;
    summary.push(format!(
        "Changing bandwidth: per-request adaptation met {:.1} % of deadlines, the fixed plan {:.1} %.",
        100.0 * adaptive.hit_rate(),
        100.0 * fixed.hit_rate()
    ));
    bar.finish_and_clear();
    drop(lab);
    let encodings =
        crate::encodings::section(&out, &costs.plan, &costs.here, (fixed_deadline, RTT_MS))?;
    report.push_str(&encodings.markdown);
    summary.push(encodings.summary);
    let paper = crate::paper::section(&out)?;
    report.push_str(&paper.markdown);
    summary.push(paper.summary);

    let elapsed = started.elapsed().as_secs_f64();
    let mut head = format!(
        "# Edgent experiments\n\n{} run, {images} images per point, {:.0} s in all (`cargo xtask experiments{}`).\n\nDevice: this machine slowed down {:.0}× (`--slowdown`, the slowdown the plan was profiled with: local exits take tens to hundreds of ms, so device-only misses short deadlines while edge-only is limited by the bandwidth); edge: this machine{}. Latency models: {}. Device and edge run as separate processes in two network namespaces joined by a veth pair, both directions shaped by `tc tbf` (2 KiB burst), CurveZMQ on. Computed lines (*paper's setting*) are the paper's own setting, with a {RTT_MS} ms round trip: its B-AlexNet on CIFAR-10, its Table II models (Raspberry Pi 3 device, desktop edge), its bytes on the wire and per-exit accuracies as assumed in the section \"The paper's own setting\".\n\n## Summary\n\n",
        if args.quick { "Quick" } else { "Full" },
        elapsed,
        match (args.quick, args.edge_backend) {
            (false, None) => String::new(),
            (quick, backend) => format!(
                "{}{}",
                if quick { " --quick" } else { "" },
                backend.map_or(String::new(), |b| format!(" --edge-backend {b}"))
            ),
        },
        costs.slowdown,
        args.edge_backend.map_or(String::new(), |b| format!(
            ", on burn's {b} backend ({}; the plan's edge times are the profiled engine's, the device learns the difference)",
            b.adapter()
        )),
        costs.source
    );
    for line in &summary {
        writeln!(head, "* {line}")?;
    }
    head.push('\n');
    let path = out.join("report.md");
    std::fs::write(&path, head + &report)
        .with_context(|| format!("cannot write {}", path.display()))?;
    for line in &summary {
        println!("{line}");
    }
    println!("report → {} ({elapsed:.0} s)", path.display());
    Ok(())
}
