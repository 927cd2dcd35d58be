//! The plan file (`generated/plan.json`): everything the device and edge binaries need to
//! decide and to run, fixed at build time. Written by `cargo xtask generate`, read by the
//! `edgent_plan!` proc macro.
//!
//! This crate has no burn dependency on purpose: it is compiled into a proc macro.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Version of the plan schema; the macro refuses other versions.
pub const PLAN_VERSION: u32 = 4;

/// A layer's hyper-parameters, written as `runtime::LayerParams` serialises them: with the
/// shapes, all the generated engine needs to call the layer's kernel with constants.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PlanParams {
    /// Convolution, stride 1.
    Conv {
        /// Input channels.
        in_channels: usize,
        /// Output channels.
        out_channels: usize,
        /// Kernel side.
        kernel: usize,
        /// Zero padding on each side.
        padding: usize,
    },
    /// Max-pooling, ceil mode.
    MaxPool {
        /// Window side.
        kernel: usize,
        /// Stride.
        stride: usize,
    },
    /// Local response normalisation (Chainer's α).
    Lrn {
        /// Channels in the window.
        size: usize,
        /// α.
        alpha: f64,
        /// β.
        beta: f64,
        /// k.
        k: f64,
    },
    /// Dropout (the identity at inference).
    Dropout {
        /// Drop probability in training.
        prob: f64,
    },
    /// Fully connected.
    Fc {
        /// Input features.
        in_features: usize,
        /// Output features.
        out_features: usize,
    },
    /// No parameters (ReLU).
    None,
}

/// One layer of an exit's chain with its predicted time on each side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanLayer {
    /// Layer name (`conv1`, `exit2.fc`, …), the prefix of its weights.
    pub name: String,
    /// Kind (`conv`, `relu`, `pool`, `lrn`, `dropout`, `fc`).
    pub kind: String,
    /// Input shape per sample.
    pub input: Vec<usize>,
    /// Output shape per sample.
    pub output: Vec<usize>,
    /// Hyper-parameters.
    pub params: PlanParams,
    /// Predicted device time, ms.
    pub device_ms: f64,
    /// Predicted edge time, ms.
    pub edge_ms: f64,
}

/// One partition point `p` of an exit: the device runs `[0, p)`, the edge `[p, N)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanPartition {
    /// Predicted device time of `[0, p)`, ms.
    pub device_ms: f64,
    /// Predicted edge time of `[p, N)`, ms.
    pub edge_ms: f64,
    /// Predicted edge time each further request adds to a batch of `[p, N)`, ms: a batch
    /// of `b` takes `edge_ms + (b − 1)·edge_ms_per_image` (DESIGN.md §11).
    pub edge_ms_per_image: f64,
    /// Bytes sent to the edge: the raw `u8` image at `p = 0`, the `f32` activation entering
    /// layer `p` for `0 < p < N`, nothing at `p = N`.
    pub bytes: u64,
    /// The encodings the tensor at `p` can be sent in, measured (none at `p = N`; none in
    /// a plan made without `cargo xtask encodings`: then only the paper's raw image and
    /// `f32` activations, at `bytes`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub encodings: Vec<PlanEncoding>,
}

/// One encoding of the tensor at a partition, measured over the test set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanEncoding {
    /// Its name: `u8` or `u8+zstd` at `p = 0`; `f32`, `f16`, `q8` or `q8c`, each optionally
    /// followed by `+zstd`, after (`runtime::wire::encoding::Encoding`).
    pub encoding: String,
    /// Median bytes on the wire over the test images: what the planner charges.
    pub bytes_median: u64,
    /// 95th percentile of the bytes (for reports: the planner charges the median, so that
    /// its predictions are typical; the device's fallback covers the images that send more).
    pub bytes_p95: u64,
    /// Predicted device time of encoding, ms (at the device's slowdown).
    pub encode_ms: f64,
    /// Predicted edge time of decoding, ms.
    pub decode_ms: f64,
    /// Test accuracy of the exit with the tensor at `p` sent this way, 0 to 1.
    pub accuracy: f64,
}

/// The kinds of values an encoding name may start with, and whether each is exact.
pub const VALUES: [(&str, bool); 7] = [
    ("u8", true),
    ("f32", true),
    ("f16", false),
    ("q8", false),
    ("q8c", false),
    ("q4", false),
    ("q4c", false),
];

/// Splits an encoding name into its values and whether zstd follows; `None` for a name
/// that is not one.
pub fn parse_encoding(name: &str) -> Option<(&str, bool)> {
    let (values, zstd) = match name.strip_suffix("+zstd") {
        Some(values) => (values, true),
        None => (name, false),
    };
    VALUES
        .iter()
        .any(|(v, _)| *v == values)
        .then_some((values, zstd))
}

/// A route of an exit as the planner sees it: a partition and an encoding (none when
/// device-only), and its costs with the encoding's.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanRoute {
    /// Partition point.
    pub partition: usize,
    /// Encoding name; `None` when device-only.
    pub encoding: Option<String>,
    /// Device time: layers `[0, p)` and encoding, ms.
    pub device_ms: f64,
    /// Edge time: decoding and layers `[p, N)`, ms.
    pub edge_ms: f64,
    /// Edge time each further request of a batch adds: its decoding and its share of the
    /// layers, ms.
    pub edge_ms_per_image: f64,
    /// Bytes charged (the median).
    pub bytes: u64,
}

/// The routes of an exit with one accuracy (`runtime::plan::Family`): the exact ones
/// (`lossy` `None`) or those sending one lossy kind of values.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanFamily {
    /// The lossy values (`f16`, `q8`, `q8c`), or `None` for the exact family.
    pub lossy: Option<String>,
    /// The exit's accuracy through these routes: for a lossy family the worst measured
    /// over its routes, capped at the exact accuracy (rounding cannot make a model more
    /// accurate; a measured gain is noise of the test set).
    pub accuracy: f64,
    /// The routes, by partition then encoding.
    pub routes: Vec<PlanRoute>,
}

impl PlanExit {
    /// The families of routes Edgent chooses from: the exact family (device-only, every
    /// exact encoding of every partition, or the paper's routes where nothing was
    /// measured), then one family per lossy kind of values that was measured.
    pub fn families(&self) -> Vec<PlanFamily> {
        let n = self.partitions.len().saturating_sub(1);
        let mut exact = Vec::new();
        let mut lossy: Vec<(String, f64, Vec<PlanRoute>)> = Vec::new();
        for (p, partition) in self.partitions.iter().enumerate() {
            if p == n {
                exact.push(PlanRoute {
                    partition: p,
                    encoding: None,
                    device_ms: partition.device_ms,
                    edge_ms: partition.edge_ms,
                    edge_ms_per_image: partition.edge_ms_per_image,
                    bytes: 0,
                });
                continue;
            }
            if partition.encodings.is_empty() {
                exact.push(PlanRoute {
                    partition: p,
                    encoding: Some(if p == 0 { "u8" } else { "f32" }.to_string()),
                    device_ms: partition.device_ms,
                    edge_ms: partition.edge_ms,
                    edge_ms_per_image: partition.edge_ms_per_image,
                    bytes: partition.bytes,
                });
            }
            for e in &partition.encodings {
                let Some((values, _)) = parse_encoding(&e.encoding) else {
                    continue;
                };
                let route = PlanRoute {
                    partition: p,
                    encoding: Some(e.encoding.clone()),
                    device_ms: partition.device_ms + e.encode_ms,
                    edge_ms: partition.edge_ms + e.decode_ms,
                    edge_ms_per_image: partition.edge_ms_per_image + e.decode_ms,
                    bytes: e.bytes_median,
                };
                if VALUES.iter().any(|(v, exact)| *v == values && *exact) {
                    exact.push(route);
                } else if let Some(family) = lossy.iter_mut().find(|f| f.0 == values) {
                    family.1 = family.1.min(e.accuracy);
                    family.2.push(route);
                } else {
                    lossy.push((values.to_string(), e.accuracy, vec![route]));
                }
            }
        }
        let mut families = vec![PlanFamily {
            lossy: None,
            accuracy: self.accuracy,
            routes: exact,
        }];
        families.extend(
            lossy
                .into_iter()
                .map(|(values, accuracy, routes)| PlanFamily {
                    lossy: Some(values),
                    accuracy: accuracy.min(self.accuracy),
                    routes,
                }),
        );
        families
    }
}

/// One exit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanExit {
    /// Exit number, 1 to 5.
    pub exit: usize,
    /// Test accuracy of the exit, 0 to 1.
    pub accuracy: f64,
    /// The chain's layers `L_1..L_N`.
    pub layers: Vec<PlanLayer>,
    /// `partitions[p]` for `p = 0..=N`.
    pub partitions: Vec<PlanPartition>,
}

/// The whole plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Schema version, [`PLAN_VERSION`].
    pub version: u32,
    /// SHA-256 (hex) of the plan with this field empty: device and edge refuse to talk
    /// across different plans.
    pub digest: String,
    /// Data set the model was trained on.
    pub dataset: String,
    /// Input shape per sample `[C, H, W]` (the device receives `u8` pixels).
    pub input: Vec<usize>,
    /// Number of classes.
    pub classes: usize,
    /// Per-channel normalisation of `u8` pixels: `(x / 255 − mean) / std`.
    pub normalization_mean: Vec<f64>,
    /// See `normalization_mean`.
    pub normalization_std: Vec<f64>,
    /// Weights file, relative to the plan file.
    pub weights_file: String,
    /// Digest of the weights (see `runtime::model::weights`).
    pub weights_digest: String,
    /// Where the latency models came from (e.g. `paper`, or the profiled backends).
    pub latency_source: String,
    /// Emulated device slowdown the device latency models describe.
    pub device_slowdown: f64,
    /// CPU threads the device's layers run on, as its latency models were profiled
    /// (0: one per core). Absent, and so outside the digest, when 0: plans made before the
    /// count was recorded keep their digest and run on every core, as they were profiled.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub device_threads: usize,
    /// CPU threads the edge's layers run on, as its latency models were profiled.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub edge_threads: usize,
    /// The engine the device's latency models were profiled on (`generated` or `burn`):
    /// the one `edgent-device` runs by default.
    pub device_engine: String,
    /// The engine the edge's latency models were profiled on.
    pub edge_engine: String,
    /// The exits, 1 to 5.
    pub exits: Vec<PlanExit>,
}

/// Whether a count is 0 (left out of the plan file).
fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Plan {
    /// The digest of the plan's content (every field but `digest`).
    pub fn compute_digest(&self) -> String {
        let mut copy = self.clone();
        copy.digest = String::new();
        let text = serde_json::to_string(&copy).expect("plain data serialises");
        Sha256::digest(text.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Sets `digest` from the content.
    pub fn seal(mut self) -> Self {
        self.digest = self.compute_digest();
        self
    }

    /// Checks the plan is self-consistent; returns every problem found.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.version != PLAN_VERSION {
            problems.push(format!(
                "plan schema version {} is not {PLAN_VERSION}: run `cargo xtask generate`",
                self.version
            ));
            return problems;
        }
        if self.digest != self.compute_digest() {
            problems.push("the plan's digest does not match its content: it was edited by hand; run `cargo xtask generate`".into());
        }
        if self.exits.is_empty() {
            problems.push("the plan has no exits".into());
        }
        for (role, engine) in [("device", &self.device_engine), ("edge", &self.edge_engine)] {
            if !matches!(engine.as_str(), "generated" | "burn") {
                problems.push(format!(
                    "the {role}'s engine `{engine}` is not `generated` or `burn`"
                ));
            }
        }
        if self.input.len() != 3 {
            problems.push(format!(
                "the plan's input {:?} is not a shape [C, H, W]",
                self.input
            ));
        }
        let channels = self.input.first().copied().unwrap_or(0);
        if self.normalization_mean.len() != channels || self.normalization_std.len() != channels {
            problems.push(format!(
                "{} normalisation means and {} standard deviations for {channels} input channels",
                self.normalization_mean.len(),
                self.normalization_std.len()
            ));
        }
        if self
            .normalization_std
            .iter()
            .any(|s| !(s.is_finite() && *s > 0.0))
        {
            problems.push("a normalisation standard deviation is not positive".into());
        }
        for (i, exit) in self.exits.iter().enumerate() {
            let e = exit.exit;
            if e != i + 1 {
                problems.push(format!("exit {} is listed in position {}", e, i + 1));
            }
            if exit.layers.is_empty() {
                problems.push(format!("exit {e} has no layers"));
                continue;
            }
            if exit.layers[0].input != self.input {
                problems.push(format!(
                    "exit {e}: first layer takes {:?}, the plan's input is {:?}",
                    exit.layers[0].input, self.input
                ));
            }
            for pair in exit.layers.windows(2) {
                if pair[0].output != pair[1].input {
                    problems.push(format!(
                        "exit {e}: layer {} outputs {:?} but layer {} takes {:?}",
                        pair[0].name, pair[0].output, pair[1].name, pair[1].input
                    ));
                }
            }
            if exit.layers.last().map(|l| l.output.as_slice()) != Some(&[self.classes][..]) {
                problems.push(format!(
                    "exit {e}: the last layer does not output {} logits",
                    self.classes
                ));
            }
            if exit.partitions.len() != exit.layers.len() + 1 {
                problems.push(format!(
                    "exit {e}: {} partitions for {} layers (expected {})",
                    exit.partitions.len(),
                    exit.layers.len(),
                    exit.layers.len() + 1
                ));
            }
            if !(0.0..=1.0).contains(&exit.accuracy) {
                problems.push(format!(
                    "exit {e}: accuracy {} is not in 0..=1",
                    exit.accuracy
                ));
            }
            let bad_time = exit.partitions.iter().any(|p| {
                [p.device_ms, p.edge_ms, p.edge_ms_per_image]
                    .iter()
                    .any(|t| !(t.is_finite() && *t >= 0.0))
            });
            if bad_time {
                problems.push(format!(
                    "exit {e}: a partition has a negative or non-finite time"
                ));
            }
            let n = exit.partitions.len().saturating_sub(1);
            for (p, partition) in exit.partitions.iter().enumerate() {
                if p == n && !partition.encodings.is_empty() {
                    problems.push(format!(
                        "exit {e}: the device-only partition {p} lists encodings, but sends nothing"
                    ));
                }
                for enc in &partition.encodings {
                    let problem = match parse_encoding(&enc.encoding) {
                        None => Some(format!("`{}` is not an encoding", enc.encoding)),
                        Some(("u8", _)) if p != 0 => Some(format!(
                            "`{}` is the image's, not an activation's",
                            enc.encoding
                        )),
                        Some((values, _)) if p == 0 && values != "u8" => Some(format!(
                            "`{}` is an activation's, not the image's",
                            enc.encoding
                        )),
                        Some(("q8c", _))
                            if exit.layers.get(p).is_some_and(|l| l.input.len() < 2) =>
                        {
                            Some(format!(
                                "`{}` needs channels; the tensor at {p} is a vector",
                                enc.encoding
                            ))
                        }
                        _ if !(enc.encode_ms.is_finite()
                            && enc.decode_ms.is_finite()
                            && enc.encode_ms >= 0.0
                            && enc.decode_ms >= 0.0) =>
                        {
                            Some("a negative or non-finite time".into())
                        }
                        _ if !(0.0..=1.0).contains(&enc.accuracy) => {
                            Some(format!("accuracy {} is not in 0..=1", enc.accuracy))
                        }
                        _ if enc.bytes_p95 < enc.bytes_median || enc.bytes_median == 0 => {
                            Some(format!(
                                "bytes median {} and p95 {} (the p95 is at least the median, both above 0)",
                                enc.bytes_median, enc.bytes_p95
                            ))
                        }
                        _ => None,
                    };
                    if let Some(problem) = problem {
                        problems.push(format!("exit {e} partition {p}: {problem}"));
                    }
                }
            }
        }
        problems
    }
}
