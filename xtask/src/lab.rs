//! A small co-inference lab: one `edgent-edge`, and one `edgent-device eval` process per
//! measured point, over a tc-shaped link between two network namespaces (root) or over
//! unshaped loopback. `cargo xtask experiments` and the pipeline's demonstration use it.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use indicatif::ProgressBar;
use runtime::plan::Policy;
use serde_json::Value;
use toolchain::shaping::{ShapedLink, unavailable};

/// The two generated binaries a lab runs.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// `edgent-edge`.
    pub edge: PathBuf,
    /// `edgent-device`.
    pub device: PathBuf,
}

impl Binaries {
    /// Builds `edgent-edge` and `edgent-device` with `plan` compiled in (through
    /// `EDGENT_PLAN`; the committed `generated/plan.json` when `None`) and returns them where
    /// cargo leaves them, beside this xtask binary. The same features as every other
    /// command: no second build of burn.
    pub fn build(plan: Option<&Path>) -> anyhow::Result<Self> {
        let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cargo.args([
            "build",
            "--release",
            "--locked",
            "-p",
            "generated",
            "--bins",
        ]);
        match plan {
            Some(plan) => {
                let plan = plan
                    .canonicalize()
                    .with_context(|| format!("no plan file {}", plan.display()))?;
                cargo.env("EDGENT_PLAN", plan)
            }
            None => cargo.env_remove("EDGENT_PLAN"),
        };
        let status = cargo.status().context("cannot run cargo")?;
        ensure!(status.success(), "building the generated binaries failed");
        let dir = std::env::current_exe()?
            .parent()
            .context("no target directory")?
            .to_path_buf();
        let bins = Self {
            edge: dir.join("edgent-edge"),
            device: dir.join("edgent-device"),
        };
        ensure!(
            bins.edge.exists() && bins.device.exists(),
            "no edgent binaries in {}",
            dir.display()
        );
        Ok(bins)
    }

    /// Copies both binaries into `dir` (through a temporary name each: a binary that is
    /// running cannot be overwritten in place).
    pub fn copy_to(&self, dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let copy = |from: &Path| -> anyhow::Result<PathBuf> {
            let name = from.file_name().context("a binary has no file name")?;
            let to = dir.join(name);
            let tmp = dir.join(format!(".{}.new", name.to_string_lossy()));
            std::fs::copy(from, &tmp)
                .with_context(|| format!("cannot copy {} to {}", from.display(), dir.display()))?;
            std::fs::rename(&tmp, &to)?;
            Ok(to)
        };
        Ok(Self {
            edge: copy(&self.edge)?,
            device: copy(&self.device)?,
        })
    }
}

/// A child process that is stopped (killed and reaped) when dropped, unless it has ended,
/// and by a signal to this program meanwhile.
pub(crate) struct Reaped(pub(crate) Child);

impl Reaped {
    pub(crate) fn new(child: Child) -> Self {
        toolchain::shaping::stop_on_signal(child.id());
        Self(child)
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
        toolchain::shaping::forget_on_signal(self.0.id());
    }
}

/// A link rate in words: `50 kbit/s`, `1.5 Mbit/s`.
pub fn rate_in_words(bps: f64) -> String {
    if bps >= 1e6 {
        format!("{} Mbit/s", bps / 1e6)
    } else {
        format!("{:.0} kbit/s", bps / 1e3)
    }
}

/// Which side of the link a process runs on.
#[derive(Debug, Clone, Copy)]
enum Side {
    Device,
    Edge,
}

/// A command running `program` on `side` of `link` (as it is on loopback).
fn in_namespace(link: Option<&ShapedLink>, side: Side, program: &Path) -> Command {
    match link {
        Some(link) => {
            let ns = match side {
                Side::Device => &link.device_ns,
                Side::Edge => &link.edge_ns,
            };
            let mut command = Command::new("ip");
            command.args(["netns", "exec", ns]).arg(program);
            command
        }
        None => Command::new(program),
    }
}

/// Runs the measurements: one edge, one link, one device process per point.
pub struct Lab {
    link: Option<ShapedLink>,
    edge: Child,
    bins: Binaries,
    endpoint: String,
    keys: PathBuf,
    traces: PathBuf,
    images: usize,
    bar: ProgressBar,
}

/// One measured point: the device's trace lines.
pub struct Point {
    /// One JSON object per request, as `edgent-device eval --trace` writes them.
    pub lines: Vec<Value>,
}

impl Point {
    /// The median of `f` over the requests that have it (NaN when none does).
    pub fn median(&self, f: impl Fn(&Value) -> Option<f64>) -> f64 {
        let mut v: Vec<f64> = self.lines.iter().filter_map(f).collect();
        if v.is_empty() {
            return f64::NAN;
        }
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    }

    /// Median end-to-end latency, ms.
    pub fn total_ms(&self) -> f64 {
        self.median(|l| l["total_ms"].as_f64())
    }

    /// Median predicted latency of the chosen plans, ms.
    pub fn predicted_ms(&self) -> f64 {
        self.median(|l| l["plan"]["predicted_ms"].as_f64())
    }

    /// The most frequent (exit, partition) chosen.
    pub fn choice(&self) -> (usize, usize) {
        let mut counts: BTreeMap<(usize, usize), usize> = BTreeMap::new();
        for l in &self.lines {
            let key = (
                l["plan"]["exit"].as_u64().unwrap_or(0) as usize,
                l["plan"]["partition"].as_u64().unwrap_or(0) as usize,
            );
            *counts.entry(key).or_default() += 1;
        }
        counts
            .into_iter()
            .max_by_key(|(_, n)| *n)
            .map_or((0, 0), |(k, _)| k)
    }

    /// The encoding most often sent for the most frequent choice, as ` (q8+zstd)`; empty
    /// for device-only or traces without encodings.
    pub fn encoding_note(&self) -> String {
        let (exit, partition) = self.choice();
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for l in &self.lines {
            let plan = &l["plan"];
            if plan["exit"].as_u64() == Some(exit as u64)
                && plan["partition"].as_u64() == Some(partition as u64)
                && let Some(e) = plan["encoding"].as_str()
            {
                *counts.entry(e).or_default() += 1;
            }
        }
        counts
            .into_iter()
            .max_by_key(|(_, n)| *n)
            .map_or(String::new(), |(e, _)| format!(" ({e})"))
    }

    /// The fraction of requests for which `f` holds.
    pub fn rate(&self, f: impl Fn(&Value) -> bool) -> f64 {
        self.lines.iter().filter(|l| f(l)).count() as f64 / self.lines.len().max(1) as f64
    }

    /// Accuracy counting a missed deadline as wrong (the paper's scoring), on the sampled
    /// images.
    pub fn accuracy_in_time(&self) -> f64 {
        self.rate(|l| l["correct"] == true && l["met"] == true)
    }

    /// The same with each answer scored by its exit's test-set accuracy instead of its
    /// one image: far less noisy on a few dozen images.
    pub fn expected_accuracy(&self, accuracy: &[f64]) -> f64 {
        let total: f64 = self
            .lines
            .iter()
            .filter(|l| l["met"] == true)
            .map(|l| accuracy[l["exit"].as_u64().unwrap_or(1) as usize - 1])
            .fold(0.0, |a, b| a + b); // not `sum`: that gives −0.0 for no answers in time
        total / self.lines.len().max(1) as f64
    }

    /// The fraction of requests answered within the deadline.
    pub fn hit_rate(&self) -> f64 {
        self.rate(|l| l["met"] == true)
    }

    /// Hit rate over requests whose plan was feasible.
    pub fn feasible_hit_rate(&self) -> Option<f64> {
        let feasible: Vec<&Value> = self
            .lines
            .iter()
            .filter(|l| l["plan"]["feasible"] == true)
            .collect();
        (!feasible.is_empty()).then(|| {
            feasible.iter().filter(|l| l["met"] == true).count() as f64 / feasible.len() as f64
        })
    }
}

impl Lab {
    /// Starts the edge (CurveZMQ keys made under `out/keys`) and keeps device traces under
    /// `out/traces`. `shaped` asks for network namespaces and tc (root); without it the lab
    /// runs on unshaped loopback and each device plans for the stated rate. `edge_args` go
    /// to `edgent-edge serve` as they are (e.g. `--engine burn --backend wgpu`).
    pub fn start(
        name: &str,
        out: &Path,
        bins: Binaries,
        images: usize,
        bar: ProgressBar,
        shaped: bool,
        edge_args: &[String],
    ) -> anyhow::Result<Self> {
        let traces = out.join("traces");
        std::fs::create_dir_all(&traces)
            .with_context(|| format!("cannot create {}", traces.display()))?;
        let keys = out.join("keys");
        let _ = std::fs::remove_dir_all(&keys);
        for name in ["edge", "device"] {
            let status = Command::new(&bins.edge)
                .args(["keygen", "--name", name, "--out"])
                .arg(&keys)
                .stdout(Stdio::null())
                .status()?;
            ensure!(status.success(), "keygen failed");
        }
        std::fs::copy(keys.join("device.pub"), keys.join("allow.pub"))?;
        toolchain::shaping::remove_on_signal().map_err(anyhow::Error::msg)?;
        let (link, endpoint) = if shaped {
            if let Some(reason) = unavailable() {
                bail!("shaped links are not available: {reason}");
            }
            let subnet = if name == "edgent-exp" { 9 } else { 10 };
            let link = ShapedLink::new(name, subnet).map_err(anyhow::Error::msg)?;
            let endpoint = format!("tcp://{}:5555", link.edge_ip);
            (Some(link), endpoint)
        } else {
            let port = std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port();
            (None, format!("tcp://127.0.0.1:{port}"))
        };
        let mut edge = in_namespace(link.as_ref(), Side::Edge, &bins.edge)
            .args(["serve", "--bind", &endpoint, "--key"])
            .arg(keys.join("edge.key"))
            .arg("--allow")
            .arg(keys.join("allow.pub"))
            .args(edge_args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot start edgent-edge")?;
        // A signal stops the edge too (on a shaped link, so does removing its namespace).
        toolchain::shaping::stop_on_signal(edge.id());
        let stderr = edge.stderr.take().expect("piped");
        let mut lines = BufReader::new(stderr).lines();
        let mut said = Vec::new();
        loop {
            match lines.next() {
                Some(Ok(line)) if line.contains("serving plan") => break,
                Some(Ok(line)) => said.push(line),
                _ => {
                    drop(Reaped(edge)); // forgets it for signals too
                    bail!("edgent-edge did not start: {}", said.join("\n"));
                }
            }
        }
        // Keep draining the edge's log so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Ok(Self {
            link,
            edge,
            bins,
            endpoint,
            keys,
            traces,
            images,
            bar,
        })
    }

    /// Sets the link's rate (nothing to set on loopback).
    fn shape(&self, rate_bps: f64) -> anyhow::Result<()> {
        match &self.link {
            Some(link) => link.shape(rate_bps).map_err(anyhow::Error::msg),
            None => Ok(()),
        }
    }

    /// Runs the device over the test set at `rate_bps` (or a schedule of rates) and
    /// returns its trace.
    pub fn run(
        &self,
        name: &str,
        rate_bps: f64,
        deadline_ms: f64,
        policy: Policy,
        extra: &[String],
        schedule: &[(f64, f64)],
    ) -> anyhow::Result<Point> {
        // A schedule runs for its duration (in `extra`), over as many images as that takes.
        let limit = if schedule.is_empty() {
            self.images
        } else {
            10_000
        };
        self.shape(rate_bps)?;
        self.bar.set_message(name.to_string());
        let trace = self.traces.join(format!("{name}.jsonl"));
        let log = self.traces.join(format!("{name}.log"));
        let mut command = in_namespace(self.link.as_ref(), Side::Device, &self.bins.device);
        command
            .args(["eval", "--json", "--edge", &self.endpoint])
            .args(["--deadline", &format!("{deadline_ms}ms")])
            .args(["--limit", &limit.to_string()])
            .args(["--policy", policy.name()])
            .arg("--trace")
            .arg(&trace)
            .arg("--key")
            .arg(self.keys.join("device.key"))
            .arg("--server-key")
            .arg(self.keys.join("edge.pub"))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).context("cannot create the device's log")?);
        if self.link.is_none() {
            // Unshaped loopback: the device plans for the stated rate instead of measuring.
            command.args(["--bandwidth", &format!("{}bit", rate_bps.round())]);
        }
        if policy != Policy::Edgent {
            // The paper's baselines: no local fallback, no safety margin.
            command.args(["--no-fallback", "--no-margin"]);
        }
        let mut child = Reaped::new(command.spawn().context("cannot start edgent-device")?);
        // The schedule's clock starts with the device's first answer (after it loaded
        // the model and probed the link), as the trace's `t_s` does.
        let mut started: Option<Instant> = None;
        let mut next = 0;
        let status = loop {
            if let Some(status) = child.0.try_wait()? {
                break status;
            }
            if started.is_none()
                && !schedule.is_empty()
                && std::fs::metadata(&trace).is_ok_and(|m| m.len() > 0)
            {
                started = Some(Instant::now());
            }
            if let Some(&(at, rate)) = schedule.get(next)
                && started.is_some_and(|t| t.elapsed().as_secs_f64() >= at)
            {
                self.shape(rate)?;
                next += 1;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if !status.success() {
            let said = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = said.lines().rev().take(5).collect();
            bail!(
                "edgent-device failed on {name} ({status}); its last words ({}):\n{}",
                log.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        let text = std::fs::read_to_string(&trace)
            .with_context(|| format!("no trace {}", trace.display()))?;
        let lines = text
            .lines()
            .map(serde_json::from_str)
            .collect::<Result<Vec<Value>, _>>()?;
        ensure!(!lines.is_empty(), "{name}: the device answered nothing");
        self.bar.inc(1);
        Ok(Point { lines })
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let pid = self.edge.id();
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        let _ = self.edge.wait();
        toolchain::shaping::forget_on_signal(pid);
    }
}
