//! `cargo xtask encodings`: bytes, accuracy and codec time of every encoding of the tensor
//! at every split of the committed model ([`toolchain::encodings`]), on the test set; writes
//! `encodings.json`, `report.md` and a figure of bytes against partition.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{Context, ensure};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use runtime::wire::encoding::{Encoding, Values};
use runtime::{ExitSpec, Isa, LayerTable, PackedNetwork};
use toolchain::encodings::{
    ACTIVATION_VALUES, EncodingEntry, EncodingMeasurements, Lossless, LosslessComparison, Progress,
    Settings, Source, Workload,
};
use toolchain::profile::Role;

use crate::plot::{self, Series};

/// Flags of `cargo xtask encodings`.
#[derive(Args, Debug)]
pub struct EncodingsArgs {
    /// Test images the accuracy is counted on (the first of the test split).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    images: u32,
    /// The first this many images have their payload sizes measured (default: all).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    bytes_images: Option<u32>,
    /// Images whose activations feed the comparison of lossless stages.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..))]
    comparison_images: u32,
    /// Output directory: encodings.json, report.md, the figure.
    #[arg(long, default_value = "runs/encodings")]
    out: PathBuf,
    /// The plan naming the weights, the data set and the normalisation.
    #[arg(long, default_value = "generated/plan.json")]
    plan: PathBuf,
}

impl EncodingsArgs {
    /// Every image's bytes measured, the comparison on 500: what the pipeline runs.
    pub fn new(plan: PathBuf, out: PathBuf, images: u32) -> Self {
        Self {
            images,
            bytes_images: None,
            comparison_images: 500,
            out,
            plan,
        }
    }
}

/// An indicatif bar that starts over at each stage, and the time each stage took.
struct Bar {
    bar: ProgressBar,
    stages: Mutex<Vec<(String, Instant)>>,
}

impl Bar {
    fn new(bar: ProgressBar) -> Self {
        Self {
            bar,
            stages: Mutex::default(),
        }
    }

    /// Each stage's name and seconds, up to now.
    fn finish(&self) -> Vec<(String, f64)> {
        self.bar.finish_and_clear();
        let stages = self.stages.lock().expect("no stage panicked");
        let ends = stages.iter().skip(1).map(|s| s.1).chain([Instant::now()]);
        stages
            .iter()
            .zip(ends)
            .map(|((name, start), end)| (name.clone(), (end - *start).as_secs_f64()))
            .collect()
    }
}

impl Progress for Bar {
    fn stage(&self, name: &str, len: u64) {
        self.stages
            .lock()
            .expect("no stage panicked")
            .push((name.to_string(), Instant::now()));
        self.bar.reset();
        self.bar.set_length(len);
        self.bar.set_message(name.to_string());
    }

    fn step(&self) {
        self.bar.inc(1);
    }
}

/// The split the report calls an exit's median partition: the middle of its activations
/// `1..N`.
fn median_partition(layers: usize) -> usize {
    layers / 2
}

/// Accuracy loss allowed by the goal, as a fraction.
const MAX_LOSS: f64 = 0.005;

/// Runs the measurement and writes its artifacts.
pub fn run(args: EncodingsArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let plan = codegen::load(&args.plan).map_err(|e| anyhow::anyhow!(e.join("\n")))?;
    let weights_path = args
        .plan
        .parent()
        .unwrap_or(std::path::Path::new("."))
        .join(&plan.weights_file);
    let weights = runtime::WeightMap::load(&weights_path)?;
    let table = runtime::model::layers::b_alexnet(plan.input[0], plan.classes);
    let isa = Isa::detect().map_err(anyhow::Error::msg)?;
    let engine = PackedNetwork::new(&table, &weights, isa)?;
    let kind: datasets::DatasetKind = plan.dataset.parse().map_err(anyhow::Error::msg)?;
    let mut set = datasets::load(kind, None, datasets::Split::Test)?;
    let test_images = set.len();
    set.truncate(args.images as usize);
    ensure!(
        set.len() == args.images as usize,
        "the {} test split has {} images, fewer than --images {}",
        plan.dataset,
        set.len(),
        args.images
    );
    let (mean, std): (Vec<f32>, Vec<f32>) = (
        plan.normalization_mean.iter().map(|&v| v as f32).collect(),
        plan.normalization_std.iter().map(|&v| v as f32).collect(),
    );
    let workload = Workload {
        engine: &engine,
        pixels: &set.pixels,
        labels: &set.labels,
        mean: &mean,
        std: &std,
    };
    let settings = Settings {
        bytes_images: args.bytes_images.map_or(usize::MAX, |n| n as usize),
        comparison_images: args.comparison_images as usize,
        ..Settings::default()
    };
    let source = Source {
        dataset: plan.dataset.clone(),
        weights_file: plan.weights_file.clone(),
        weights_digest: plan.weights_digest.clone(),
    };
    let bar = Bar::new(ProgressBar::new(0).with_style(ProgressStyle::with_template(
        "{msg:<24} {bar:40} {pos}/{len} {elapsed} (eta {eta})",
    )?));
    let measured = toolchain::encodings::measure(&workload, source, &settings, &bar)?;
    let stages = bar.finish();
    let wall_s = started.elapsed().as_secs_f64();

    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let json = args.out.join("encodings.json");
    std::fs::write(&json, serde_json::to_string_pretty(&measured)?)
        .with_context(|| format!("cannot write {}", json.display()))?;
    let figure = "bytes-vs-partition-exit5.png";
    bytes_figure(&measured, &table, &args.out.join(figure))?;
    let accuracies: Vec<f64> = plan.exits.iter().map(|e| e.accuracy).collect();
    let context = ReportContext {
        table: &table,
        plan_accuracy: &accuracies,
        device_slowdown: plan.device_slowdown,
        test_images,
        isa,
        wall_s,
        stages,
        command: command_line(&args),
        figure,
    };
    let report = report(&measured, &context)?;
    let path = args.out.join("report.md");
    std::fs::write(&path, &report).with_context(|| format!("cannot write {}", path.display()))?;
    println!(
        "{} images in {wall_s:.0} s → {}, {}",
        measured.images,
        json.display(),
        path.display()
    );
    Ok(())
}

/// The command as typed, for the report.
fn command_line(args: &EncodingsArgs) -> String {
    let mut c = format!("cargo xtask encodings --images {}", args.images);
    if let Some(n) = args.bytes_images {
        write!(c, " --bytes-images {n}").ok();
    }
    if args.comparison_images != 500 {
        write!(c, " --comparison-images {}", args.comparison_images).ok();
    }
    write!(c, " --out {}", args.out.display()).ok();
    c
}

/// What the report needs beside the measurements.
struct ReportContext<'a> {
    table: &'a LayerTable,
    plan_accuracy: &'a [f64],
    device_slowdown: f64,
    /// Images in the whole test split.
    test_images: usize,
    isa: Isa,
    wall_s: f64,
    stages: Vec<(String, f64)>,
    command: String,
    figure: &'a str,
}

/// Lookups into the entries.
struct Entries<'a>(&'a EncodingMeasurements);

impl<'a> Entries<'a> {
    fn get(&self, exit: usize, partition: usize, encoding: Encoding) -> Option<&'a EncodingEntry> {
        self.0
            .entries
            .iter()
            .find(|e| e.exit == exit && e.partition == partition && e.encoding == encoding)
    }

    fn at(&self, exit: usize, partition: usize) -> impl Iterator<Item = &'a EncodingEntry> {
        self.0
            .entries
            .iter()
            .filter(move |e| e.exit == exit && e.partition == partition)
    }

    /// The exit's accuracy with no lossy encoding.
    fn plain(&self, exit: usize) -> f64 {
        self.0
            .plain
            .iter()
            .find(|a| a.exit == exit)
            .map_or(f64::NAN, |a| a.correct as f64 / a.total.max(1) as f64)
    }

    /// Accuracy lost by `entry`, in fraction (positive: worse than plain).
    fn loss(&self, entry: &EncodingEntry) -> f64 {
        self.plain(entry.exit) - entry.accuracy()
    }

    /// The f32 body at a split.
    fn f32_bytes(&self, exit: usize, partition: usize) -> f64 {
        self.get(exit, partition, Encoding::F32)
            .map_or(f64::NAN, |e| e.bytes_median as f64)
    }

    /// The smallest median payload at a split among encodings within the accuracy goal.
    fn best_within_goal(&self, exit: usize, partition: usize) -> Option<&'a EncodingEntry> {
        self.at(exit, partition)
            .filter(|e| self.loss(e) <= MAX_LOSS + 1e-12)
            .min_by_key(|e| e.bytes_median)
    }
}

/// Bytes per split as table cells: the median payload and its ratio to f32.
fn bytes_cells(entries: &Entries<'_>, exit: usize, partition: usize) -> String {
    let f32_bytes = entries.f32_bytes(exit, partition);
    Encoding::ACTIVATIONS
        .iter()
        .map(|&enc| match entries.get(exit, partition, enc) {
            Some(e) if enc == Encoding::F32 => format!(" {} |", e.bytes_median),
            Some(e) => format!(
                " {} ({:.1}×) |",
                e.bytes_median,
                f32_bytes / e.bytes_median as f64
            ),
            None => " — |".into(),
        })
        .collect()
}

fn encodings_header() -> (String, String) {
    let names: String = Encoding::ACTIVATIONS
        .iter()
        .map(|e| format!(" {e} |"))
        .collect();
    let rule = "---|".repeat(Encoding::ACTIVATIONS.len());
    (names, rule)
}

/// An accuracy change (fraction) in signed percentage points, never "-0.00".
fn points(change: f64) -> String {
    format!("{:+.2}", 100.0 * change + 0.0)
}

fn shape_text(shape: &[usize]) -> String {
    shape
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("×")
}

/// One row per exit against the goals; whether every exit meets them.
fn goals_table(r: &mut String, entries: &Entries<'_>, table: &LayerTable) -> anyhow::Result<bool> {
    writeln!(
        r,
        "| exit | median partition | best there | its bytes | × fewer than f32 | fewest × over partitions (where, best) | median × over partitions | met |\n|---|---|---|---|---|---|---|---|"
    )?;
    let mut all_met = true;
    for spec in &table.exits {
        let n = spec.len();
        let ratio = |p: usize| -> Option<(f64, &EncodingEntry)> {
            let best = entries.best_within_goal(spec.exit, p)?;
            Some((
                entries.f32_bytes(spec.exit, p) / best.bytes_median as f64,
                best,
            ))
        };
        let mp = median_partition(n);
        let (mid_ratio, mid_best) = ratio(mp).context("the median partition has entries")?;
        let (worst_p, (worst_ratio, worst_best)) = (1..n)
            .filter_map(|p| ratio(p).map(|r| (p, r)))
            .min_by(|a, b| a.1.0.total_cmp(&b.1.0))
            .context("the exit has splits")?;
        let mut ratios: Vec<f64> = (1..n).filter_map(|p| ratio(p).map(|r| r.0)).collect();
        ratios.sort_by(f64::total_cmp);
        let median_ratio = ratios[(ratios.len() - 1) / 2];
        let met = mid_ratio >= 8.0 && worst_ratio >= 4.0;
        all_met &= met;
        writeln!(
            r,
            "| {} | {mp} ({}) | {} | {} | {mid_ratio:.1} | {worst_ratio:.1} (p {worst_p}, {}) | {median_ratio:.1} | {} |",
            spec.exit,
            spec.layers[mp].name,
            mid_best.encoding,
            mid_best.bytes_median,
            worst_best.encoding,
            if met { "yes" } else { "**no**" }
        )?;
    }
    Ok(all_met)
}

/// Writes report.md's text.
fn report(m: &EncodingMeasurements, cx: &ReportContext<'_>) -> anyhow::Result<String> {
    let entries = Entries(m);
    let mut r = String::new();
    let (names, rule) = encodings_header();
    let full = cx.table.exits.last().context("the table has exits")?;
    writeln!(
        r,
        "# Encodings of the tensor at the split\n\n`{}`: {} test images of {} (accuracy), payload sizes on the first {}, weights `{}` (digest `{}…`), the interpreted kernels ({}) on {} thread(s); {:.0} s in all ({}). zstd level {} (`runtime::wire::encoding::ZSTD_LEVEL`). Sizes are medians per image (95th percentiles in `encodings.json`); a ratio is f32's bytes over the encoding's.\n",
        cx.command,
        m.images,
        m.source.dataset,
        m.bytes_images,
        m.source.weights_file,
        &m.source.weights_digest[..m.source.weights_digest.len().min(12)],
        cx.isa.name(),
        m.threads,
        cx.wall_s,
        cx.stages
            .iter()
            .map(|(name, secs)| format!("{name} {secs:.0} s"))
            .collect::<Vec<_>>()
            .join(", "),
        m.zstd_level,
    )?;

    // The goals.
    writeln!(
        r,
        "## The goals\n\nGoals: ≥ 4× fewer bytes than f32 at every partition, ≥ 8× at the median partition (`N / 2` of an exit of N layers; *met* judges this one — the median of the ratios over the partitions is shown too), ≤ 0.5 pt accuracy loss per exit; the compressed input ≥ 2× smaller than raw. At every split the planner can take the smallest encoding that keeps the exit within {:.1} pt of its plain accuracy (\"best\" below).\n\n### As measured: the tensor the device sends at p (the activation entering layer p; `relu(x)` where layer p is a ReLU, which the edge would apply anyway)\n",
        MAX_LOSS * 100.0
    )?;
    let met = goals_table(&mut r, &entries, cx.table)?;
    let input_ratio = m.input.raw as f64 / m.input.zstd_median.max(1) as f64;
    writeln!(
        r,
        "\nInput: u8+zstd {} bytes against {} raw, {input_ratio:.2}× smaller ({}). Splits: {}.\n",
        m.input.zstd_median,
        m.input.raw,
        if input_ratio >= 2.0 {
            "goal met"
        } else {
            "**goal not met**"
        },
        if met {
            "every exit meets the bytes goal within the accuracy goal"
        } else {
            "**at least one exit misses the bytes goal** (see the table)"
        }
    )?;
    let worst = m
        .entries
        .iter()
        .filter(|e| e.encoding.lossy())
        .max_by(|a, b| entries.loss(a).total_cmp(&entries.loss(b)))
        .context("lossy entries")?;
    let same = m
        .plain
        .iter()
        .filter(|a| {
            let plan = cx
                .plan_accuracy
                .get(a.exit - 1)
                .copied()
                .unwrap_or(f64::NAN);
            (a.correct as f64 - plan * a.total as f64).abs() < 0.5
        })
        .count();
    let plan_check = if m.images == cx.test_images {
        format!(
            " Without one, this engine's answers on the whole test set give the plan's accuracy exactly for {same} of {} exits.",
            m.plain.len()
        )
    } else {
        String::new()
    };
    writeln!(
        r,
        "Accuracy: the largest change of any lossy encoding at any split is {} pt ({}, exit {}, p {}).{plan_check}\n",
        points(-entries.loss(worst)),
        worst.encoding,
        worst.exit,
        worst.partition,
    )?;
    // Each single encoding against the goals.
    let splits: usize = cx.table.exits.iter().map(|s| s.len() - 1).sum();
    writeln!(
        r,
        "One encoding everywhere (activations only), and at how many of the {splits} splits it is the smallest within the accuracy goal:\n\n| encoding | fewest × over all splits | × at the median partitions (lowest) | worst accuracy change, pt (exit, p) | smallest at |\n|---|---|---|---|---|"
    )?;
    let best: Vec<Encoding> = cx
        .table
        .exits
        .iter()
        .flat_map(|spec| (1..spec.len()).map(move |p| (spec.exit, p)))
        .filter_map(|(exit, p)| entries.best_within_goal(exit, p).map(|e| e.encoding))
        .collect();
    for enc in Encoding::ACTIVATIONS {
        let rows: Vec<&EncodingEntry> = m
            .entries
            .iter()
            .filter(|e| e.encoding == enc && e.partition > 0)
            .collect();
        let ratio =
            |e: &EncodingEntry| entries.f32_bytes(e.exit, e.partition) / e.bytes_median as f64;
        let lowest = rows.iter().map(|e| ratio(e)).fold(f64::INFINITY, f64::min);
        let lowest_mid = rows
            .iter()
            .filter(|e| {
                let n = cx.table.exit(e.exit).map_or(0, ExitSpec::len);
                e.partition == median_partition(n)
            })
            .map(|e| ratio(e))
            .fold(f64::INFINITY, f64::min);
        let worst = rows
            .iter()
            .max_by(|a, b| entries.loss(a).total_cmp(&entries.loss(b)))
            .context("entries")?;
        let change = if enc.lossy() {
            format!(
                "{} ({}, {})",
                points(-entries.loss(worst)),
                worst.exit,
                worst.partition
            )
        } else {
            "none (lossless)".into()
        };
        writeln!(
            r,
            "| {enc} | {lowest:.1} | {lowest_mid:.1} | {change} | {} |",
            best.iter().filter(|&&b| b == enc).count()
        )?;
    }

    // Bytes per split, exit 5.
    writeln!(
        r,
        "\n## Bytes per split, exit {}\n\nPartition p sends the activation entering layer p.\n\n| p | enters | shape |{names}\n|---|---|---|{rule}",
        full.exit
    )?;
    for p in 1..full.len() {
        writeln!(
            r,
            "| {p} | {} | {} |{}",
            full.layers[p].name,
            shape_text(full.boundary_shape(p)),
            bytes_cells(&entries, full.exit, p)
        )?;
    }
    writeln!(r, "\n![bytes per partition]({})\n", cx.figure)?;
    writeln!(
        r,
        "## Bytes at each exit's median partition\n\n| exit | p | enters | shape |{names}\n|---|---|---|---|{rule}"
    )?;
    for spec in &cx.table.exits {
        let mp = median_partition(spec.len());
        writeln!(
            r,
            "| {} | {mp} | {} | {} |{}",
            spec.exit,
            spec.layers[mp].name,
            shape_text(spec.boundary_shape(mp)),
            bytes_cells(&entries, spec.exit, mp)
        )?;
    }

    // Accuracy.
    writeln!(
        r,
        "\n## Accuracy per exit and encoding\n\nPlain: every lossless encoding (f32, u8 and their +zstd). Lossy: the activation at p is encoded and decoded, the edge's layers run on it. Worst over the partitions `1..N` (pt against plain, and where), and at the median partition. zstd does not change values: `x+zstd` has `x`'s accuracy.\n\n| exit | plain % (correct/total) | plan's % |{}\n|---|---|---|{}",
        lossy_values()
            .map(|v| format!(" {} worst | {} at median p |", v.name(), v.name()))
            .collect::<String>(),
        "---|---|".repeat(lossy_values().count())
    )?;
    for spec in &cx.table.exits {
        let plain = m
            .plain
            .iter()
            .find(|a| a.exit == spec.exit)
            .context("plain accuracy")?;
        write!(
            r,
            "| {} | {:.2} ({}/{}) | {:.2} |",
            spec.exit,
            100.0 * entries.plain(spec.exit),
            plain.correct,
            plain.total,
            100.0
                * cx.plan_accuracy
                    .get(spec.exit - 1)
                    .copied()
                    .unwrap_or(f64::NAN)
        )?;
        let mp = median_partition(spec.len());
        for values in lossy_values() {
            let enc = Encoding::new(values, false);
            let worst = (1..spec.len())
                .filter_map(|p| entries.get(spec.exit, p, enc))
                .max_by(|a, b| entries.loss(a).total_cmp(&entries.loss(b)))
                .context("lossy entries")?;
            let mid = entries.get(spec.exit, mp, enc).context("median entry")?;
            write!(
                r,
                " {:.2} ({}, p {}) | {:.2} ({}) |",
                100.0 * worst.accuracy(),
                points(-entries.loss(worst)),
                worst.partition,
                100.0 * mid.accuracy(),
                points(-entries.loss(mid))
            )?;
        }
        writeln!(r)?;
    }

    // The input.
    let i = &m.input;
    writeln!(
        r,
        "\n## The input (partition 0)\n\n| encoding | median bytes | × smaller than raw |\n|---|---|---|\n| u8 (raw) | {} | 1.00 |\n| u8+zstd | {} (p95 {}) | {:.2} |\n| PNG, default compression | {} | {:.2} |\n| PNG, best compression, adaptive filters | {} | {:.2} |\n\nPNG for the record only: it is not an encoding of the protocol.\n",
        i.raw,
        i.zstd_median,
        i.zstd_p95,
        i.raw as f64 / i.zstd_median.max(1) as f64,
        i.png_median,
        i.raw as f64 / i.png_median.max(1) as f64,
        i.png_best_median,
        i.raw as f64 / i.png_best_median.max(1) as f64,
    )?;

    // Lossless stages.
    let tensors = m.lossless_comparison.first().map_or(0, |c| c.tensors);
    let (smallest, largest) = m
        .timing
        .iter()
        .find(|t| t.encoding == Encoding::F32)
        .map_or((0, 0), |t| (t.min_elements, t.max_elements));
    let slow = cx.device_slowdown;
    let links = [
        (50e3, 1.0),
        (100e6, 1.0),
        (50e3, slow),
        (1e6, slow),
        (100e6, slow),
    ];
    writeln!(
        r,
        "## Lossless stages compared\n\nEvery distinct activation of the first {} images ({tensors} bodies per values kind, {smallest} to {largest} elements), each compressed and decompressed once on one thread of this machine (round trips checked). *ms/tensor* is the mean of compress + send + decompress per tensor (at 50 kbit/s each KiB costs 164 ms, at 100 Mbit/s 0.08 ms); *×{slow:.0}* charges compression {slow:.0}× (the plan's device slowdown), as the plan will. Bold: the fastest way per values kind and link.\n\n| values | stage | ratio | compress MB/s | decompress MB/s |{}\n|---|---|---|---|---|{}",
        m.comparison_images,
        links
            .iter()
            .map(|&(bps, factor)| format!(
                " ms/tensor, {}{} |",
                crate::lab::rate_in_words(bps),
                if factor > 1.0 {
                    format!(", ×{factor:.0}")
                } else {
                    String::new()
                }
            ))
            .collect::<String>(),
        "---|".repeat(links.len())
    )?;
    for values in ACTIVATION_VALUES {
        let rows: Vec<&LosslessComparison> = m
            .lossless_comparison
            .iter()
            .filter(|c| c.values == values)
            .collect();
        let Some(first) = rows.first() else { continue };
        // Sending the body as it is, then every stage.
        let none_ms = |bps: f64| 8e3 * first.raw_bytes as f64 / first.tensors.max(1) as f64 / bps;
        let times: Vec<Vec<f64>> = std::iter::once(links.map(|(bps, _)| none_ms(bps)).to_vec())
            .chain(rows.iter().map(|c| {
                links
                    .map(|(bps, factor)| c.ms_per_tensor(bps, factor))
                    .to_vec()
            }))
            .collect();
        let fastest: Vec<f64> = (0..links.len())
            .map(|j| times.iter().map(|t| t[j]).fold(f64::INFINITY, f64::min))
            .collect();
        let cells = |t: &[f64]| -> String {
            t.iter()
                .zip(&fastest)
                .map(|(&ms, &best)| {
                    let text = if ms >= 10.0 {
                        format!("{ms:.1}")
                    } else {
                        format!("{ms:.3}")
                    };
                    if ms == best {
                        format!(" **{text}** |")
                    } else {
                        format!(" {text} |")
                    }
                })
                .collect()
        };
        writeln!(
            r,
            "| {} | none | 1.00 | — | — |{}",
            values.name(),
            cells(&times[0])
        )?;
        for (c, t) in rows.iter().zip(&times[1..]) {
            writeln!(
                r,
                "| {} | {} | {:.2} | {:.0} | {:.0} |{}",
                c.values.name(),
                c.lossless.name(),
                c.ratio(),
                c.compress_mb_s(),
                c.decompress_mb_s(),
                cells(t)
            )?;
        }
    }

    let total = |values: Option<Values>, stage: Lossless| -> (f64, f64) {
        m.lossless_comparison
            .iter()
            .filter(|c| c.lossless == stage && values.is_none_or(|v| c.values == v))
            .fold((0.0, 0.0), |(bytes, ms), c| {
                (bytes + c.compressed_bytes as f64, ms + c.compress_ms)
            })
    };
    let (level1, level3) = (total(None, Lossless::Zstd1), total(None, Lossless::Zstd3));
    let (lz4, reused) = (
        total(None, Lossless::Lz4),
        total(None, Lossless::Zstd1Reused),
    );
    writeln!(
        r,
        "\nOver all four values kinds: zstd level 3 writes {:+.2} % bytes against level 1 and compresses {:.2}× slower; lz4 writes {:+.1} % bytes and compresses {:.2}× faster; a reused zstd context compresses {:.2}× faster than a new one per call, at the same size.",
        100.0 * (level3.0 / level1.0 - 1.0),
        level3.1 / level1.1,
        100.0 * (lz4.0 / level1.0 - 1.0),
        level1.1 / lz4.1,
        level1.1 / reused.1,
    )?;

    // Timing.
    writeln!(
        r,
        "\n## Encode and decode time (this machine)\n\n`ms = intercept + slope · elements`, ordinary least squares through the medians measured on the first test image's distinct activations (every split size of the model), the input on batches of 1–16 images. Device: encode (convert or quantise, then compress); edge: decode (bounded inflate, read, check scales, widen to f32, check finiteness; the image: inflate and normalise). The plan scales the device's line by its slowdown.\n\n| encoding | side | intercept ms | slope ms per 1k elements | R² | ms at 1,024 | ms at 32,768 | points |\n|---|---|---|---|---|---|---|---|"
    )?;
    for t in &m.timing {
        writeln!(
            r,
            "| {} | {} | {:.4} | {:.5} | {:.3} | {:.4} | {:.4} | {} |",
            t.encoding,
            match t.role {
                Role::Device => "device (encode)",
                Role::Edge => "edge (decode)",
            },
            t.intercept_ms,
            1e3 * t.slope_ms_per_element,
            t.r2,
            t.predict_ms(1024),
            t.predict_ms(32_768),
            t.points
        )?;
    }
    Ok(r)
}

/// The lossy kinds of values of an activation, in the tables' column order.
fn lossy_values() -> impl Iterator<Item = Values> {
    ACTIVATION_VALUES.into_iter().filter(|v| v.lossy())
}

/// Bytes against partition for the deepest exit, one line per encoding (the image's two at
/// partition 0), log y.
fn bytes_figure(
    m: &EncodingMeasurements,
    table: &LayerTable,
    path: &std::path::Path,
) -> anyhow::Result<()> {
    let exit = table.exits.last().context("the table has exits")?.exit;
    let series: Vec<Series> = Encoding::INPUTS
        .iter()
        .chain(&Encoding::ACTIVATIONS)
        .map(|&enc| Series {
            name: if enc.values == Values::U8 {
                format!("{enc} (input)")
            } else {
                enc.name()
            },
            points: m
                .entries
                .iter()
                .filter(|e| e.exit == exit && e.encoding == enc)
                .map(|e| (e.partition as f64, e.bytes_median as f64))
                .collect(),
            dashed: enc.lossless,
        })
        .collect();
    plot::lines(
        path,
        &format!("Payload bytes per image against partition, exit {exit} (median)"),
        ("partition p (the tensor entering layer p)", "bytes"),
        &series,
        plot::Scale::LOG_Y,
    )
}

/// The experiments' section on encodings, computed from the plan (its measured bytes and
/// accuracies, its latency models): bytes per split at each exit's median partition,
/// accuracy per family, and where (bandwidth × device speed) a middle partition wins with
/// the encodings and with the paper's routes alone. Writes the maps into `out`.
pub fn section(
    out: &std::path::Path,
    plan: &codegen::plan::Plan,
    costs: &[runtime::plan::ExitCosts],
    (deadline_ms, rtt_ms): (f64, f64),
) -> anyhow::Result<crate::paper::Section> {
    let mut md = String::new();
    let names = [
        "f32", "f32+zstd", "f16+zstd", "q8", "q8+zstd", "q8c+zstd", "q4+zstd", "q4c+zstd",
    ];
    writeln!(
        md,
        "## Bytes on the wire: encodings as Edgent's third choice\n\nEdgent chooses (exit, partition, encoding); the baselines keep the raw image and `f32` activations. Bytes are the medians measured over the test set (`cargo xtask encodings`, in the plan), at each exit's median partition `N / 2`; accuracy is measured on the test set with that encoding at every split of the exit (a family's is its worst split's).\n\n| exit | p (tensor) | {} | u8 image | u8+zstd | exact acc. % | {} |\n|---|---|{}---|---|---|{}",
        names.join(" | "),
        lossy_values()
            .map(|v| format!("{} %", v.name()))
            .collect::<Vec<_>>()
            .join(" | "),
        "---|".repeat(names.len()),
        "---|".repeat(lossy_values().count()),
    )?;
    for (exit, c) in plan.exits.iter().zip(costs) {
        let p = exit.layers.len() / 2;
        let bytes = |p: usize, name: &str| {
            exit.partitions[p]
                .encodings
                .iter()
                .find(|e| e.encoding == name)
                .map_or("–".to_string(), |e| e.bytes_median.to_string())
        };
        let accuracy = |values: Option<Values>| {
            c.families()
                .iter()
                .find(|f| f.lossy == values)
                .map_or("–".to_string(), |f| format!("{:.2}", 100.0 * f.accuracy))
        };
        write!(
            md,
            "| {} | {p} ({}) |",
            exit.exit,
            exit.layers[p]
                .input
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("×")
        )?;
        for name in names {
            write!(md, " {} |", bytes(p, name))?;
        }
        write!(
            md,
            " {} | {} | {} |",
            bytes(0, "u8"),
            bytes(0, "u8+zstd"),
            accuracy(None),
        )?;
        for values in lossy_values() {
            write!(md, " {} |", accuracy(Some(values)))?;
        }
        writeln!(md)?;
    }
    // Why a split rarely wins: its bytes against the compressed image's, and what the
    // device pays to get there.
    writeln!(
        md,
        "\nEach exit's smallest tensor at any split against the image (medians, what the planner charges), and the device time it costs to get there (layers and encoding, at the plan's slowdown) beyond the image's encoding. A split can only win below the bandwidth at which the bytes it saves take as long to send as the device's extra time (the edge's saved time, at most {:.1} ms, is left out in its favour):\n\n| exit | smallest split (p, encoding) | its bytes | image (u8+zstd) | bytes saved | extra device ms | wins over the image below | split's device ms | device-only ms |\n|---|---|---|---|---|---|---|---|---|",
        costs.iter().map(|c| c.pairs[0].edge_ms).fold(0.0, f64::max)
    )?;
    for c in costs {
        let routes: Vec<runtime::plan::Route> = c
            .families()
            .iter()
            .flat_map(|f| f.routes.clone())
            .filter(|r| r.encoding.is_some())
            .collect();
        let image = routes
            .iter()
            .filter(|r| r.partition == 0)
            .min_by_key(|r| r.cost.bytes);
        let split = routes
            .iter()
            .filter(|r| r.partition > 0)
            .min_by_key(|r| r.cost.bytes);
        let (Some(image), Some(split)) = (image, split) else {
            continue;
        };
        let saved = image.cost.bytes as f64 - split.cost.bytes as f64;
        let extra_ms = split.cost.device_ms - image.cost.device_ms;
        let wins_below = if saved > 0.0 && extra_ms > 0.0 {
            format!("{:.2} kbit/s", saved * 8.0 / extra_ms)
        } else if saved > 0.0 {
            "always".to_string()
        } else {
            "never".to_string()
        };
        writeln!(
            md,
            "| {} | {}, {} | {} | {} | {:.0} | {:.1} | {wins_below} | {:.1} | {:.1} |",
            c.exit,
            split.partition,
            split.encoding.map(|e| e.to_string()).unwrap_or_default(),
            split.cost.bytes,
            image.cost.bytes,
            saved,
            extra_ms,
            split.cost.device_ms,
            c.pairs[c.pairs.len() - 1].device_ms
        )?;
    }
    writeln!(
        md,
        "\nBelow those bandwidths the split's transfer alone takes longer than running the whole exit on the device, which needs no network: the split's device time is already most of device-only's. Where that holds for every exit, no split beats both ends on this network and data (the map below counts the cells); what the encodings change is the image's own size."
    )?;
    let bandwidths = plot::log_grid(10e3, 100e6, 8);
    let factors = plot::log_grid(0.1, 10.0, 8);
    let paper_routes: Vec<runtime::plan::ExitCosts> = costs
        .iter()
        .map(|c| runtime::plan::ExitCosts {
            families: Vec::new(),
            ..c.clone()
        })
        .collect();
    let mut counts = Vec::new();
    for (file, title, costs) in [
        (
            "partition-map-encodings.png",
            "This model, with encodings",
            costs,
        ),
        (
            "partition-map-f32.png",
            "This model, raw image and f32 only",
            &paper_routes[..],
        ),
    ] {
        counts.push(plot::partition_map(
            &out.join(file),
            &plot::MapLabels {
                title,
                y_desc: "device time × (1 = the profiled device)",
            },
            costs,
            (deadline_ms, rtt_ms),
            &bandwidths,
            &factors,
        )?);
    }
    writeln!(
        md,
        "\n### Where a middle partition wins\n\nAlgorithm 1's placement over bandwidth (10 kbit/s to 100 Mbit/s) × device speed (every device time of the plan, encoding included, multiplied by 0.1 to 10; the edge unchanged), deadline {deadline_ms:.0} ms, {rtt_ms} ms round trip. With encodings: a middle partition in **{}** of {} cells (edge-only {}, device-only {}, nothing in time {}). With the raw image and `f32` only: **{}** (edge-only {}, device-only {}, nothing in time {}).\n\n![with encodings](partition-map-encodings.png)\n![f32 only](partition-map-f32.png)\n",
        counts[0].middle,
        counts[0].total(),
        counts[0].edge_only,
        counts[0].device_only,
        counts[0].infeasible,
        counts[1].middle,
        counts[1].edge_only,
        counts[1].device_only,
        counts[1].infeasible,
    )?;
    let summary = format!(
        "Encodings: a middle partition is Algorithm 1's choice in {} of {} (bandwidth, device speed) cells at {deadline_ms:.0} ms with them, in {} with the raw image and f32 alone.",
        counts[0].middle,
        counts[0].total(),
        counts[1].middle
    );
    Ok(crate::paper::Section {
        markdown: md,
        summary,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use runtime::BranchyAlexNetConfig;
    use runtime::slowdown::Repeats;

    /// A measurement of random weights on two blank-ish images goes through the report
    /// and the figure.
    #[test]
    fn a_small_measurement_is_reported_and_drawn() {
        let device = runtime::Backend::Flex.device();
        let model = BranchyAlexNetConfig::new().init_seeded(&device, 5);
        let table = model.layer_table().clone();
        let engine = PackedNetwork::new(&table, &model.weights(), Isa::Portable).unwrap();
        let pixels: Vec<u8> = (0..2048)
            .map(|i| ((i % 97) * (i % 5 == 0) as usize) as u8)
            .collect();
        let workload = Workload {
            engine: &engine,
            pixels: &pixels,
            labels: &[1, 2],
            mean: &[0.5],
            std: &[0.25],
        };
        let settings = Settings {
            bytes_images: 2,
            comparison_images: 1,
            repeats: Repeats::exactly(1),
        };
        let source = Source {
            dataset: "synthetic".into(),
            weights_file: "seeded".into(),
            weights_digest: "0123456789abcdef".into(),
        };
        let m = toolchain::encodings::measure(&workload, source, &settings, &()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let figure = dir.path().join("bytes.png");
        bytes_figure(&m, &table, &figure).unwrap();
        assert!(std::fs::metadata(&figure).unwrap().len() > 1000);
        let cx = ReportContext {
            table: &table,
            plan_accuracy: &[0.1; 5],
            device_slowdown: 100.0,
            test_images: 2,
            isa: Isa::Portable,
            wall_s: 1.0,
            stages: vec![("accuracy and bytes".into(), 1.0)],
            command: "cargo xtask encodings --images 2".into(),
            figure: "bytes.png",
        };
        let text = report(&m, &cx).unwrap();
        for heading in [
            "## The goals",
            "## Bytes per split, exit 5",
            "## Accuracy per exit and encoding",
            "## The input",
            "## Lossless stages compared",
            "## Encode and decode time",
        ] {
            assert!(text.contains(heading), "{heading}");
        }
        // One row per split of exit 5, one per exit at its median partition.
        let exit5 = table.exits[4].len();
        assert!(text.contains(&format!("| {} | fc8 | 128 |", exit5 - 1)));
        assert!(text.contains("| 5 | 11 | relu4 | 96×8×8 | 24576 |"));
        assert!(text.contains("| 1 | 5 | exit1.relu1 | 32×16×16 |"));
        // One row without a stage per kind of values in the comparison.
        assert_eq!(
            text.matches("| none | 1.00 |").count(),
            ACTIVATION_VALUES.len()
        );
    }

    #[test]
    fn median_partitions_are_inside_the_chain() {
        for n in [11, 14, 16, 18, 22] {
            let p = median_partition(n);
            assert!(0 < p && p < n);
        }
        assert_eq!(median_partition(22), 11);
    }
}
