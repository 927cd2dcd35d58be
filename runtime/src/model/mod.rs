//! B-AlexNet with five exits, built from the [layer table](layers), with its weights and
//! the CPU backends it runs on.
//!
//! The module holds the trunk (the chain of exit 5) and one branch per early exit. Exit `i`'s
//! chain is the first `trunk_layers` trunk layers followed by branch `i`; layer `j` of that
//! chain is therefore found without copying anything.

pub mod backend;
pub mod entropy;
pub mod layers;
pub mod weights;

use std::cell::Cell;
use std::sync::{Mutex, MutexGuard, PoisonError};

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{
    Dropout, DropoutConfig, Linear, LinearConfig, LocalResponseNorm, LocalResponseNormConfig,
    PaddingConfig2d, Relu,
};
use burn::prelude::*;

use crate::model::layers::{LayerParams, LayerSpec, LayerTable, NUM_EXITS, b_alexnet};

/// burn's random number generator is one per process: a backend's `seed` replaces it for
/// every thread, and every random tensor draws from it — a layer's initial weights (drawn
/// lazily, when a parameter is first used) and each dropout mask in training. burn 0.22
/// offers no generator of one's own for either (`Initializer` and `Dropout` take none), so
/// whoever seeds it or draws from it holds this lock meanwhile: [`Layer::init`] and
/// [`BranchyAlexNetConfig::init`] (which draw every initial weight before letting go), and a
/// training run from its seed to its last step ([`BranchyAlexNetConfig::init_lazy`]). A
/// seeded run then sees its own stream only, whatever other threads of the process create
/// meanwhile.
static BURN_RNG: Mutex<()> = Mutex::new(());

thread_local! {
    /// Whether this thread holds [`BURN_RNG`] (the lock is re-entrant per thread).
    static HOLDS_BURN_RNG: Cell<bool> = const { Cell::new(false) };
}

/// This thread's exclusive use of burn's random number generator, until dropped (see
/// [`lock_rng`]).
#[must_use = "the generator is released when the guard is dropped"]
pub struct RngGuard {
    guard: Option<MutexGuard<'static, ()>>,
}

impl Drop for RngGuard {
    fn drop(&mut self) {
        if self.guard.take().is_some() {
            HOLDS_BURN_RNG.with(|holds| holds.set(false));
        }
    }
}

/// Takes burn's process-wide random number generator for this thread: hold the guard
/// from seeding (`device.seed`) to the last random draw. Re-entrant: on a thread that
/// already holds it, the guard releases nothing.
pub fn lock_rng() -> RngGuard {
    if HOLDS_BURN_RNG.with(Cell::get) {
        return RngGuard { guard: None };
    }
    let guard = BURN_RNG.lock().unwrap_or_else(PoisonError::into_inner);
    HOLDS_BURN_RNG.with(|holds| holds.set(true));
    RngGuard { guard: Some(guard) }
}

/// An intermediate tensor on a burn device: a batch of feature maps `[N, C, H, W]` or of
/// vectors `[N, F]` (engines exchange [`crate::Activation`]s, on the host).
#[derive(Debug, Clone)]
pub enum Features {
    /// Feature maps.
    Map(Tensor<4>),
    /// Vectors (after the first FC layer), and the logits.
    Flat(Tensor<2>),
}

impl Features {
    /// Shape including the batch dimension.
    pub fn dims(&self) -> Vec<usize> {
        match self {
            Self::Map(t) => t.dims().to_vec(),
            Self::Flat(t) => t.dims().to_vec(),
        }
    }

    /// The activation as `[N, F]`, flattening feature maps in C, H, W order.
    pub fn into_flat(self) -> Tensor<2> {
        match self {
            Self::Flat(t) => t,
            Self::Map(t) => t.flatten(1, 3),
        }
    }

    /// The activation as `[N, C, H, W]` of the given per-sample shape.
    fn into_map(self, shape: &[usize]) -> Tensor<4> {
        match self {
            Self::Map(t) => t,
            Self::Flat(t) => {
                let n = t.dims()[0];
                t.reshape([n, shape[0], shape[1], shape[2]])
            }
        }
    }

    /// Builds an activation from flat `f32` values and a shape with the batch dimension.
    pub fn from_values(
        values: Vec<f32>,
        dims: &[usize],
        device: &Device,
    ) -> Result<Self, ModelError> {
        let expected: usize = dims.iter().product();
        if values.len() != expected {
            return Err(ModelError::Shape(format!(
                "{} values do not fill shape {dims:?} ({expected} values)",
                values.len()
            )));
        }
        match *dims {
            [n, c, h, w] => Ok(Self::Map(Tensor::from_data(
                TensorData::new(values, [n, c, h, w]),
                device,
            ))),
            [n, f] => Ok(Self::Flat(Tensor::from_data(
                TensorData::new(values, [n, f]),
                device,
            ))),
            _ => Err(ModelError::Shape(format!(
                "activations have rank 2 or 4, not {} ({dims:?})",
                dims.len()
            ))),
        }
    }

    /// The values in row-major order.
    pub fn to_values(&self) -> Vec<f32> {
        let data = match self {
            Self::Map(t) => t.to_data(),
            Self::Flat(t) => t.to_data(),
        };
        data.try_into_vec_as::<f32>().unwrap_or_default()
    }
}

/// Normalises `u8` pixels (`[C, H, W]`, channel-major) as the model was trained:
/// `(p / 255 − mean[c]) / std[c]`.
pub fn normalize(pixels: &[u8], mean: &[f32], std: &[f32]) -> Vec<f32> {
    let channels = mean.len().max(1);
    let plane = (pixels.len() / channels).max(1);
    pixels
        .iter()
        .enumerate()
        .map(|(i, &p)| {
            let c = (i / plane).min(channels - 1);
            (f32::from(p) / 255.0 - mean[c]) / std[c]
        })
        .collect()
}

/// Errors of model calls with caller-supplied arguments.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// No such exit.
    #[error("exit {0} does not exist: exits are 1..={NUM_EXITS}")]
    UnknownExit(usize),
    /// The slice `[a, b)` is not inside the exit's chain.
    #[error("layer slice [{start}, {end}) is not within exit {exit}'s {len} layers")]
    BadSlice {
        /// Exit.
        exit: usize,
        /// First layer.
        start: usize,
        /// One past the last layer.
        end: usize,
        /// Layers in the chain.
        len: usize,
    },
    /// A tensor has the wrong shape.
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// The run was cancelled before it finished (its answer was no longer needed).
    #[error("cancelled")]
    Cancelled,
    /// The layers produced a value that is not finite (an input near `f32`'s limits).
    #[error("{0}")]
    NonFinite(String),
}

/// One layer of the network.
#[derive(Module, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Layer {
    /// Convolution.
    Conv(Conv2d),
    /// ReLU.
    Relu(Relu),
    /// Max-pooling.
    MaxPool(MaxPool2d),
    /// Local response normalisation.
    Lrn(LocalResponseNorm),
    /// Dropout.
    Dropout(Dropout),
    /// Fully connected.
    Fc(Linear),
}

impl Layer {
    /// Creates the layer a spec describes, with fresh weights drawn from burn's generator
    /// under [`lock_rng`] (seed the device under the same lock for reproducible weights).
    pub fn init(spec: &LayerSpec, device: &Device) -> Self {
        let _rng = lock_rng();
        let layer = Self::init_lazy(spec, device);
        layer.draw_weights();
        layer
    }

    /// The layer with parameters that burn draws at their first use.
    fn init_lazy(spec: &LayerSpec, device: &Device) -> Self {
        match spec.params {
            LayerParams::Conv {
                in_channels,
                out_channels,
                kernel,
                padding,
            } => Self::Conv(
                Conv2dConfig::new([in_channels, out_channels], [kernel, kernel])
                    .with_padding(PaddingConfig2d::Explicit(
                        padding, padding, padding, padding,
                    ))
                    .init(device),
            ),
            LayerParams::MaxPool { kernel, stride } => Self::MaxPool(
                MaxPool2dConfig::new([kernel, kernel])
                    .with_strides([stride, stride])
                    .with_ceil_mode(true)
                    .init(),
            ),
            // burn divides α by the window size like PyTorch; Chainer does not.
            LayerParams::Lrn {
                size,
                alpha,
                beta,
                k,
            } => Self::Lrn(
                LocalResponseNormConfig::new(size)
                    .with_alpha(alpha * size as f64)
                    .with_beta(beta)
                    .with_k(k)
                    .init(),
            ),
            LayerParams::Dropout { prob } => Self::Dropout(DropoutConfig::new(prob).init()),
            LayerParams::Fc {
                in_features,
                out_features,
            } => Self::Fc(LinearConfig::new(in_features, out_features).init(device)),
            LayerParams::None => Self::Relu(Relu::new()),
        }
    }

    /// Draws the parameters burn initialises lazily, now, so that no draw happens later
    /// outside [`lock_rng`].
    fn draw_weights(&self) {
        match self {
            Self::Conv(conv) => {
                let _ = conv.weight.val();
                if let Some(bias) = &conv.bias {
                    let _ = bias.val();
                }
            }
            Self::Fc(linear) => {
                let _ = linear.weight.val();
                if let Some(bias) = &linear.bias {
                    let _ = bias.val();
                }
            }
            _ => {}
        }
    }

    /// Applies the layer; `input_shape` is the layer's per-sample input shape.
    pub fn forward(&self, x: Features, input_shape: &[usize]) -> Features {
        match self {
            Self::Conv(conv) => Features::Map(conv.forward(x.into_map(input_shape))),
            Self::MaxPool(pool) => Features::Map(pool.forward(x.into_map(input_shape))),
            Self::Lrn(lrn) => Features::Map(lrn.forward(x.into_map(input_shape))),
            Self::Fc(linear) => Features::Flat(linear.forward(x.into_flat())),
            Self::Relu(relu) => match x {
                Features::Map(t) => Features::Map(relu.forward(t)),
                Features::Flat(t) => Features::Flat(relu.forward(t)),
            },
            Self::Dropout(drop) => match x {
                Features::Map(t) => Features::Map(drop.forward(t)),
                Features::Flat(t) => Features::Flat(drop.forward(t)),
            },
        }
    }
}

/// Configuration of [`BranchyAlexNet`].
#[derive(Config, Debug, PartialEq)]
pub struct BranchyAlexNetConfig {
    /// Input channels (1 for Fashion-MNIST, 3 for CIFAR-10).
    #[config(default = 1)]
    pub channels: usize,
    /// Number of classes.
    #[config(default = 10)]
    pub classes: usize,
}

impl BranchyAlexNetConfig {
    /// The layer table of this configuration.
    pub fn layer_table(&self) -> LayerTable {
        b_alexnet(self.channels, self.classes)
    }

    /// A network with fresh weights, drawn from burn's generator under [`lock_rng`] (use
    /// [`BranchyAlexNetConfig::init_seeded`] for reproducible weights).
    pub fn init(&self, device: &Device) -> BranchyAlexNet {
        let rng = lock_rng();
        let model = self.init_lazy(device, &rng);
        for layer in model.trunk.iter().chain(model.branches.iter().flatten()) {
            layer.draw_weights();
        }
        model
    }

    /// A network whose weights burn draws at their first use (its own way: the first
    /// forward pass draws them layer by layer, between dropout masks). The caller holds
    /// the guard until then — training holds it from its seed to its last step, which keeps
    /// the stream, and so the trained weights, what they have always been.
    pub fn init_lazy(&self, device: &Device, _held: &RngGuard) -> BranchyAlexNet {
        let table = self.layer_table();
        let full = &table.exits[NUM_EXITS - 1];
        let trunk = full
            .layers
            .iter()
            .map(|l| Layer::init_lazy(l, device))
            .collect();
        let branches = table.exits[..NUM_EXITS - 1]
            .iter()
            .map(|e| {
                e.layers[e.trunk_layers..]
                    .iter()
                    .map(|l| Layer::init_lazy(l, device))
                    .collect()
            })
            .collect();
        BranchyAlexNet {
            trunk,
            branches,
            table,
        }
    }

    /// A network with fresh weights from `seed`: the same seed gives the same weights,
    /// whatever other threads do (the device is seeded and the weights drawn under one
    /// hold of [`lock_rng`]).
    pub fn init_seeded(&self, device: &Device, seed: u64) -> BranchyAlexNet {
        let _rng = lock_rng();
        device.seed(seed);
        self.init(device)
    }
}

/// B-AlexNet with five exits (BranchyNet).
#[derive(Module, Debug)]
pub struct BranchyAlexNet {
    /// The trunk: the chain of exit 5.
    pub trunk: Vec<Layer>,
    /// The branches of exits 1–4 (the layers after their tap on the trunk).
    pub branches: Vec<Vec<Layer>>,
    /// The layer table the network was built from.
    #[module(skip)]
    pub table: LayerTable,
}

impl BranchyAlexNet {
    /// The layer table the network was built from.
    pub fn layer_table(&self) -> &LayerTable {
        &self.table
    }

    /// Layer `index` of exit `exit`'s chain.
    fn layer(&self, exit: usize, index: usize) -> &Layer {
        let spec = &self.table.exits[exit - 1];
        if index < spec.trunk_layers {
            &self.trunk[index]
        } else {
            &self.branches[exit - 1][index - spec.trunk_layers]
        }
    }

    /// Runs every exit a few times on a blank image so that the first real request does
    /// not pay for allocation and thread-pool start-up.
    pub fn warm_up(&self, device: &Device) {
        let [c, h, w] = [
            self.table.input[0],
            self.table.input[1],
            self.table.input[2],
        ];
        for _ in 0..3 {
            let logits = self.forward_all(Tensor::zeros([1, c, h, w], device));
            for t in logits {
                let _ = t.into_data();
            }
        }
    }

    /// Logits of all five exits at once, sharing the trunk (training mode).
    ///
    /// `images`: `[N, C, 32, 32]`; returns five `[N, classes]` tensors, exit 1 first.
    pub fn forward_all(&self, images: Tensor<4>) -> Vec<Tensor<2>> {
        let table = &self.table;
        let trunk_spec = &table.exits[NUM_EXITS - 1];
        let mut logits = vec![None; NUM_EXITS];
        let mut x = Features::Map(images);
        for (i, layer) in self.trunk.iter().enumerate() {
            x = layer.forward(x, &trunk_spec.layers[i].input);
            // Branches whose tap is right after layer `i`.
            for spec in &table.exits[..NUM_EXITS - 1] {
                if spec.trunk_layers == i + 1 {
                    let mut y = x.clone();
                    for (j, branch_layer) in self.branches[spec.exit - 1].iter().enumerate() {
                        y = branch_layer.forward(y, &spec.layers[spec.trunk_layers + j].input);
                    }
                    logits[spec.exit - 1] = Some(y.into_flat());
                }
            }
        }
        logits[NUM_EXITS - 1] = Some(x.into_flat());
        logits
            .into_iter()
            .map(|l| l.expect("every exit has a tap"))
            .collect()
    }

    /// Logits of one exit: `images` `[N, C, 32, 32]` → `[N, classes]`.
    pub fn forward_exit(&self, exit: usize, images: Tensor<4>) -> Result<Tensor<2>, ModelError> {
        let len = self.exit_len(exit)?;
        Ok(self
            .forward_slice(exit, 0..len, Features::Map(images))?
            .into_flat())
    }

    /// Number of layers of exit `exit`'s chain.
    pub fn exit_len(&self, exit: usize) -> Result<usize, ModelError> {
        self.table
            .exit(exit)
            .map(|e| e.len())
            .ok_or(ModelError::UnknownExit(exit))
    }

    /// Runs layers `[start, end)` of exit `exit`'s chain on `x`, the activation entering
    /// layer `start`. Checks the exit, the slice and `x`'s shape first.
    pub fn forward_slice(
        &self,
        exit: usize,
        range: std::ops::Range<usize>,
        x: Features,
    ) -> Result<Features, ModelError> {
        let spec = crate::engine::check_slice(&self.table, exit, &range, &x.dims())?;
        let mut x = x;
        for index in range {
            x = self
                .layer(exit, index)
                .forward(x, &spec.layers[index].input);
        }
        Ok(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> (BranchyAlexNet, Device) {
        let device = Device::flex();
        let model = BranchyAlexNetConfig::new().init_seeded(&device, 3);
        (model.valid(), device)
    }

    fn input(device: &Device, n: usize) -> Tensor<4> {
        let values: Vec<f32> = (0..n * 1024)
            .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
            .collect();
        Tensor::from_data(TensorData::new(values, [n, 1, 32, 32]), device)
    }

    fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    #[test]
    fn split_runs_equal_the_whole_chain_for_every_exit_and_partition() {
        let (model, device) = model();
        let x = input(&device, 2);
        for exit in 1..=NUM_EXITS {
            let n = model.exit_len(exit).unwrap();
            let whole = model.forward_exit(exit, x.clone()).unwrap();
            assert_eq!(whole.dims(), [2, 10]);
            let whole = whole.into_data().try_into_vec_as::<f32>().unwrap();
            for p in 0..=n {
                let head = model
                    .forward_slice(exit, 0..p, Features::Map(x.clone()))
                    .unwrap();
                // Ship the boundary tensor as raw values, as the device would.
                let shipped =
                    Features::from_values(head.to_values(), &head.dims(), &device).unwrap();
                let tail = model.forward_slice(exit, p..n, shipped).unwrap();
                let split = tail.to_values();
                assert_eq!(split, whole, "exit {exit}, partition {p}");
            }
        }
    }

    #[test]
    fn all_exits_at_once_match_single_exits() {
        let (model, device) = model();
        let x = input(&device, 3);
        let all = model.forward_all(x.clone());
        for (i, logits) in all.into_iter().enumerate() {
            let single = model.forward_exit(i + 1, x.clone()).unwrap();
            let d = max_abs_diff(
                &logits.into_data().try_into_vec_as::<f32>().unwrap(),
                &single.into_data().try_into_vec_as::<f32>().unwrap(),
            );
            assert!(d < 1e-5, "exit {}: {d}", i + 1);
        }
    }

    #[test]
    fn bad_calls_are_errors() {
        let (model, device) = model();
        let x = input(&device, 1);
        assert!(matches!(
            model.forward_exit(6, x.clone()),
            Err(ModelError::UnknownExit(6))
        ));
        assert!(matches!(
            model.forward_slice(1, 3..20, Features::Map(x.clone())),
            Err(ModelError::BadSlice { .. })
        ));
        let err = model
            .forward_slice(1, 1..3, Features::Map(x))
            .unwrap_err()
            .to_string();
        assert!(err.contains("takes [N, 32, 32, 32]"), "{err}");
    }

    #[test]
    fn lrn_follows_chainers_formula() {
        let device = Device::flex();
        let spec = &b_alexnet(1, 10).exits[4].layers[3];
        let lrn = Layer::init(spec, &device);
        let values: Vec<f32> = (0..4).map(|c| c as f32 + 1.0).collect();
        let x = Features::from_values(values.clone(), &[1, 4, 1, 1], &device).unwrap();
        let y = lrn.forward(x, &[4, 1, 1]).to_values();
        for c in 0..4usize {
            let lo = c.saturating_sub(1);
            let hi = (c + 1).min(3);
            let sum: f32 = values[lo..=hi].iter().map(|v| v * v).sum();
            let expected = values[c] / (2.0f32 + 5e-5 * sum).powf(0.75);
            assert!(
                (y[c] - expected).abs() < 1e-6,
                "channel {c}: {} vs {expected}",
                y[c]
            );
        }
    }
}
