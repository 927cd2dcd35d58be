//! `edgent-device`: the device side of Edgent, with the plan compiled in.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use generated::net::{KeyArgs, KeygenArgs, ThreadArgs};
use generated::outln;
use generated::units::{parse_bandwidth, parse_deadline_ms, parse_duration_ms};
use generated::{EngineArgs, device_plan, normalize, plan, read_image};
use runtime::Activation;
use runtime::device::{Answer, DeviceClient, DeviceConfig, Source};
use runtime::model::entropy::{argmax, softmax_entropy};
use runtime::plan::Link;
use runtime::plan::Policy;
use runtime::slowdown::Slowdown;
use runtime::slowdown::{Emulation, LayerClock, run_slice_clocked};
use runtime::wire::encoding::Encoding;

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
        /// Uplink bandwidth, e.g. 400kbit, 1.5Mbit/s, 50kB/s (b: bits, B: bytes).
        #[arg(long, value_parser = parse_bandwidth)]
        bandwidth: f64,
        /// Latency requirement, e.g. 300ms, 1s (at most an hour).
        #[arg(long, value_parser = parse_deadline_ms)]
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
        #[command(flatten)]
        engine: EngineArgs,
        #[command(flatten)]
        threads: ThreadArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Classify one image with the edge: plan, run the prefix, offload the rest.
    Run {
        /// Image file: binary PGM (28×28 or 32×32) or raw u8 pixels [C, 32, 32].
        #[arg(long)]
        input: PathBuf,
        /// Latency requirement, e.g. 300ms (at most an hour).
        #[arg(long, value_parser = parse_deadline_ms)]
        deadline: f64,
        #[command(flatten)]
        edge: EdgeArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Classify a whole data set with the edge; report accuracy, deadline hit rate and
    /// latency percentiles.
    Eval {
        /// Latency requirement per image, e.g. 300ms (at most an hour).
        #[arg(long, value_parser = parse_deadline_ms)]
        deadline: f64,
        /// Data set directory (default: Debian's Fashion-MNIST).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Only the first N test images.
        #[arg(long)]
        limit: Option<usize>,
        /// Run for this long, e.g. 60s, going round the set again if it ends first (the
        /// report covers the images done).
        #[arg(long, value_parser = parse_duration_ms)]
        duration: Option<f64>,
        /// Write one JSON line per request here.
        #[arg(long)]
        trace: Option<PathBuf>,
        #[command(flatten)]
        edge: EdgeArgs,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run one image through every (exit, partition) pair, forced, and print the logits
    /// of each as a JSON line (a correctness check of the split).
    Pairs {
        /// Image file.
        #[arg(long)]
        input: PathBuf,
        /// Every encoding of every partition (the image raw and compressed; f32, f16, q8,
        /// q8c, q4, q4c, each with and without zstd), not only the raw image and f32.
        #[arg(long)]
        all_encodings: bool,
        #[command(flatten)]
        edge: EdgeArgs,
    },
    /// Create a CurveZMQ key pair.
    Keygen(KeygenArgs),
    /// Print what was compiled in: plan digest, weights, latency source, exits.
    Info,
    /// Time every exit whole on this machine at batch 1 (no slowdown): the median of
    /// `--repeats` runs on a fixed input, and its logits (`cargo xtask bench` reads the JSON).
    Bench {
        /// Timed runs per exit.
        #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
        repeats: u32,
        /// Also the throughput of exit 5 (images/s) at these batch sizes, e.g. 1,8,64,256.
        #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u32).range(1..=4096))]
        batches: Vec<u32>,
        #[command(flatten)]
        engine: EngineArgs,
        #[command(flatten)]
        threads: ThreadArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// How to reach the edge and how to plan.
#[derive(Args, Debug)]
struct EdgeArgs {
    /// The edge (or broker) address.
    #[arg(long, default_value = "tcp://127.0.0.1:5555")]
    edge: String,
    #[command(flatten)]
    keys: KeyArgs,
    /// The server's public key (`NAME.pub` of the edge, or of the broker).
    #[arg(long, value_name = "FILE", conflicts_with = "insecure")]
    server_key: Option<PathBuf>,
    #[command(flatten)]
    engine: EngineArgs,
    #[command(flatten)]
    threads: ThreadArgs,
    /// Emulate a device this many times slower (default: the slowdown the plan was
    /// profiled with).
    #[arg(long)]
    slowdown: Option<Slowdown>,
    /// Plan for this bandwidth instead of measuring it (a plan fixed in advance).
    #[arg(long, value_parser = parse_bandwidth)]
    bandwidth: Option<f64>,
    /// Round trip to plan with, together with --bandwidth.
    #[arg(long, value_parser = parse_duration_ms, default_value = "1ms", requires = "bandwidth")]
    rtt: f64,
    /// How long to wait for the edge at start (probe); then run locally until it answers.
    #[arg(long, value_parser = parse_duration_ms, default_value = "3s")]
    connect_timeout: f64,
    /// Bytes of each ping of the start-up bandwidth probe (0: no probe); an image's size by
    /// default, so that the estimate sees the per-message overheads an upload sees. The
    /// probe sends them as their pongs come back until the rate holds steady (a link's
    /// burst spent first), at most 4 MiB within --connect-timeout.
    #[arg(long, default_value_t = 1024)]
    probe_bytes: usize,
    /// What to choose: edgent, or a baseline (device-only, edge-only, partition-only,
    /// right-sizing-only).
    #[arg(long, default_value = "edgent")]
    policy: Policy,
    /// Never answer locally when the edge fails: wait for it (the baselines' behaviour).
    #[arg(long)]
    no_fallback: bool,
    /// Plan against the full deadline, without the safety margin learnt from how much
    /// recent answers overran their predictions.
    #[arg(long)]
    no_margin: bool,
    /// Run the local fallback only after giving up on the edge, instead of on a second
    /// thread while waiting for it.
    #[arg(long)]
    no_speculation: bool,
}

impl EdgeArgs {
    /// Loads the model, connects, probes.
    fn connect(&self) -> anyhow::Result<DeviceClient> {
        let slowdown = match self.slowdown {
            Some(s) => s,
            None => Slowdown::new(plan::DEVICE_SLOWDOWN).map_err(anyhow::Error::msg)?,
        };
        self.threads.apply(plan::DEVICE_THREADS)?;
        let security = self.keys.client(self.server_key.as_deref())?;
        let mut config = DeviceConfig::new(self.edge.clone(), security);
        config.slowdown = slowdown;
        config.probe_bytes = self.probe_bytes;
        config.policy = self.policy;
        config.fallback = !self.no_fallback;
        config.safety_margin = !self.no_margin;
        config.speculate = !self.no_speculation;
        config.fixed_link = self.bandwidth.map(|bandwidth_bps| Link {
            bandwidth_bps,
            rtt_ms: self.rtt,
        });
        let engine = self.engine.load(plan::DEVICE_ENGINE)?;
        let mut client = DeviceClient::connect(engine, device_plan(), config)?;
        let timeout = Duration::from_secs_f64(self.connect_timeout / 1e3);
        match client.probe(timeout) {
            Some(link) => eprintln!(
                "edgent-device: edge at {} answers; link {:.0} kbit/s, round trip {:.2} ms",
                self.edge,
                link.bandwidth_bps / 1e3,
                link.rtt_ms
            ),
            None => eprintln!(
                "edgent-device: no answer from {} within {:.0} ms; answering locally until it does",
                self.edge, self.connect_timeout
            ),
        }
        Ok(client)
    }
}

fn print_answer(a: &Answer) {
    let source = match a.source {
        Source::Edge => format!("device [0, {}) + edge", a.partition),
        Source::Local => "device only".to_string(),
        Source::Fallback => format!(
            "LOCAL FALLBACK ({})",
            a.fallback.as_deref().unwrap_or("edge failed")
        ),
    };
    outln!(
        "class {} from exit {} ({source}) in {:.2} ms (deadline {:.0} ms: {})",
        a.class,
        a.exit,
        a.total_ms,
        a.deadline_ms,
        if a.met { "met" } else { "MISSED" }
    );
    outln!(
        "  device {:.2} ms, network {:.2} ms ({} bytes), edge {:.2} ms + queue {:.2} ms; predicted {:.2} ms at {:.0} kbit/s",
        a.device_ms,
        a.network_ms,
        a.bytes,
        a.edge_ms,
        a.queue_ms,
        a.plan.predicted_ms,
        a.link.bandwidth_bps / 1e3
    );
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
                    "encoding": d.encoding.map(|e| e.to_string()),
                    "feasible": d.feasible,
                    "predicted_ms": d.predicted_ms,
                    "device_ms": d.device_ms,
                    "network_ms": d.network_ms,
                    "edge_ms": d.edge_ms,
                    "chain_len": plan::CHAIN_LEN[d.exit - 1],
                    "accuracy": plan::ACCURACY[d.exit - 1],
                });
                outln!("{value}");
            } else {
                let n = plan::CHAIN_LEN[d.exit - 1];
                let sent = d.encoding.map(|e| e.to_string()).unwrap_or_default();
                let split = match d.partition {
                    0 => format!("edge only (the image uploaded as {sent})"),
                    p if p == n => "device only".to_string(),
                    p => format!(
                        "device runs layers [0, {p}), sends the activation as {sent}, edge runs [{p}, {n})"
                    ),
                };
                outln!(
                    "exit {} (accuracy {:.2} %), partition {} of {}: {}",
                    d.exit,
                    100.0 * plan::ACCURACY[d.exit - 1],
                    d.partition,
                    n,
                    split
                );
                outln!(
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
            engine,
            threads,
            json,
        } => {
            threads.apply(plan::DEVICE_THREADS)?;
            let exit = exit.map_or(plan::EXITS, usize::from);
            let pixels = read_image(&input)?;
            let engine = engine.load(plan::DEVICE_ENGINE)?;
            let mut dims = vec![1];
            dims.extend(plan::INPUT);
            let x = Activation::from_values(normalize(&pixels), &dims)?;
            let clock = LayerClock::measure(&*engine, slowdown)?;
            let emulation = Emulation {
                clock: Some(&clock),
                cancel: None,
            };
            let started = Instant::now();
            let (logits, _) =
                run_slice_clocked(&*engine, exit, 0..plan::CHAIN_LEN[exit - 1], &x, emulation)
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
                outln!("{value}");
            } else {
                outln!(
                    "class {class} (p = {:.3}, entropy {:.3}) from exit {exit} in {elapsed_ms:.2} ms",
                    probs[class],
                    entropy
                );
            }
        }
        Command::Run {
            input,
            deadline,
            edge,
            json,
        } => {
            let pixels = read_image(&input)?;
            let mut client = edge.connect()?;
            let answer = client.infer(&pixels, deadline)?;
            if json {
                outln!("{}", serde_json::to_string(&answer)?);
            } else {
                print_answer(&answer);
            }
        }
        Command::Eval {
            deadline,
            data,
            limit,
            duration,
            trace,
            edge,
            json,
        } => {
            let report = eval(deadline, data, limit, duration, trace, &edge)?;
            if json {
                outln!("{}", serde_json::to_string(&report)?);
            } else {
                report.print();
            }
        }
        Command::Pairs {
            input,
            all_encodings,
            edge,
        } => {
            let pixels = read_image(&input)?;
            let mut client = edge.connect()?;
            for exit in 1..=plan::EXITS {
                let n = plan::CHAIN_LEN[exit - 1];
                for partition in 0..=n {
                    let encodings: Vec<Option<Encoding>> = if all_encodings && partition < n {
                        let shape = generated::layer_table().exits[exit - 1]
                            .boundary_shape(partition)
                            .to_vec();
                        Encoding::for_tensor(partition, &shape).map(Some).collect()
                    } else {
                        vec![None]
                    };
                    for encoding in encodings {
                        let logits = client
                            .infer_pair(&pixels, exit, partition, encoding, Duration::from_secs(10))
                            .with_context(|| {
                                format!("exit {exit}, partition {partition}, encoding {encoding:?}")
                            })?;
                        let encoding = encoding
                            .or(runtime::plan::paper_encoding(partition, n))
                            .map(|e| e.to_string());
                        let line = serde_json::json!({
                            "exit": exit,
                            "partition": partition,
                            "encoding": encoding,
                            "logits": logits,
                        });
                        outln!("{line}");
                    }
                }
            }
        }
        Command::Keygen(args) => args.run()?,
        Command::Bench {
            repeats,
            batches,
            engine,
            threads,
            json,
        } => {
            threads.apply(plan::DEVICE_THREADS)?;
            let engine = engine.load(plan::DEVICE_ENGINE)?;
            let table = engine.table().clone();
            let input = runtime::slowdown::probe_input(&table.exits[0].layers[0]);
            let repeats = runtime::slowdown::Repeats::exactly(repeats as usize);
            let mut ms = Vec::new();
            let mut logits = Vec::new();
            for spec in &table.exits {
                let range = 0..spec.len();
                logits.push(
                    engine
                        .forward_slice(spec.exit, range.clone(), &input)?
                        .into_values(),
                );
                ms.push(repeats.median_ms(|| {
                    let start = Instant::now();
                    let _ = std::hint::black_box(engine.forward_slice(
                        spec.exit,
                        range.clone(),
                        &input,
                    ));
                    start.elapsed()
                }));
            }
            let exit = table.exits.len();
            let per_s = engine.throughput(exit, &input, &batches, repeats.min as u32)?;
            if json {
                let value = serde_json::json!({
                    "engine": engine.describe(), "threads": runtime::model::backend::current_threads(),
                    "ms": ms, "input": input.values(), "logits": logits,
                    "batches": batches, "images_per_s": per_s,
                });
                outln!("{value}");
            } else {
                outln!(
                    "{} — median of {} runs at batch 1 (ms):",
                    engine.describe(),
                    repeats.min
                );
                for (spec, ms) in table.exits.iter().zip(&ms) {
                    outln!("exit {}: {ms:.3}", spec.exit);
                }
                for (b, r) in batches.iter().zip(&per_s) {
                    outln!("exit {exit}, batch {b}: {r:.0} images/s");
                }
            }
        }
        Command::Info => {
            outln!("plan digest    {}", plan::DIGEST);
            outln!("weights digest {}", plan::WEIGHTS_DIGEST);
            outln!(
                "data set       {} (input {:?}, {} classes)",
                plan::DATASET,
                plan::INPUT,
                plan::CLASSES
            );
            outln!(
                "latency models {} (device slowdown {}, engines: device {}, edge {}; device {}, edge {})",
                plan::LATENCY_SOURCE,
                plan::DEVICE_SLOWDOWN,
                plan::DEVICE_ENGINE,
                plan::EDGE_ENGINE,
                runtime::model::backend::threads_in_words(plan::DEVICE_THREADS),
                runtime::model::backend::threads_in_words(plan::EDGE_THREADS)
            );
            for i in 0..plan::EXITS {
                outln!(
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

/// Summary of an `eval` run.
#[derive(Debug, serde::Serialize)]
struct Report {
    images: usize,
    deadline_ms: f64,
    accuracy: f64,
    /// Accuracy counting a missed deadline as wrong (the paper's scoring).
    accuracy_within_deadline: f64,
    deadline_hit_rate: f64,
    latency_ms_p50: f64,
    latency_ms_p95: f64,
    latency_ms_p99: f64,
    latency_ms_max: f64,
    /// Mean of measured / predicted latency over edge answers.
    measured_over_predicted: f64,
    /// Median of |measured − predicted| / predicted over edge answers, %.
    prediction_error_pct_p50: f64,
    /// Mean size of the batches the edge says it ran the answers in (1: unbatched).
    edge_batch_mean: f64,
    from_edge: u64,
    device_only: u64,
    fallbacks: u64,
    late_replies: u64,
    /// Replies that came twice, and results for another exit or partition (both 0 on a
    /// sound edge).
    duplicate_replies: u64,
    mismatched_replies: u64,
    /// Sockets replaced after 10 s without a word from the server.
    reconnects: u64,
    /// Local fallbacks started while waiting for the edge, and how many were cancelled
    /// because the edge answered.
    speculated: u64,
    speculation_cancelled: u64,
    wall_s: f64,
    final_link_kbit_s: f64,
}

impl Report {
    fn print(&self) {
        outln!(
            "{} images, deadline {:.0} ms: accuracy {:.2} % ({:.2} % counting misses as wrong), deadline met {:.2} %",
            self.images,
            self.deadline_ms,
            100.0 * self.accuracy,
            100.0 * self.accuracy_within_deadline,
            100.0 * self.deadline_hit_rate
        );
        outln!(
            "latency p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, max {:.2} ms; measured/predicted {:.3} (median error {:.1} %); edge batches of {:.1} on average",
            self.latency_ms_p50,
            self.latency_ms_p95,
            self.latency_ms_p99,
            self.latency_ms_max,
            self.measured_over_predicted,
            self.prediction_error_pct_p50,
            self.edge_batch_mean
        );
        outln!(
            "answers: {} from the edge, {} device-only, {} local fallbacks ({} late replies discarded; {} local runs while waiting, {} cancelled); {:.1} s",
            self.from_edge,
            self.device_only,
            self.fallbacks,
            self.late_replies,
            self.speculated,
            self.speculation_cancelled,
            self.wall_s
        );
    }
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i]
}

fn eval(
    deadline: f64,
    data: Option<PathBuf>,
    limit: Option<usize>,
    duration: Option<f64>,
    trace: Option<PathBuf>,
    edge: &EdgeArgs,
) -> anyhow::Result<Report> {
    let kind: datasets::DatasetKind = plan::DATASET.parse().map_err(anyhow::Error::msg)?;
    let mut set = datasets::load(kind, data.as_deref(), datasets::Split::Test)
        .context("cannot load the test set")?;
    if let Some(limit) = limit {
        set.truncate(limit);
    }
    if set.is_empty() {
        bail!("the test set is empty");
    }
    let mut trace = match trace {
        Some(path) => Some(std::io::BufWriter::new(
            std::fs::File::create(&path)
                .with_context(|| format!("cannot create {}", path.display()))?,
        )),
        None => None,
    };
    let mut client = edge.connect()?;
    let stop_after = duration.map(|ms| Duration::from_secs_f64(ms / 1e3));
    // With a duration, the set is repeated until it is up; else one pass.
    let requests = if stop_after.is_some() {
        usize::MAX
    } else {
        set.len()
    };
    let bar = indicatif::ProgressBar::new(set.len() as u64).with_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} images, {per_sec}, eta {eta} {msg}",
        )?,
    );
    let started = Instant::now();
    let (mut correct, mut correct_in_time, mut met) = (0usize, 0usize, 0usize);
    let mut latencies = Vec::new();
    let mut ratios = Vec::new();
    let mut batches = Vec::new();
    for request in 0..requests {
        if stop_after.is_some_and(|d| started.elapsed() >= d) {
            break;
        }
        let i = request % set.len();
        let answer = client.infer(set.image(i), deadline)?;
        let right = answer.class == usize::from(set.labels[i]);
        correct += usize::from(right);
        correct_in_time += usize::from(right && answer.met);
        met += usize::from(answer.met);
        latencies.push(answer.total_ms);
        if answer.source == Source::Edge {
            ratios.push(answer.total_ms / answer.plan.predicted_ms);
            batches.push(f64::from(answer.batch.max(1)));
        }
        if let Some(out) = trace.as_mut() {
            let mut line = serde_json::to_value(&answer)?;
            line["image"] = serde_json::json!(i);
            line["label"] = serde_json::json!(set.labels[i]);
            line["correct"] = serde_json::json!(right);
            line["t_s"] = serde_json::json!(started.elapsed().as_secs_f64());
            if let Some(map) = line.as_object_mut() {
                map.remove("logits");
            }
            writeln!(out, "{line}")?;
            // Line by line, so that a run can be followed (and survives a crash).
            out.flush()?;
        }
        bar.inc(1);
        if request % 50 == 0 {
            bar.set_message(format!(
                "accuracy {:.1} %",
                100.0 * correct as f64 / (request + 1) as f64
            ));
        }
    }
    bar.finish_and_clear();
    if let Some(mut out) = trace {
        out.flush()?;
    }
    let n = latencies.len();
    latencies.sort_by(f64::total_cmp);
    let counters = client.counters();
    let mean = |v: &[f64]| {
        if v.is_empty() {
            f64::NAN
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    let mut errors: Vec<f64> = ratios.iter().map(|r| 100.0 * (r - 1.0).abs()).collect();
    errors.sort_by(f64::total_cmp);
    Ok(Report {
        images: n,
        deadline_ms: deadline,
        accuracy: correct as f64 / n as f64,
        accuracy_within_deadline: correct_in_time as f64 / n as f64,
        deadline_hit_rate: met as f64 / n as f64,
        latency_ms_p50: percentile(&latencies, 0.5),
        latency_ms_p95: percentile(&latencies, 0.95),
        latency_ms_p99: percentile(&latencies, 0.99),
        latency_ms_max: latencies.last().copied().unwrap_or(f64::NAN),
        measured_over_predicted: mean(&ratios),
        prediction_error_pct_p50: percentile(&errors, 0.5),
        edge_batch_mean: mean(&batches),
        from_edge: counters.edge,
        device_only: counters.local,
        fallbacks: counters.fallback,
        late_replies: counters.late_replies,
        duplicate_replies: counters.duplicate_replies,
        mismatched_replies: counters.mismatched_replies,
        reconnects: counters.reconnects,
        speculated: counters.speculated,
        speculation_cancelled: counters.speculation_cancelled,
        wall_s: started.elapsed().as_secs_f64(),
        final_link_kbit_s: client.link().bandwidth_bps / 1e3,
    })
}
