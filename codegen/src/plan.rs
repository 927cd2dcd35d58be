//! The plan file (`generated/plan.json`): everything the device and edge binaries need to
//! decide and to run, fixed at build time. Written by `cargo xtask generate`, read by the
//! `edgent_plan!` proc macro.
//!
//! This crate has no burn dependency on purpose: it is compiled into a proc macro.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Version of the plan schema; the macro refuses other versions.
pub const PLAN_VERSION: u32 = 2;

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
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PlanPartition {
    /// Predicted device time of `[0, p)`, ms.
    pub device_ms: f64,
    /// Predicted edge time of `[p, N)`, ms.
    pub edge_ms: f64,
    /// Bytes sent to the edge: the raw `u8` image at `p = 0`, the `f32` activation entering
    /// layer `p` for `0 < p < N`, nothing at `p = N`.
    pub bytes: u64,
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
                !(p.device_ms.is_finite()
                    && p.edge_ms.is_finite()
                    && p.device_ms >= 0.0
                    && p.edge_ms >= 0.0)
            });
            if bad_time {
                problems.push(format!(
                    "exit {e}: a partition has a negative or non-finite time"
                ));
            }
        }
        problems
    }
}
