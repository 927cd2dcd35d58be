//! `cargo xtask`: the Edgent pipeline. Each subcommand parses flags and calls a library crate.

mod bench;
mod encodings;
mod experiments;
mod fuzz;
mod generate;
mod lab;
mod latency;
mod one_build;
mod paper;
mod pipeline;
mod plot;
mod soak;
mod train;

use clap::{Parser, Subcommand};

/// The Edgent toolchain: train → profile → fit → generate → co-inference (or all of it:
/// `cargo xtask pipeline`).
#[derive(Parser, Debug)]
#[command(name = "cargo xtask", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The whole chain: train, profile both roles, fit, generate, build the binaries with
    /// the plan, and a co-inference demonstration over a shaped link. Skips up-to-date steps.
    Pipeline(pipeline::PipelineArgs),
    /// Train the five-exit B-AlexNet and write weights and per-exit metrics.
    Train(train::TrainArgs),
    /// Forward latency at batch 1 of each exit: the generated engine against burn-flex (and
    /// onnxruntime with --onnxruntime), with their ratios.
    Bench(bench::BenchArgs),
    /// Time every layer kind over a sweep of configurations on one role (device or edge).
    Profile(latency::ProfileArgs),
    /// Time every edge suffix of the model at batch sizes 1…64: what each further request
    /// of a batch adds (`generate --batches` puts it in the plan).
    ProfileBatches(latency::ProfileBatchesArgs),
    /// Fit per-layer-kind linear latency models to profiles (or load the paper's).
    Fit(latency::FitArgs),
    /// Write the plan file the device and edge binaries are compiled from.
    Generate(generate::GenerateArgs),
    /// Check that the README's commands (tests, xtask, the binaries) share one build of burn.
    OneBuild(one_build::OneBuildArgs),
    /// Fuzz the wire protocol's decoder and the edge's admission checks with mutated valid
    /// messages (`edgent-edge fuzz`), in process or against a live edge (--socket).
    Fuzz(fuzz::FuzzArgs),
    /// A bounded soak of broker, two edges and sixteen devices with CURVE on loopback: an
    /// edge SIGKILLed and restarted every minute, an allow-list change halfway.
    Soak(soak::SoakArgs),
    /// Bytes, accuracy and codec time of every encoding of the tensor at every split of
    /// the committed model, on the test set; writes encodings.json and report.md.
    Encodings(encodings::EncodingsArgs),
    /// Reproduce the paper's evaluation over tc-shaped links (needs root); writes report.md.
    Experiments(experiments::ExperimentsArgs),
}

/// The repository's root (where the workspace's Cargo.toml is).
pub fn project_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| ".".into(), std::path::Path::to_path_buf)
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Pipeline(args) => pipeline::run(args),
        Command::Train(args) => train::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Profile(args) => latency::run_profile(args),
        Command::ProfileBatches(args) => latency::run_profile_batches(args),
        Command::Fit(args) => latency::run_fit(args),
        Command::Generate(args) => generate::run(args),
        Command::Experiments(args) => experiments::run(args),
        Command::Encodings(args) => encodings::run(args),
        Command::OneBuild(args) => one_build::run(args),
        Command::Fuzz(args) => fuzz::run(args),
        Command::Soak(args) => soak::run(args),
    }
}
