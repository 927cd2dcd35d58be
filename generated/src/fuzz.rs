//! `edgent-edge fuzz`: the structure-aware fuzzer ([`runtime::wire::mutate`], checked by
//! [`runtime::fuzz`]) on the compiled-in plan's layer table and served plan.
//!
//! In process (the default), cases run on all cores through the decoder and the edge's
//! admission; a case that panics or breaks an invariant is saved under `--out` as a
//! `.frames` file and the run goes on. With `--socket`, the cases go over a DEALER socket
//! to a live `edgent-edge serve --insecure` started on loopback, one at a time: each reply
//! must be the very frames admission predicts (a run must come back as a Result), a valid
//! request every `--check-every` cases must get the logits this process computes, the
//! edge's final counters must match the predicted outcomes, and one oversized frame must
//! be dropped without growing the edge's memory while it keeps serving.

use std::cell::Cell;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, Once, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use clap::{Args, Parser};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use runtime::edge::{Admission, ServedPlan, admission, max_frame_bytes};
use runtime::fuzz::{Failure, Tally, case_rng, check, load_frames, run_range, save_frames};
use runtime::wire::mutate::{Corpus, Frames};
use runtime::wire::protocol::{ErrorCode, Message, MessageType, Payload};
use runtime::{Activation, LayerTable};
use serde_json::{Value, json};

/// Flags of `edgent-edge fuzz`.
#[derive(Args, Debug, Clone)]
pub struct FuzzArgs {
    /// Cases to run (default: 1,000,000 in process, 20,000 with --socket).
    #[arg(long)]
    pub iterations: Option<u64>,
    /// Seed of the run: the same seed gives the same cases (case i alone is reproducible).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Threads for the in-process run (0: one per core).
    #[arg(long, default_value_t = 0, conflicts_with = "socket")]
    pub threads: usize,
    /// Directories of `.frames` files to mutate as well (e.g. fuzz/regressions).
    #[arg(long, value_name = "DIR")]
    pub corpus: Vec<PathBuf>,
    /// Where failing cases are saved, as `<hash>.frames`.
    #[arg(long, value_name = "DIR", default_value = "fuzz/regressions")]
    pub out: PathBuf,
    /// Failing cases kept and saved at most (all are counted).
    #[arg(long, default_value_t = 100)]
    pub keep: usize,
    /// Print one JSON object instead of the report.
    #[arg(long)]
    pub json: bool,
    /// Send the cases to a live `edgent-edge serve --insecure` on loopback (started here).
    #[arg(long)]
    pub socket: bool,
    /// With --socket: a valid request checked every this many cases.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..), requires = "socket")]
    pub check_every: u64,
    /// With --socket: the oversized frame sent at the end, MiB (0: none).
    #[arg(long, default_value_t = 300, requires = "socket")]
    pub oversize_mib: usize,
    /// With --socket: how long to wait for each reply, ms.
    #[arg(long, default_value_t = 10_000, requires = "socket")]
    pub reply_timeout_ms: u64,
}

#[derive(Parser)]
struct Flags {
    #[command(flatten)]
    args: FuzzArgs,
}

impl FuzzArgs {
    /// The flags as `edgent-edge fuzz` would parse them (for tests and tools).
    pub fn from_flags<I: IntoIterator<Item = S>, S: Into<std::ffi::OsString> + Clone>(
        flags: I,
    ) -> anyhow::Result<Self> {
        let argv = std::iter::once("fuzz".into()).chain(flags.into_iter().map(Into::into));
        Ok(Flags::try_parse_from(argv)?.args)
    }
}

/// Cases a rayon task runs before it reports progress.
const CHUNK: u64 = 4096;

thread_local! {
    static FUZZING: Cell<bool> = const { Cell::new(false) };
}
static PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());
static HOOK: Once = Once::new();

/// While a thread fuzzes, panics are recorded (the first 20, with their place) instead of
/// printed; other threads keep the previous hook.
fn record_panics_while_fuzzing() {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if FUZZING.with(Cell::get) {
                let mut panics = PANICS.lock().unwrap_or_else(PoisonError::into_inner);
                if panics.len() < 20 {
                    panics.push(info.to_string());
                }
            } else {
                previous(info);
            }
        }));
    });
}

/// The committed plan's layer table, served plan, and the corpus of a run.
fn setup(args: &FuzzArgs) -> anyhow::Result<(LayerTable, ServedPlan, Corpus)> {
    let table = crate::layer_table();
    let plan = crate::served_plan();
    let mut corpus = runtime::fuzz::corpus(&table, &plan, args.seed);
    for dir in &args.corpus {
        for (_, frames) in load_frames(dir).map_err(anyhow::Error::msg)? {
            corpus.add_given(frames);
        }
    }
    Ok((table, plan, corpus))
}

/// What an in-process run found.
#[derive(Debug)]
pub struct InProcess {
    /// The counts.
    pub tally: Tally,
    /// Wall time, s.
    pub seconds: f64,
    /// Threads it ran on.
    pub threads: usize,
    /// The failing cases kept (by index), with the file each was saved to.
    pub failures: Vec<(Failure, Option<PathBuf>)>,
    /// The panics recorded (message and place), at most 20.
    pub panics: Vec<String>,
}

/// Runs `args.iterations` cases in this process on `args.threads` threads.
pub fn in_process(args: &FuzzArgs) -> anyhow::Result<InProcess> {
    let iterations = args.iterations.unwrap_or(1_000_000);
    let (table, plan, corpus) = setup(args)?;
    let threads = if args.threads == 0 {
        std::thread::available_parallelism().map_or(1, usize::from)
    } else {
        args.threads
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("edgent-fuzz-{i}"))
        .build()?;
    record_panics_while_fuzzing();
    PANICS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clear();
    let bar = ProgressBar::new(iterations).with_style(ProgressStyle::with_template(
        "fuzz {bar:40} {human_pos}/{human_len} cases, {per_sec}, eta {eta}",
    )?);
    let keep = args.keep;
    let started = Instant::now();
    let (tally, mut failures) = pool.install(|| {
        (0..iterations.div_ceil(CHUNK))
            .into_par_iter()
            .map(|chunk| {
                let range = chunk * CHUNK..((chunk + 1) * CHUNK).min(iterations);
                let len = range.end - range.start;
                FUZZING.with(|f| f.set(true));
                let found = run_range(&corpus, args.seed, range, &table, &plan, keep);
                FUZZING.with(|f| f.set(false));
                bar.inc(len);
                found
            })
            .reduce(
                || (Tally::default(), Vec::new()),
                |(mut tally, mut failures), (t, f)| {
                    tally.merge(&t);
                    failures.extend(f);
                    failures.truncate(keep);
                    (tally, failures)
                },
            )
    });
    let seconds = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    failures.sort_by_key(|f| f.index);
    let failures = failures
        .into_iter()
        .map(|f| {
            let saved = match &f.frames {
                Some(frames) => Some(
                    save_frames(&args.out, frames)
                        .with_context(|| format!("cannot save a case in {}", args.out.display()))?,
                ),
                None => None,
            };
            Ok((f, saved))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let panics = std::mem::take(&mut *PANICS.lock().unwrap_or_else(PoisonError::into_inner));
    Ok(InProcess {
        tally,
        seconds,
        threads,
        failures,
        panics,
    })
}

fn counts(pairs: &[(&'static str, u64)]) -> Value {
    Value::Object(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect(),
    )
}

fn failure_json(f: &Failure, saved: Option<&Path>) -> Value {
    json!({
        "index": f.index,
        "origin": format!("{:?}", f.origin),
        "mutations": f.mutations.iter().map(|m| m.name()).collect::<Vec<_>>(),
        "what": f.what,
        "file": saved.map(|p| p.display().to_string()),
    })
}

impl InProcess {
    /// Cases per second.
    pub fn rate(&self) -> f64 {
        self.tally.cases as f64 / self.seconds.max(1e-9)
    }

    /// The report as one JSON object.
    pub fn to_json(&self, seed: u64) -> Value {
        json!({
            "mode": "in-process",
            "seed": seed,
            "cases": self.tally.cases,
            "seconds": self.seconds,
            "cases_per_s": self.rate(),
            "threads": self.threads,
            "decoded": self.tally.decoded,
            "outcomes": counts(&self.tally.outcomes()),
            "mutations": counts(&self.tally.mutation_counts()),
            "failures": self.tally.failures,
            "failed_cases": self.failures.iter().map(|(f, p)| failure_json(f, p.as_deref())).collect::<Vec<_>>(),
            "panics": self.panics,
        })
    }

    fn print(&self, seed: u64) {
        let t = &self.tally;
        crate::outln!(
            "fuzz (in process, seed {seed}): {} cases in {:.1} s, {:.0} cases/s on {} thread(s) ({:.0} per thread)",
            t.cases,
            self.seconds,
            self.rate(),
            self.threads,
            self.rate() / self.threads as f64
        );
        crate::outln!(
            "decoded as valid messages: {} ({:.1} %)",
            t.decoded,
            100.0 * t.decoded as f64 / t.cases.max(1) as f64
        );
        crate::outln!("admission outcomes:");
        for (name, n) in t.outcomes() {
            crate::outln!("  {name:<18} {n:>12}");
        }
        let mutations: Vec<String> = t
            .mutation_counts()
            .iter()
            .map(|(m, n)| format!("{m} {n}"))
            .collect();
        crate::outln!("mutations applied: {}", mutations.join(", "));
        crate::outln!("failures: {}", t.failures);
        for (f, saved) in &self.failures {
            crate::outln!(
                "  case {} ({:?}, {:?}): {}{}",
                f.index,
                f.origin,
                f.mutations.iter().map(|m| m.name()).collect::<Vec<_>>(),
                f.what,
                saved
                    .as_ref()
                    .map_or(String::new(), |p| format!(" [saved {}]", p.display()))
            );
        }
        for p in &self.panics {
            crate::outln!("  {p}");
        }
    }
}

/// `edgent-edge fuzz`: runs, prints the report, fails when a case failed. `edge` is the
/// `edgent-edge` binary (`--socket` starts it).
pub fn run(args: &FuzzArgs, edge: &Path) -> anyhow::Result<()> {
    if args.socket {
        let report = socket(args, edge)?;
        if args.json {
            crate::outln!("{}", report.to_json(args.seed));
        } else {
            report.print(args.seed);
        }
        ensure!(
            report.failures.is_empty(),
            "{} check(s) failed against the live edge",
            report.failures.len()
        );
        return Ok(());
    }
    let report = in_process(args)?;
    if args.json {
        crate::outln!("{}", report.to_json(args.seed));
    } else {
        report.print(args.seed);
    }
    ensure!(
        report.tally.failures == 0,
        "{} case(s) failed; saved under {}",
        report.tally.failures,
        args.out.display()
    );
    Ok(())
}

/// Resident memory of process `pid`, KiB (`VmRSS` in `/proc/PID/status`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// An `edgent-edge serve --insecure` on a loopback port, killed when dropped.
struct LiveEdge {
    child: Child,
    endpoint: String,
    log: mpsc::Receiver<String>,
}

impl LiveEdge {
    fn start(edge: &Path) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let endpoint = format!("tcp://127.0.0.1:{port}");
        let mut child = Command::new(edge)
            .args(["serve", "--insecure", "--workers", "1", "--bind", &endpoint])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {}", edge.display()))?;
        let stderr = child.stderr.take().context("the edge's stderr")?;
        let (tx, log) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let edge = Self {
            child,
            endpoint,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match edge.log.recv_timeout(left) {
                Ok(line) if line.contains("serving plan") => return Ok(edge),
                Ok(_) => {}
                Err(_) => bail!("edgent-edge serve did not start within 60 s"),
            }
        }
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn rss(&self) -> u64 {
        rss_kib(self.child.id()).unwrap_or(0)
    }

    /// SIGTERM, then the final counters it prints.
    fn stop(mut self) -> anyhow::Result<Value> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .context("cannot run kill")?;
        ensure!(status.success(), "kill -TERM failed");
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.child.try_wait()?.is_none() {
            ensure!(
                Instant::now() < deadline,
                "the edge did not stop within 20 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut out = String::new();
        if let Some(mut stdout) = self.child.stdout.take() {
            stdout.read_to_string(&mut out)?;
        }
        serde_json::from_str(out.trim()).with_context(|| {
            let log: Vec<String> = self.log.try_iter().collect();
            let tail = &log[log.len().saturating_sub(20)..];
            format!(
                "the edge's final counters `{out}`; the end of its log:\n{}",
                tail.join("\n")
            )
        })
    }
}

impl Drop for LiveEdge {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        while self.log.try_recv().is_ok() {}
    }
}

/// A DEALER to the live edge.
struct Peer {
    socket: zmq::Socket,
}

impl Peer {
    fn connect(context: &zmq::Context, endpoint: &str) -> anyhow::Result<Self> {
        let socket = context.socket(zmq::DEALER)?;
        socket.set_linger(0)?;
        socket.set_sndhwm(0)?;
        socket.connect(endpoint)?;
        Ok(Self { socket })
    }

    fn send<F: AsRef<[u8]>>(&self, frames: &[F]) -> anyhow::Result<()> {
        let frames: Vec<&[u8]> = frames.iter().map(AsRef::as_ref).collect();
        self.socket.send_multipart(frames, 0)?;
        Ok(())
    }

    /// Sends frames without copying them first.
    fn send_owned(&self, frames: Frames) -> anyhow::Result<()> {
        self.socket.send_multipart(frames, 0)?;
        Ok(())
    }

    /// The next reply, or `None` after `timeout`.
    fn recv(&self, timeout: Duration) -> anyhow::Result<Option<Frames>> {
        if self.socket.poll(zmq::POLLIN, timeout.as_millis() as i64)? == 0 {
            return Ok(None);
        }
        Ok(Some(self.socket.recv_multipart(0)?))
    }
}

/// A valid request whose logits this process knows.
struct Probe {
    frames: [Vec<u8>; 2],
    exit: u8,
    partition: u8,
    logits: Vec<f32>,
}

/// Two valid requests: exit 5's raw image at `p = 0`, and an activation in the middle of
/// exit 3, with the logits the compiled-in engine gives them here.
fn probes(table: &LayerTable, plan: &ServedPlan, seed: u64) -> anyhow::Result<Vec<Probe>> {
    use rand::Rng;
    let engine = crate::load_engine(
        crate::planned_engine(crate::plan::EDGE_ENGINE),
        runtime::Backend::default(),
    )?;
    let mut rng = case_rng(seed, u64::MAX - 1);
    let mut out = Vec::new();
    let last = table.exits.len() as u8;
    for (exit, partition) in [(last, 0u8), (3.min(last), 9)] {
        let spec = table.exit(usize::from(exit)).context("no such exit")?;
        let p = usize::from(partition).min(spec.len() - 1);
        let shape = spec.boundary_shape(p).to_vec();
        let n: usize = shape.iter().product();
        let (payload, input) = if p == 0 {
            let pixels: Vec<u8> = (0..n).map(|_| rng.random()).collect();
            let input = runtime::model::normalize(&pixels, &plan.mean, &plan.std);
            (Payload::U8(pixels), input)
        } else {
            let values: Vec<f32> = (0..n).map(|_| rng.random_range(-2.0f32..2.0)).collect();
            (Payload::F32(values.clone()), values)
        };
        let mut dims = vec![1];
        dims.extend(&shape);
        let x = Activation::from_values(input, &dims)?;
        let logits = engine
            .forward_slice(usize::from(exit), p..spec.len(), &x)?
            .into_values();
        let request_id = rng.random();
        let msg = Message::infer(plan.digest, request_id, exit, p as u8, 0, &shape, payload);
        out.push(Probe {
            frames: msg.encode(),
            exit,
            partition: p as u8,
            logits,
        });
    }
    Ok(out)
}

/// Whether `reply` is the Result `probe` should get.
fn probe_answered(probe: &Probe, reply: &Frames) -> Result<(), String> {
    let msg = Message::decode(reply).map_err(|e| format!("an undecodable reply: {e}"))?;
    let h = &msg.header;
    let id = u64::from_le_bytes(probe.frames[0][40..48].try_into().expect("8 bytes"));
    if h.kind != MessageType::Result || h.request_id != id {
        return Err(format!("the probe got {h:?}"));
    }
    if (h.exit, h.partition) != (probe.exit, probe.partition) {
        return Err(format!(
            "the probe's reply is for exit {} p {}",
            h.exit, h.partition
        ));
    }
    let Payload::F32(logits) = &msg.payload else {
        return Err("the probe's reply holds no logits".into());
    };
    let close = logits.len() == probe.logits.len()
        && logits
            .iter()
            .zip(&probe.logits)
            .all(|(a, b)| (a - b).abs() <= 1e-4 * b.abs().max(1.0));
    if !close {
        return Err(format!(
            "the probe's logits {logits:?} are not {:?}",
            probe.logits
        ));
    }
    Ok(())
}

/// What a socket-level run found.
#[derive(Debug, Default)]
pub struct SocketRun {
    /// Cases sent (each answered or counted as a failure).
    pub cases: u64,
    /// Cases not sent: no frames (nothing to send) or a frame over `ZMQ_MAXMSGSIZE`.
    pub skipped: u64,
    /// Valid requests the edge answered `expired` instead: their (mutated) `deadline_us`
    /// passed while they waited for a worker, which PROTOCOL.md allows.
    pub expired: u64,
    /// Wall time of the cases, s.
    pub seconds: f64,
    /// The outcomes admission predicted for the cases sent.
    pub tally: Tally,
    /// Valid requests sent to check the edge, and how many got the right logits.
    pub probes: (u64, u64),
    /// Resident memory of the edge, KiB: after start, after the cases, before and after
    /// the oversized frame.
    pub rss_kib: [u64; 4],
    /// Bytes of the oversized frame (0: none sent).
    pub oversize_bytes: usize,
    /// The oversized frame got no reply.
    pub oversize_dropped: bool,
    /// The peer that sent it got the right logits again after libzmq reconnected it.
    pub oversize_peer_answered: bool,
    /// A fresh connection was answered right after the oversized frame.
    pub fresh_answered: bool,
    /// The edge was still running at the end.
    pub alive: bool,
    /// The edge's final counters.
    pub edge_stats: Value,
    /// Everything that went wrong.
    pub failures: Vec<String>,
}

/// Runs `args.iterations` cases (default 20,000) one at a time against a live edge.
pub fn socket(args: &FuzzArgs, edge_exe: &Path) -> anyhow::Result<SocketRun> {
    let iterations = args.iterations.unwrap_or(20_000);
    let (table, plan, corpus) = setup(args)?;
    let probes = probes(&table, &plan, args.seed)?;
    let timeout = Duration::from_millis(args.reply_timeout_ms);
    let max_frame = usize::try_from(max_frame_bytes(plan.max_payload)).unwrap_or(usize::MAX);
    let mut edge = LiveEdge::start(edge_exe)?;
    let context = zmq::Context::new();
    let peer = Peer::connect(&context, &edge.endpoint)?;
    let mut run = SocketRun {
        rss_kib: [edge.rss(), 0, 0, 0],
        ..SocketRun::default()
    };
    let fail = |run: &mut SocketRun, what: String, frames: Option<&Frames>| {
        let saved = frames.and_then(|f| save_frames(&args.out, f).ok());
        let what = match saved {
            Some(p) => format!("{what} [saved {}]", p.display()),
            None => what,
        };
        run.failures.push(what);
    };
    let probe = |run: &mut SocketRun, peer: &Peer, which: usize| -> anyhow::Result<bool> {
        let probe = &probes[which % probes.len()];
        run.probes.0 += 1;
        peer.send(&probe.frames)?;
        let outcome = match peer.recv(timeout)? {
            None => Err(format!("no reply to the probe within {timeout:?}")),
            Some(reply) => probe_answered(probe, &reply),
        };
        Ok(match outcome {
            Ok(()) => {
                run.probes.1 += 1;
                true
            }
            Err(what) => {
                run.failures.push(what);
                false
            }
        })
    };
    let bar = ProgressBar::new(iterations).with_style(ProgressStyle::with_template(
        "fuzz --socket {bar:40} {human_pos}/{human_len} cases, {per_sec}, eta {eta}",
    )?);
    let started = Instant::now();
    for index in 0..iterations {
        bar.inc(1);
        let case = corpus.case(&mut case_rng(args.seed, index));
        let frames = case.frames;
        if frames.is_empty() || frames.iter().any(|f| f.len() > max_frame) {
            run.skipped += 1;
            continue;
        }
        match check(&frames, &table, &plan) {
            Ok(checked) => run.tally.outcome(checked.outcome),
            Err(what) => fail(&mut run, format!("case {index}: {what}"), Some(&frames)),
        }
        let predicted = admission(&frames, &table, &plan);
        run.cases += 1;
        peer.send(&frames)?;
        let Some(reply) = peer.recv(timeout)? else {
            fail(
                &mut run,
                format!("case {index}: no reply within {timeout:?}"),
                Some(&frames),
            );
            if !edge.alive() {
                run.failures.push(format!("the edge died at case {index}"));
                break;
            }
            continue;
        };
        let wrong = match &predicted {
            Admission::Answer(msg) => (reply != msg.encode()).then(|| {
                format!(
                    "case {index}: the edge answered {:?}, admission predicts {:?}",
                    Message::decode(&reply).map(|m| m.header),
                    msg.header
                )
            }),
            Admission::Run { header, .. } => match Message::decode(&reply) {
                Ok(m)
                    if m.header.kind == MessageType::Result
                        && m.header.request_id == header.request_id
                        && (m.header.exit, m.header.partition)
                            == (header.exit, header.partition)
                        && matches!(&m.payload, Payload::F32(v) if v.len() == table.classes && v.iter().all(|x| x.is_finite())) =>
                {
                    None
                }
                Ok(m)
                    if header.deadline_us > 0
                        && m.header.request_id == header.request_id
                        && ErrorCode::from_u16(m.header.code) == Some(ErrorCode::Expired) =>
                {
                    run.expired += 1;
                    None
                }
                other => Some(format!(
                    "case {index}: a valid request got {other:?}, expected a Result"
                )),
            },
        };
        if let Some(what) = wrong {
            fail(&mut run, what, Some(&frames));
        }
        if (index + 1) % args.check_every == 0 {
            probe(&mut run, &peer, (index / args.check_every) as usize)?;
            if !edge.alive() {
                run.failures.push(format!("the edge died by case {index}"));
                break;
            }
        }
    }
    run.seconds = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    probe(&mut run, &peer, 0)?;
    run.rss_kib[1] = edge.rss();

    if args.oversize_mib > 0 {
        oversize(
            args, &mut run, &context, &edge, &peer, &probes, timeout, &probe,
        )?;
    }
    run.alive = edge.alive();
    if !run.alive {
        run.failures
            .push("the edge is not running at the end".into());
        return Ok(run);
    }
    run.edge_stats = edge.stop()?;
    compare_stats(&mut run);
    Ok(run)
}

/// Sends one frame of `--oversize-mib` MiB from a new peer: no reply, the edge's memory
/// does not grow by it, a fresh connection and the first peer are served.
#[allow(clippy::too_many_arguments)]
fn oversize(
    args: &FuzzArgs,
    run: &mut SocketRun,
    context: &zmq::Context,
    edge: &LiveEdge,
    peer: &Peer,
    probes: &[Probe],
    timeout: Duration,
    probe: &impl Fn(&mut SocketRun, &Peer, usize) -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let bytes = args.oversize_mib << 20;
    run.oversize_bytes = bytes;
    run.rss_kib[2] = edge.rss();
    let big = Peer::connect(context, &edge.endpoint)?;
    big.send_owned(vec![probes[0].frames[0].clone(), vec![0x5A; bytes]])?;
    run.oversize_dropped = big.recv(Duration::from_secs(2))?.is_none();
    if !run.oversize_dropped {
        run.failures.push("the oversized frame was answered".into());
    }
    let fresh = Peer::connect(context, &edge.endpoint)?;
    run.fresh_answered = probe(run, &fresh, 0)?;
    run.rss_kib[3] = edge.rss();
    let grown = run.rss_kib[3].saturating_sub(run.rss_kib[2]) << 10;
    if grown as usize >= bytes / 2 {
        run.failures.push(format!(
            "the edge grew by {} KiB after a {}-byte frame",
            grown >> 10,
            bytes
        ));
    }
    // The first peer is still served; the dropped one after libzmq reconnects it.
    probe(run, peer, 1)?;
    big.send(&probes[0].frames)?;
    run.oversize_peer_answered = big
        .recv(timeout)?
        .is_some_and(|reply| probe_answered(&probes[0], &reply).is_ok());
    Ok(())
}

/// The edge's counters against what admission predicted (plus the probes' results).
fn compare_stats(run: &mut SocketRun) {
    let stats = &run.edge_stats;
    let number = |v: &Value| v.as_u64().unwrap_or(u64::MAX);
    let results = number(&stats["results"]);
    let expected_results =
        run.tally.runs - run.expired + run.probes.1 + u64::from(run.oversize_peer_answered);
    if results != expected_results {
        run.failures.push(format!(
            "the edge counted {results} results, expected {expected_results}"
        ));
    }
    if number(&stats["pings"]) != run.tally.pongs {
        run.failures.push(format!(
            "the edge counted {} pings, admission predicted {}",
            stats["pings"], run.tally.pongs
        ));
    }
    for code in ErrorCode::ALL {
        let counted = stats["errors_by_code"][code.name()].as_u64().unwrap_or(0);
        let mut predicted = run.tally.refused[code as usize];
        if code == ErrorCode::Expired {
            predicted += run.expired;
        }
        if counted != predicted {
            run.failures.push(format!(
                "the edge counted {counted} {} errors, admission predicted {predicted}",
                code.name()
            ));
        }
    }
}

impl SocketRun {
    /// Cases per second.
    pub fn rate(&self) -> f64 {
        self.cases as f64 / self.seconds.max(1e-9)
    }

    /// The report as one JSON object.
    pub fn to_json(&self, seed: u64) -> Value {
        json!({
            "mode": "socket",
            "seed": seed,
            "cases": self.cases,
            "skipped": self.skipped,
            "seconds": self.seconds,
            "cases_per_s": self.rate(),
            "outcomes": counts(&self.tally.outcomes()),
            "probes": self.probes.0,
            "probes_answered": self.probes.1,
            "rss_kib": {
                "start": self.rss_kib[0],
                "after_cases": self.rss_kib[1],
                "before_oversize": self.rss_kib[2],
                "after_oversize": self.rss_kib[3],
            },
            "oversize_bytes": self.oversize_bytes,
            "oversize_dropped": self.oversize_dropped,
            "oversize_peer_answered_after_reconnect": self.oversize_peer_answered,
            "fresh_connection_answered": self.fresh_answered,
            "alive": self.alive,
            "edge_stats": self.edge_stats,
            "failures": self.failures,
        })
    }

    fn print(&self, seed: u64) {
        crate::outln!(
            "fuzz --socket (seed {seed}): {} cases to a live edge in {:.1} s ({:.0} cases/s, one at a time), {} skipped (no frames or a frame over ZMQ_MAXMSGSIZE)",
            self.cases,
            self.seconds,
            self.rate(),
            self.skipped
        );
        crate::outln!("every reply was the frames admission predicts unless listed below");
        crate::outln!("outcomes:");
        for (name, n) in self.tally.outcomes() {
            crate::outln!("  {name:<18} {n:>10}");
        }
        crate::outln!(
            "valid requests checked: {} of {} answered with the right logits",
            self.probes.1,
            self.probes.0
        );
        let [start, after, before, over] = self.rss_kib;
        crate::outln!(
            "edge RSS: {start} KiB at start, {after} KiB after the cases, {before} KiB before and {over} KiB after a {} MiB frame",
            self.oversize_bytes >> 20
        );
        if self.oversize_bytes > 0 {
            crate::outln!(
                "oversized frame: {}; a fresh connection {}; the peer that sent it {} after reconnecting",
                if self.oversize_dropped {
                    "dropped (no reply)"
                } else {
                    "ANSWERED"
                },
                if self.fresh_answered {
                    "was served"
                } else {
                    "was NOT served"
                },
                if self.oversize_peer_answered {
                    "was served"
                } else {
                    "was not served"
                },
            );
        }
        crate::outln!(
            "edge alive at the end: {}; its counters {} the predicted outcomes",
            self.alive,
            if self
                .failures
                .iter()
                .any(|f| f.starts_with("the edge counted"))
            {
                "do NOT match"
            } else {
                "match"
            }
        );
        crate::outln!("failures: {}", self.failures.len());
        for f in self.failures.iter().take(50) {
            crate::outln!("  {f}");
        }
    }
}
