//! `edgent-device`: the device side of Edgent, with the plan compiled in.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;

use clap::{Parser, Subcommand};
use generated::units::{parse_bandwidth, parse_duration_ms};
use generated::{load_model, normalize, plan, read_image};
use runtime::entropy::{argmax, softmax_entropy};
use runtime::profile::run_slice;
use runtime::timing::Slowdown;
use runtime::{Activation, Backend};

/// The device side of Edgent: decide (exit, partition) from bandwidth and deadline, and run.
#[derive(Parser, Debug)]
#[command(name = "edgent-device", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the plan for a bandwidth and a deadline: exit, partition, predicted breakdown.
    Plan {
        /// Uplink bandwidth, e.g. 400kbit, 1.5Mbit.
        #[arg(long, value_parser = parse_bandwidth)]
        bandwidth: f64,
        /// Latency requirement, e.g. 300ms, 1s.
        #[arg(long, value_parser = parse_duration_ms)]
        deadline: f64,
        /// Round-trip overhead per request, e.g. 5ms.
        #[arg(long, value_parser = parse_duration_ms, default_value = "0ms")]
        rtt: f64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Classify an image on the device alone with one whole exit.
    Local {
        /// Image file: binary PGM (28×28 or 32×32) or raw u8 pixels [C, 32, 32].
        #[arg(long)]
        input: PathBuf,
        /// Exit to run (1–5; default: the deepest).
        #[arg(long, value_parser = clap::value_parser!(u8).range(1..=5))]
        exit: Option<u8>,
        /// Emulate a device this many times slower (as profiled).
        #[arg(long, default_value = "1")]
        slowdown: Slowdown,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print what was compiled in: plan digest, weights, latency source, exits.
    Info,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Plan {
            bandwidth,
            deadline,
            rtt,
            json,
        } => {
            let d = plan::decide(bandwidth, rtt, deadline);
            if json {
                let value = serde_json::json!({
                    "exit": d.exit,
                    "partition": d.partition,
                    "feasible": d.feasible,
                    "predicted_ms": d.predicted_ms,
                    "device_ms": d.device_ms,
                    "network_ms": d.network_ms,
                    "edge_ms": d.edge_ms,
                    "chain_len": plan::CHAIN_LEN[d.exit - 1],
                    "accuracy": plan::ACCURACY[d.exit - 1],
                });
                println!("{value}");
            } else {
                let n = plan::CHAIN_LEN[d.exit - 1];
                let split = match d.partition {
                    0 => "edge only (raw image uploaded)".to_string(),
                    p if p == n => "device only".to_string(),
                    p => format!("device runs layers [0, {p}), edge runs [{p}, {n})"),
                };
                println!(
                    "exit {} (accuracy {:.2} %), partition {} of {}: {}",
                    d.exit,
                    100.0 * plan::ACCURACY[d.exit - 1],
                    d.partition,
                    n,
                    split
                );
                println!(
                    "predicted {:.2} ms = device {:.2} + network {:.2} + edge {:.2}; deadline {:.2} ms: {}",
                    d.predicted_ms,
                    d.device_ms,
                    d.network_ms,
                    d.edge_ms,
                    deadline,
                    if d.feasible {
                        "met"
                    } else {
                        "NO exit meets it (fastest plan shown)"
                    }
                );
            }
        }
        Command::Local {
            input,
            exit,
            slowdown,
            json,
        } => {
            let exit = exit.map_or(plan::EXITS, usize::from);
            let pixels = read_image(&input)?;
            let device = Backend::default().device();
            let model = load_model(&device)?;
            let mut dims = vec![1];
            dims.extend(plan::INPUT);
            let x = Activation::from_values(normalize(&pixels), &dims, &device)?;
            let started = Instant::now();
            let (logits, _) = run_slice(
                &model,
                exit,
                0..plan::CHAIN_LEN[exit - 1],
                x,
                slowdown,
                &device,
            )
            .context("running the exit failed")?;
            let elapsed_ms = started.elapsed().as_secs_f64() * 1e3;
            let logits = logits.to_values();
            let (probs, entropy) = softmax_entropy(&logits);
            let class = argmax(&logits);
            if json {
                let value = serde_json::json!({
                    "exit": exit, "class": class, "probability": probs[class],
                    "entropy": entropy, "ms": elapsed_ms, "logits": logits,
                });
                println!("{value}");
            } else {
                println!(
                    "class {class} (p = {:.3}, entropy {:.3}) from exit {exit} in {elapsed_ms:.2} ms",
                    probs[class], entropy
                );
            }
        }
        Command::Info => {
            println!("plan digest    {}", plan::DIGEST);
            println!("weights digest {}", plan::WEIGHTS_DIGEST);
            println!(
                "data set       {} (input {:?}, {} classes)",
                plan::DATASET,
                plan::INPUT,
                plan::CLASSES
            );
            println!(
                "latency models {} (device slowdown {})",
                plan::LATENCY_SOURCE,
                plan::DEVICE_SLOWDOWN
            );
            for i in 0..plan::EXITS {
                println!(
                    "exit {}: {} layers, accuracy {:.2} %, device-only {:.2} ms",
                    i + 1,
                    plan::CHAIN_LEN[i],
                    100.0 * plan::ACCURACY[i],
                    plan::TABLES[i].pairs[plan::CHAIN_LEN[i]].device_ms
                );
            }
        }
    }
    Ok(())
}
