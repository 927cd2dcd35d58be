//! `cargo xtask profile`, `cargo xtask profile-batches` and `cargo xtask fit`.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use runtime::model::backend::threads_in_words;
use runtime::slowdown::{Repeats, Slowdown, median};
use runtime::{Backend, EngineKind};
use toolchain::batching::{self, BatchProfile};
use toolchain::latency::{Calibration, LatencyModels, fit};
use toolchain::profile::{self, ProfileSettings, Role, SliceCheck};

use crate::plot;

/// Flags of `cargo xtask profile`.
#[derive(Args, Debug)]
pub struct ProfileArgs {
    /// Which side to profile: device or edge.
    #[arg(long)]
    pub(crate) role: Role,
    /// Emulate a device this many times slower (DESIGN.md §8); use the same value when the
    /// device runs.
    #[arg(long, default_value = "1")]
    pub(crate) slowdown: Slowdown,
    #[command(flatten)]
    pub(crate) engine: EngineArgs,
    /// Output CSV file.
    #[arg(long)]
    pub(crate) out: PathBuf,
}

/// What runs the layers a profile times: the engine, burn's backend and the CPU threads.
#[derive(Args, Debug, Clone, Copy)]
pub struct EngineArgs {
    /// Engine to profile: generated (the kernels the binaries run by default) or burn.
    #[arg(long, default_value = "generated")]
    pub(crate) engine: EngineKind,
    /// Burn backend with `--engine burn`: flex, ndarray or wgpu.
    #[arg(long, default_value = "flex")]
    pub(crate) backend: Backend,
    /// CPU threads the layers run on (0: one per core); the binaries run with the count the
    /// plan's models were profiled with.
    #[arg(long, default_value_t = 1)]
    pub(crate) threads: usize,
}

impl EngineArgs {
    /// Profile settings for `role` with these, at `slowdown`.
    fn settings(self, role: Role, slowdown: Slowdown) -> ProfileSettings {
        ProfileSettings {
            role,
            engine: self.engine,
            backend: self.backend,
            slowdown,
            repeats: Repeats::default(),
            threads: self.threads,
        }
    }
}

/// Flags of `cargo xtask profile-batches`.
#[derive(Args, Debug)]
pub struct ProfileBatchesArgs {
    #[command(flatten)]
    pub(crate) engine: EngineArgs,
    /// Batch sizes, comma-separated (1 is always measured).
    #[arg(long, value_delimiter = ',', default_values_t = [1, 2, 4, 8, 16, 32, 64])]
    pub(crate) batches: Vec<usize>,
    /// Input channels of the model (1: Fashion-MNIST, 3: CIFAR-10).
    #[arg(long, default_value_t = 1)]
    pub(crate) channels: usize,
    /// Rounds over all suffixes; each suffix keeps the median of its rounds.
    #[arg(long, default_value_t = 3, value_parser = crate::train::positive)]
    pub(crate) rounds: usize,
    /// Output JSON file (`generate --batches` reads it); a PNG is written beside it.
    #[arg(long)]
    pub(crate) out: PathBuf,
}

/// Flags of `cargo xtask fit`.
#[derive(Args, Debug)]
pub struct FitArgs {
    /// Profile CSV file(s) from `cargo xtask profile` (one per role, or `paper` for the
    /// paper's built-in models).
    #[arg(long, required = true, num_args = 1..)]
    pub(crate) profile: Vec<String>,
    /// Output JSON file with the latency models; a PNG of predicted against measured time
    /// is written beside it.
    #[arg(long)]
    pub(crate) out: PathBuf,
    /// Also measure every prefix (device) and suffix (edge) of every exit chain of the real
    /// model and compare it with the predicted sum of layer times.
    #[arg(long)]
    pub(crate) check: bool,
    /// Input channels of the model checked (1: Fashion-MNIST, 3: CIFAR-10).
    #[arg(long, default_value_t = 1)]
    pub(crate) channels: usize,
    /// A rough check: one round of a few runs per slice (seconds instead of minutes).
    #[arg(long, requires = "check")]
    pub(crate) quick: bool,
}

fn progress_bar(len: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{what} [{{bar:30}}] {{pos}}/{{len}} eta {{eta}} {{msg}}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar
}

pub fn run_profile(args: ProfileArgs) -> anyhow::Result<()> {
    let settings = args.engine.settings(args.role, args.slowdown);
    let bar = progress_bar(
        profile::profile_len(),
        &format!("profile {}", args.role.name()),
    );
    let started = std::time::Instant::now();
    let samples = profile::profile(&settings, |s| {
        bar.set_message(format!("{} {}: {:.3} ms", s.kind, s.config, s.ms));
        bar.inc(1);
    })
    .map_err(anyhow::Error::msg)?;
    bar.finish_and_clear();
    if let Some(parent) = args.out.parent() {
        std::fs::create_dir_all(parent).ok();
    }
    let file = std::fs::File::create(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    profile::write_csv(&samples, file)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    println!(
        "{} samples for the {} role ({} engine on {}, slowdown {}, {}) in {:.0} s → {}",
        samples.len(),
        args.role.name(),
        args.engine.engine,
        settings.backend_name(),
        args.slowdown.factor(),
        threads_in_words(args.engine.threads),
        started.elapsed().as_secs_f64(),
        args.out.display()
    );
    Ok(())
}

pub fn run_profile_batches(args: ProfileBatchesArgs) -> anyhow::Result<()> {
    if let Some(b) = args.batches.iter().find(|&&b| b == 0 || b > 4096) {
        bail!("--batches: {b} is not a batch size from 1 to 4096");
    }
    let settings = args.engine.settings(Role::Edge, Slowdown::NONE);
    let table = runtime::BranchyAlexNetConfig::new()
        .with_channels(args.channels)
        .layer_table();
    let suffixes = profile::role_slices(&table, Role::Edge).len();
    let bar = progress_bar(args.rounds * suffixes, "edge suffixes × batches");
    let started = std::time::Instant::now();
    let measured = batching::measure(&settings, args.channels, &args.batches, args.rounds, |s| {
        bar.set_message(format!(
            "exit {} [{}, N): {:.3} ms alone",
            s.exit, s.partition, s.ms[0]
        ));
        bar.inc(1);
    })
    .map_err(anyhow::Error::msg)?;
    bar.finish_and_clear();
    if let Some(parent) = args.out.parent() {
        std::fs::create_dir_all(parent).ok();
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&measured)? + "\n")
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    print_batches(&measured);
    println!(
        "{} suffixes at batches {:?} ({} engine on {}, {}) in {:.0} s → {}",
        measured.suffixes.len(),
        measured.batches,
        args.engine.engine,
        settings.backend_name(),
        threads_in_words(args.engine.threads),
        started.elapsed().as_secs_f64(),
        args.out.display()
    );
    let png = args.out.with_extension("png");
    match plot::batch_times(&measured, &png) {
        Ok(()) => println!("plot → {}", png.display()),
        Err(e) => eprintln!("warning: no plot: {e}"),
    }
    Ok(())
}

/// Each exit's edge-only suffix at every batch size, and how well the line fits all.
fn print_batches(profile: &BatchProfile) {
    print!("{:<6} {:>10}", "exit", "ms/request");
    for b in &profile.batches {
        print!(" {:>8}", format!("b={b}"));
    }
    println!("  (edge-only suffix [0, N): ms per request at each batch size)");
    for s in profile.suffixes.iter().filter(|s| s.partition == 0) {
        print!("{:<6} {:>10.3}", s.exit, s.per_image_ms(&profile.batches));
        for (b, t) in profile.batches.iter().zip(&s.ms) {
            print!(" {:>8.3}", t / *b as f64);
        }
        println!();
    }
    let mut errors: Vec<f64> = profile
        .suffixes
        .iter()
        .map(|s| 100.0 * s.worst_error(&profile.batches))
        .collect();
    let worst = errors.iter().copied().fold(0.0, f64::max);
    println!(
        "the line ms(1) + (b − 1)·slope against every suffix's measured batches: median of the worst errors {:.1} %, worst {:.1} %",
        median(&mut errors),
        worst
    );
}

pub fn run_fit(args: FitArgs) -> anyhow::Result<()> {
    let mut samples = Vec::new();
    let mut paper = false;
    for source in &args.profile {
        if source == "paper" {
            paper = true;
            continue;
        }
        let file =
            std::fs::File::open(source).with_context(|| format!("cannot open profile {source}"))?;
        let mut rows = profile::read_csv(file).map_err(|e| anyhow::anyhow!("{source}: {e}"))?;
        samples.append(&mut rows);
    }
    let models = match (paper, samples.is_empty()) {
        (true, true) => LatencyModels::paper(),
        (true, false) => {
            bail!("`paper` is a complete set of models: give it alone, not with profile files")
        }
        (false, _) => fit(&samples).context("fitting the latency models failed")?,
    };
    print_models(&models);
    if let Some(parent) = args.out.parent() {
        std::fs::create_dir_all(parent).ok();
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&models)? + "\n")
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    println!("latency models → {}", args.out.display());
    if !samples.is_empty() {
        let png = args.out.with_extension("png");
        match plot::predicted_vs_measured(&models, &samples, &png) {
            Ok(()) => println!("plot → {}", png.display()),
            Err(e) => eprintln!("warning: no plot: {e}"),
        }
    }
    if args.check {
        let mut models = models;
        if check(&mut models, args.channels, args.quick)? {
            std::fs::write(&args.out, serde_json::to_string_pretty(&models)? + "\n")
                .with_context(|| format!("cannot write {}", args.out.display()))?;
            println!("\ncalibrated latency models → {}", args.out.display());
        }
    }
    Ok(())
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.digits$}"))
}

fn print_models(models: &LatencyModels) {
    println!(
        "{:<7} {:<11} {:<7} {:>7} {:>8}  model (ms; sizes in {})",
        "role", "kind", "fit", "R²", "MAPE %", models.unit
    );
    for (role, role_models) in &models.roles {
        for (kind, fits) in &role_models.kinds {
            for (name, m) in std::iter::once(("table1", &fits.table1))
                .chain(fits.rich.as_ref().map(|r| ("rich", r)))
            {
                let terms: Vec<String> = m
                    .features
                    .iter()
                    .zip(&m.coefficients)
                    .map(|(f, c)| format!("{c:.3e}·{f}"))
                    .collect();
                let mark = if fits.selected == name { "*" } else { " " };
                println!(
                    "{:<7} {:<11} {:<6}{} {:>7} {:>8}  {} {:+.4}",
                    role.name(),
                    kind,
                    name,
                    mark,
                    fmt_opt(m.r2, 4),
                    fmt_opt(m.mape, 1),
                    terms.join(" + "),
                    m.intercept
                );
            }
        }
    }
    println!("(* the model predictions use)");
}

/// Measures every exit-chain slice of each role present and prints the errors of the
/// per-layer models; then fits each role's [`Calibration`] to the measured chains (first on
/// the distinct slices of exits 1, 3 and 5, judged on the slices of exits 2 and 4 that
/// contain a branch layer, which it has not seen) and stores it in `models`. Returns whether
/// it calibrated.
fn check(models: &mut LatencyModels, channels: usize, quick: bool) -> anyhow::Result<bool> {
    let mut calibrated = false;
    let roles: Vec<(Role, toolchain::latency::RoleModels)> =
        models.roles.iter().map(|(r, m)| (*r, m.clone())).collect();
    for (role, role_models) in roles {
        let engine: Option<EngineKind> = role_models.engine.parse().ok();
        let backend: Option<Backend> = match engine {
            Some(EngineKind::Generated) => Some(Backend::default()),
            _ => role_models.source.parse().ok(),
        };
        let (Some(engine), Some(backend)) = (engine, backend) else {
            println!(
                "{}: models from `{}` describe another machine; nothing to measure here",
                role.name(),
                role_models.source
            );
            continue;
        };
        let (rounds, repeats) = if quick {
            let few = Repeats {
                warmup: 1,
                min: 3,
                max: 3,
                budget: std::time::Duration::ZERO,
            };
            (1, few)
        } else {
            (profile::check_rounds(role), Repeats::default())
        };
        let settings = ProfileSettings {
            role,
            engine,
            backend,
            slowdown: Slowdown::new(role_models.slowdown).map_err(anyhow::Error::msg)?,
            repeats,
            threads: role_models.threads,
        };
        let table = runtime::BranchyAlexNetConfig::new()
            .with_channels(channels)
            .layer_table();
        let bar = progress_bar(
            rounds * profile::role_slices(&table, role).len(),
            &format!("check {}", role.name()),
        );
        let checks = profile::check_slices(models, &settings, channels, rounds, |c| {
            bar.set_message(format!(
                "exit {} [{}, {}): {:.1} %",
                c.exit,
                c.start,
                c.end,
                c.ape()
            ));
            bar.inc(1);
        })
        .map_err(anyhow::Error::msg)?;
        bar.finish_and_clear();
        println!("\n{} role, per-layer models alone:", role.name());
        print_checks(role, &checks);

        let point = |c: &SliceCheck| c.chain_point();
        let corrected = |c: &SliceCheck, cal: &Calibration| SliceCheck {
            predicted_ms: cal.apply_chain(&c.chain_point()),
            ..c.clone()
        };
        // Honest first: fit on the slices of exits 1, 3, 5, each once, and judge on the slices
        // of exits 2 and 4 that contain a branch layer and that it has not seen. Slices are
        // compared by their layers' names (a trunk layer has the same name in every exit):
        // the device's trunk prefixes of exits 2 and 4 are the same slices as exit 5's.
        let spec = |c: &SliceCheck| table.exit(c.exit).expect("exit from the table");
        let names = |c: &SliceCheck| -> Vec<String> {
            spec(c).layers[c.start..c.end]
                .iter()
                .map(|l| l.name.clone())
                .collect()
        };
        let mut seen = std::collections::BTreeSet::new();
        let points: Vec<_> = checks
            .iter()
            .filter(|c| c.exit % 2 == 1 && seen.insert(names(c)))
            .map(point)
            .collect();
        let held: Vec<&SliceCheck> = checks
            .iter()
            .filter(|c| c.exit % 2 == 0 && c.end > spec(c).trunk_layers)
            .filter(|c| seen.insert(names(c)))
            .collect();
        if let Some(cal) = Calibration::fit(&points) {
            let held: Vec<SliceCheck> = held.iter().map(|c| corrected(c, &cal)).collect();
            let mut apes: Vec<f64> = held.iter().map(SliceCheck::ape).collect();
            let worst = apes.iter().copied().fold(0.0, f64::max);
            println!(
                "\n{} role, calibrated on the {} distinct slices of exits 1, 3, 5 ({})",
                role.name(),
                points.len(),
                describe(&cal)
            );
            println!(
                "held out: {} slices of exits 2 and 4 that contain a branch layer: median APE {:.1} %, worst {:.1} %",
                held.len(),
                median(&mut apes),
                worst
            );
            print_verdict(&held);
        }
        let points: Vec<_> = checks.iter().map(point).collect();
        if let Some(cal) = Calibration::fit(&points) {
            println!(
                "\n{} role, calibrated on all exits ({}):",
                role.name(),
                describe(&cal)
            );
            let after: Vec<SliceCheck> = checks.iter().map(|c| corrected(c, &cal)).collect();
            print_checks(role, &after);
            // Kept if the slices' mean error falls: the planner uses all of them.
            let mean_ape =
                |cs: &[SliceCheck]| cs.iter().map(SliceCheck::ape).sum::<f64>() / cs.len() as f64;
            if mean_ape(&after) < mean_ape(&checks) {
                if let Some(m) = models.roles.get_mut(&role) {
                    m.calibration = Some(cal);
                    calibrated = true;
                }
            } else {
                println!("(not kept: it does not lower the mean error)");
            }
        }
    }
    Ok(calibrated)
}

/// A calibration in words: its scales and per-layer cost.
fn describe(cal: &Calibration) -> String {
    let kinds: Vec<String> = cal
        .kind_scales
        .iter()
        .map(|(kind, s)| format!("{kind} ×{s:.3}"))
        .collect();
    let own = if kinds.is_empty() {
        String::new()
    } else {
        format!("{}, ", kinds.join(", "))
    };
    format!(
        "scale {own}others ×{:.3}, {:.4} ms per layer",
        cal.scale, cal.per_layer_ms
    )
}

fn print_checks(role: Role, checks: &[SliceCheck]) {
    let what = match role {
        Role::Device => "prefix [0, p)",
        Role::Edge => "suffix [p, N)",
    };
    println!("{} role: every {what} of every exit chain", role.name());
    println!(
        "{:<5} {:>9} {:>13} {:>12} {:>7}  bound",
        "exit", "slice", "predicted ms", "measured ms", "APE %"
    );
    for c in checks {
        let verdict = if c.within_bound() { "ok" } else { "MISS" };
        let bound = if c.judged_ape() < c.ape() {
            format!("{verdict}, |error| {:.1} µs", 1e3 * c.error_ms())
        } else {
            verdict.to_string()
        };
        println!(
            "{:<5} {:>9} {:>13.3} {:>12.3} {:>7.1}  {bound}",
            c.exit,
            format!("[{},{})", c.start, c.end),
            c.predicted_ms,
            c.measured_ms,
            c.ape()
        );
    }
    let mut apes: Vec<f64> = checks.iter().map(SliceCheck::ape).collect();
    let worst = apes.iter().copied().fold(0.0, f64::max);
    println!(
        "{}: {} slices, median APE {:.1} %, worst {:.1} %",
        role.name(),
        apes.len(),
        median(&mut apes),
        worst
    );
    print_verdict(checks);
}

/// The accuracy bound's verdict on `checks` ([`SliceCheck::judge`]), in words.
fn print_verdict(checks: &[SliceCheck]) {
    let v = SliceCheck::judge(checks);
    println!(
        "bound: median ≤ {} %, every slice ≤ {} % APE; slices under {} ms are judged by |error| ≤ {} µs where kinder ({} of them, judged error min(APE, {} % per µs))",
        SliceCheck::MEDIAN_APE,
        SliceCheck::WORST_APE,
        SliceCheck::SMALL_MS,
        1e3 * SliceCheck::SMALL_ERROR_MS,
        v.small,
        SliceCheck::WORST_APE / (1e3 * SliceCheck::SMALL_ERROR_MS),
    );
    println!(
        "verdict: {}; judged error median {:.1} %, worst {:.1} %; {} of {} slices miss their bound",
        if v.met() { "met" } else { "NOT MET" },
        v.median,
        v.worst,
        v.misses.len(),
        checks.len()
    );
    if !v.misses.is_empty() {
        let misses: Vec<String> = v
            .misses
            .iter()
            .map(|&i| {
                let c = &checks[i];
                let small = if c.judged_ape() < c.ape() {
                    format!(" ({:.1} µs)", 1e3 * c.error_ms())
                } else {
                    String::new()
                };
                format!(
                    "exit {} [{},{}) {:.1} %{small}",
                    c.exit,
                    c.start,
                    c.end,
                    c.ape()
                )
            })
            .collect();
        println!("slices that miss their bound: {}", misses.join(", "));
    }
}
