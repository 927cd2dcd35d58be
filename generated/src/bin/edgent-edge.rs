//! `edgent-edge`: the edge side of Edgent, with the plan compiled in.

use clap::{Parser, Subcommand};
use generated::{load_model, plan};
use runtime::Backend;

/// The edge side of Edgent: runs the suffix [p, N) of the requested exit for devices.
#[derive(Parser, Debug)]
#[command(name = "edgent-edge", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print what was compiled in and check that the embedded weights load.
    Info,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Info => {
            let device = Backend::default().device();
            load_model(&device)?;
            println!("plan digest    {}", plan::DIGEST);
            println!("weights digest {} (loaded)", plan::WEIGHTS_DIGEST);
            println!("latency models {}", plan::LATENCY_SOURCE);
        }
    }
    Ok(())
}
