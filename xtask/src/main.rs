//! `cargo xtask`: the Edgent pipeline. Each subcommand parses flags and calls a library crate.

mod bench;
mod train;

use clap::{Parser, Subcommand};

/// The Edgent toolchain: train → profile → fit → generate.
#[derive(Parser, Debug)]
#[command(name = "cargo xtask", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train the five-exit B-AlexNet and write weights and per-exit metrics.
    Train(train::TrainArgs),
    /// Measure forward latency at batch 1 for each exit on every CPU backend.
    Bench(bench::BenchArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Train(args) => train::run(args),
        Command::Bench(args) => bench::run(args),
    }
}
