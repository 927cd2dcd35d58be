//! `edgent-edge`: the edge side of Edgent, with the plan compiled in.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use generated::net::{
    HeartbeatArgs, KeyArgs, KeygenArgs, ThreadArgs, reload_on_sighup, stop_on_signals,
};
use generated::outln;
use generated::{EngineArgs, plan, served_plan};
use runtime::broker::{BrokerConfig, broker};
use runtime::edge::{EdgeConfig, Endpoint, serve};

/// The edge side of Edgent: runs the suffix [p, N) of the requested exit for devices.
#[derive(Parser, Debug)]
#[command(name = "edgent-edge", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve devices (directly, or behind a broker) until SIGINT or SIGTERM.
    Serve {
        /// Bind a ROUTER socket here for devices.
        #[arg(long, default_value = "tcp://*:5555", conflicts_with = "broker")]
        bind: String,
        /// Instead of binding, connect to a broker's back end here.
        #[arg(long)]
        broker: Option<String>,
        /// Worker threads, each running the model.
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=256))]
        workers: u16,
        /// Requests that may wait for a worker; more get a `busy` error.
        #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        queue: u32,
        /// Dynamic batching: a worker runs up to this many queued requests for the same
        /// (exit, partition) as one batch (1: one at a time; a GPU backend gains from more).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=4096))]
        max_batch: u16,
        /// With --max-batch: how long a worker waits for more requests to fill a batch, µs
        /// (0: only those already queued, so an idle edge adds no latency).
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
        max_wait_us: u32,
        /// Write the counters as JSON to this file every second (and at shutdown).
        #[arg(long)]
        stats: Option<PathBuf>,
        /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9100).
        #[arg(long, value_name = "ADDR")]
        metrics: Option<String>,
        #[command(flatten)]
        engine: EngineArgs,
        #[command(flatten)]
        threads: ThreadArgs,
        #[command(flatten)]
        keys: KeyArgs,
        #[command(flatten)]
        heartbeat: HeartbeatArgs,
        /// Public keys of the devices admitted, one per line (e.g. concatenated `.pub`
        /// files), when binding. Reloaded when the file changes or on SIGHUP.
        #[arg(long, value_name = "FILE", conflicts_with_all = ["insecure", "broker"])]
        allow: Option<PathBuf>,
        /// The broker's public key (`NAME.pub`), with --broker.
        #[arg(
            long,
            value_name = "FILE",
            conflicts_with = "insecure",
            requires = "broker"
        )]
        server_key: Option<PathBuf>,
    },
    /// Load-balance devices over several edges (zguide ROUTER–ROUTER broker).
    Broker {
        /// Devices connect here.
        #[arg(long, default_value = "tcp://*:5555")]
        front: String,
        /// Edges (`serve --broker`) connect here.
        #[arg(long, default_value = "tcp://*:5556")]
        back: String,
        /// Requests that may wait at the broker for a free edge worker; more get `busy`.
        #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        queue: u32,
        /// Write the counters as JSON to this file every second (and at shutdown).
        #[arg(long)]
        stats: Option<PathBuf>,
        /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9101).
        #[arg(long, value_name = "ADDR")]
        metrics: Option<String>,
        #[command(flatten)]
        keys: KeyArgs,
        #[command(flatten)]
        heartbeat: HeartbeatArgs,
        /// Public keys of the devices admitted at the front, one per line. Reloaded when
        /// the file changes or on SIGHUP.
        #[arg(long, value_name = "FILE", conflicts_with = "insecure")]
        allow: Option<PathBuf>,
        /// Public keys of the edges admitted at the back (a separate list: a device key
        /// cannot register as an edge). Reloaded like --allow.
        #[arg(long, value_name = "FILE", conflicts_with = "insecure")]
        allow_edges: Option<PathBuf>,
    },
    /// Create a CurveZMQ key pair.
    Keygen(KeygenArgs),
    /// Print what was compiled in and check that the embedded weights load (on the engine
    /// and backend given, e.g. `--engine burn --backend wgpu` names the GPU).
    Info {
        #[command(flatten)]
        engine: EngineArgs,
    },
    /// Fuzz the protocol decoder and the edge's admission checks with mutated valid
    /// messages of every type, in this process (all cores) or, with --socket, against a
    /// live `edgent-edge serve --insecure` on loopback. Fails if any case fails.
    Fuzz(generated::fuzz::FuzzArgs),
}

fn write_stats(path: &std::path::Path, stats: &impl serde::Serialize) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(stats)?)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

/// `--stats FILE`: the counters written every second; the first failure is reported once,
/// at the end, instead of stopping the server.
struct StatsFile {
    path: Option<PathBuf>,
    error: Option<anyhow::Error>,
}

impl StatsFile {
    fn new(path: Option<PathBuf>) -> Self {
        Self { path, error: None }
    }

    fn write(&mut self, stats: &impl serde::Serialize) {
        if let Some(path) = &self.path
            && let Err(e) = write_stats(path, stats)
        {
            self.error.get_or_insert(e);
        }
    }

    fn report(self, who: &str) {
        if let Some(e) = self.error {
            eprintln!("{who}: warning: {e:#}");
        }
    }
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Serve {
            bind,
            broker,
            workers,
            queue,
            max_batch,
            max_wait_us,
            stats,
            metrics,
            engine,
            threads,
            keys,
            heartbeat,
            allow,
            server_key,
        } => {
            threads.apply(plan::EDGE_THREADS)?;
            let (endpoint, security) = match broker {
                Some(address) => (
                    Endpoint::Broker(address),
                    keys.client(server_key.as_deref())?,
                ),
                None => (
                    Endpoint::Bind(bind),
                    keys.server(allow.as_deref(), "--allow")?,
                ),
            };
            let engine = engine.load(plan::EDGE_ENGINE)?;
            let stop = stop_on_signals()?;
            let config = EdgeConfig {
                endpoint: endpoint.clone(),
                workers: usize::from(workers),
                queue: queue as usize,
                security,
                reload: Some(reload_on_sighup()?),
                heartbeat: heartbeat.heartbeat(),
                metrics,
                max_batch: usize::from(max_batch),
                max_wait: Duration::from_micros(u64::from(max_wait_us)),
            };
            let mut stats_file = StatsFile::new(stats);
            let last = serve(
                &engine,
                &served_plan(),
                &config,
                &stop,
                || {
                    eprintln!(
                        "edgent-edge: serving plan {} on {endpoint:?} with {workers} workers ({})",
                        &plan::DIGEST[..12],
                        engine.describe()
                    );
                },
                |s| stats_file.write(s),
            )?;
            stats_file.report("edgent-edge");
            eprintln!("edgent-edge: shut down");
            outln!("{}", serde_json::to_string(&last)?);
        }
        Command::Broker {
            front,
            back,
            queue,
            stats,
            metrics,
            keys,
            heartbeat,
            allow,
            allow_edges,
        } => {
            let config = BrokerConfig {
                front_security: keys.server(allow.as_deref(), "--allow")?,
                back_security: keys.server(allow_edges.as_deref(), "--allow-edges")?,
                front,
                back,
                max_payload: served_plan().max_payload,
                queue: queue as usize,
                heartbeat: heartbeat.heartbeat(),
                reload: Some(reload_on_sighup()?),
                metrics,
            };
            let stop = stop_on_signals()?;
            let mut stats_file = StatsFile::new(stats);
            let last = broker(
                &config,
                &stop,
                || {
                    eprintln!(
                        "edgent-edge broker: devices on {}, edges on {}",
                        config.front, config.back
                    );
                },
                |s| stats_file.write(s),
            )?;
            stats_file.report("edgent-edge broker");
            outln!("{}", serde_json::to_string(&last)?);
        }
        Command::Keygen(args) => args.run()?,
        Command::Fuzz(args) => {
            let exe = std::env::current_exe().context("cannot find this binary")?;
            generated::fuzz::run(&args, &exe)?;
        }
        Command::Info { engine: args } => {
            let engine = args.load(plan::EDGE_ENGINE)?;
            outln!("plan digest    {}", plan::DIGEST);
            outln!("weights digest {} (loaded)", plan::WEIGHTS_DIGEST);
            outln!("latency models {}", plan::LATENCY_SOURCE);
            outln!(
                "engine         {} (planned: {}; {} threads)",
                engine.describe(),
                plan::EDGE_ENGINE,
                plan::EDGE_THREADS
            );
            if engine.kind() == runtime::EngineKind::Burn {
                outln!(
                    "backend        {} on {}",
                    args.backend,
                    args.backend.adapter()
                );
            }
            outln!(
                "CURVE          {}",
                if runtime::wire::transport::curve_available() {
                    "available"
                } else {
                    "NOT available in the linked libzmq (only --insecure works)"
                }
            );
        }
    }
    Ok(())
}
