//! What runs slices of the exit chains (DESIGN.md §10): the generated engine — the
//! `kernels` crate's SIMD kernels on weights packed once, in a fixed per-thread arena — or
//! burn's forward, kept as the reference and for comparison (`--engine burn`).
//!
//! The deployed binaries run the engine the plan's macro generated (every layer a kernel
//! call with its shapes as constants); before there is a plan, the toolchain runs the same
//! kernels through [`PackedNetwork::interpret`], which reads the shapes from the layer table.

pub mod burn;
pub mod packed;

use std::ops::Range;

use crate::model::ModelError;
use crate::model::layers::{ExitSpec, LayerKind, LayerSpec, LayerTable};

pub use self::burn::BurnEngine;
pub use self::packed::{Arena, Packed, PackedNetwork};
pub use ::kernels::{self, Isa};

/// An intermediate tensor on the host: a batch of feature maps `[N, C, H, W]` or of vectors
/// `[N, F]`, values row-major (C, H, W order within a sample) — what crosses the wire.
#[derive(Debug, Clone, PartialEq)]
pub struct Activation {
    dims: Vec<usize>,
    values: Vec<f32>,
}

impl Activation {
    /// An activation of shape `dims` (batch first; rank 2 or 4) holding `values`.
    pub fn from_values(values: Vec<f32>, dims: &[usize]) -> Result<Self, ModelError> {
        let expected: usize = dims.iter().product();
        if values.len() != expected {
            return Err(ModelError::Shape(format!(
                "{} values do not fill shape {dims:?} ({expected} values)",
                values.len()
            )));
        }
        if !matches!(dims.len(), 2 | 4) {
            return Err(ModelError::Shape(format!(
                "activations have rank 2 or 4, not {} ({dims:?})",
                dims.len()
            )));
        }
        Ok(Self {
            dims: dims.to_vec(),
            values,
        })
    }

    /// Shape including the batch dimension.
    pub fn dims(&self) -> &[usize] {
        &self.dims
    }

    /// The values, row-major.
    pub fn values(&self) -> &[f32] {
        &self.values
    }

    /// The values, row-major (a copy).
    pub fn to_values(&self) -> Vec<f32> {
        self.values.clone()
    }

    /// The values, row-major.
    pub fn into_values(self) -> Vec<f32> {
        self.values
    }

    /// A batch of `batch` copies of this activation's samples.
    pub fn repeated(&self, batch: usize) -> Self {
        let mut dims = self.dims.clone();
        dims[0] *= batch;
        Self {
            dims,
            values: self.values.repeat(batch),
        }
    }
}

/// Which engine runs the layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum EngineKind {
    /// The generated engine: the `kernels` crate on packed weights.
    #[default]
    Generated,
    /// burn-flex (the reference).
    Burn,
}

impl EngineKind {
    /// Every engine.
    pub const ALL: [EngineKind; 2] = [Self::Generated, Self::Burn];

    /// The name on the command line and in profiles, models and plans.
    pub fn name(self) -> &'static str {
        match self {
            Self::Generated => "generated",
            Self::Burn => "burn",
        }
    }
}

impl std::str::FromStr for EngineKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|e| e.name() == s)
            .ok_or_else(|| format!("unknown engine `{s}`: expected generated or burn"))
    }
}

impl std::fmt::Display for EngineKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Called after each layer of a run with the layer's index (a fused convolution and ReLU
/// report both, the ReLU's at no cost); an error stops the run (a cancelled run returns
/// [`ModelError::Cancelled`] this way). Timing per layer and cancellation rest on it. With a
/// batch of several samples the generated engine runs them one after the other and calls
/// it after each layer of each sample, burn after each layer of the whole batch: time
/// layers on batches of one.
pub type AfterLayer<'a> = &'a mut dyn FnMut(usize) -> Result<(), ModelError>;

/// Runs slices `[a, b)` of the exit chains of B-AlexNet.
pub trait Engine: Send + Sync + std::fmt::Debug {
    /// Which engine this is.
    fn kind(&self) -> EngineKind;

    /// A word on how it runs (the instruction set, the backend), for reports.
    fn describe(&self) -> String;

    /// The layer table it runs.
    fn table(&self) -> &LayerTable;

    /// Runs layers `range` of exit `exit`'s chain on `x`, the activation entering layer
    /// `range.start`, calling `after_layer` after each layer. Checks the exit, the slice
    /// and `x`'s shape first.
    fn run(
        &self,
        exit: usize,
        range: Range<usize>,
        x: &Activation,
        after_layer: AfterLayer<'_>,
    ) -> Result<Activation, ModelError>;

    /// Samples per second through exit `exit`'s whole chain at each batch size: `input`
    /// (one sample) repeated, the median of `repeats` timed runs after a warm-up (fewer
    /// runs for batches over 16, at least 5).
    fn throughput(
        &self,
        exit: usize,
        input: &Activation,
        batches: &[u32],
        repeats: u32,
    ) -> Result<Vec<f64>, ModelError> {
        let n = self.exit_len(exit)?;
        batches
            .iter()
            .map(|&b| {
                let x = input.repeated(b as usize);
                self.forward_slice(exit, 0..n, &x)?;
                let runs = (repeats * 16 / b.max(16)).max(5) as usize;
                let ms = crate::slowdown::Repeats::exactly(runs).median_ms(|| {
                    let start = std::time::Instant::now();
                    let _ = std::hint::black_box(self.forward_slice(exit, 0..n, &x));
                    start.elapsed()
                });
                Ok(f64::from(b) / ms * 1e3)
            })
            .collect()
    }

    /// [`Engine::run`] without a callback.
    fn forward_slice(
        &self,
        exit: usize,
        range: Range<usize>,
        x: &Activation,
    ) -> Result<Activation, ModelError> {
        self.run(exit, range, x, &mut |_| Ok(()))
    }

    /// Number of layers of exit `exit`'s chain.
    fn exit_len(&self, exit: usize) -> Result<usize, ModelError> {
        self.table()
            .exit(exit)
            .map(ExitSpec::len)
            .ok_or(ModelError::UnknownExit(exit))
    }

    /// Runs every exit a few times on a blank image, so that the first real request does
    /// not pay for allocation, page faults and thread start-up.
    fn warm_up(&self) {
        let input = &self.table().input;
        let mut dims = vec![1];
        dims.extend(input);
        let blank = Activation::from_values(vec![0.0; input.iter().product()], &dims)
            .expect("the table's input shape");
        for _ in 0..3 {
            for spec in &self.table().exits {
                let _ = self.forward_slice(spec.exit, 0..spec.len(), &blank);
            }
        }
    }
}

/// Whether layer `i` of a slice `layers` is a ReLU the generated engine fuses into the layer
/// before it (a convolution or fully connected layer of the same slice), so that it costs
/// nothing of its own; a ReLU that starts a slice runs alone. The engine and the latency
/// models both follow this rule.
pub fn fused_relu(layers: &[LayerSpec], i: usize) -> bool {
    i > 0
        && layers[i].kind == LayerKind::Relu
        && matches!(layers[i - 1].kind, LayerKind::Conv | LayerKind::Fc)
}

/// Checks a slice request against the table: the exit exists, `range` lies in its chain,
/// and `dims` is `[N, …the shape entering layer range.start]` with N ≥ 1.
pub fn check_slice<'t>(
    table: &'t LayerTable,
    exit: usize,
    range: &Range<usize>,
    dims: &[usize],
) -> Result<&'t ExitSpec, ModelError> {
    let spec = table.exit(exit).ok_or(ModelError::UnknownExit(exit))?;
    if range.start > range.end || range.end > spec.len() {
        return Err(ModelError::BadSlice {
            exit,
            start: range.start,
            end: range.end,
            len: spec.len(),
        });
    }
    let expected = spec.boundary_shape(range.start);
    if dims.len() < 2 || dims[1..] != *expected || dims[0] == 0 {
        return Err(ModelError::Shape(format!(
            "exit {exit} layer {} takes [N, {}], got {dims:?}",
            range.start,
            expected
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(spec)
}
