//! The generated engine's network: every layer's weights packed once into the layouts the
//! kernels read, a per-thread arena the activations live in, and the run that the plan's
//! macro drives with constant shapes ([`PackedNetwork::run_with`]) or that reads the
//! shapes from the layer table ([`PackedNetwork::interpret`]).

use std::cell::RefCell;
use std::ops::Range;
use std::sync::Arc;

use kernels::{Conv, ConvShape, Fc, Isa, Lrn, Pool};

use super::{Activation, AfterLayer, Engine, EngineKind, check_slice};
use crate::model::ModelError;
use crate::model::layers::{LayerKind, LayerParams, LayerSpec, LayerTable};
use crate::model::weights::{WeightMap, WeightsError};

/// One layer, ready for its kernel.
#[derive(Debug, Clone, PartialEq)]
pub enum Packed {
    /// Convolution: shapes, packed weights ([`kernels::pack_conv`]) and bias.
    Conv {
        /// Shapes.
        shape: Conv,
        /// Packed weights.
        weights: Vec<f32>,
        /// Bias.
        bias: Vec<f32>,
    },
    /// Fully connected: shapes, packed weights ([`kernels::pack_fc`]) and bias.
    Fc {
        /// Shapes.
        shape: Fc,
        /// Packed weights.
        weights: Vec<f32>,
        /// Bias.
        bias: Vec<f32>,
    },
    /// Max-pooling.
    Pool(Pool),
    /// Local response normalisation.
    Lrn(Lrn),
    /// ReLU over this many elements.
    Relu(usize),
    /// Dropout: nothing to do at inference.
    Dropout,
}

impl Packed {
    /// Packs layer `spec` with its tensors from `weights`.
    pub fn new(spec: &LayerSpec, weights: &WeightMap) -> Result<Self, WeightsError> {
        let tensor = |suffix: &str, len: usize| -> Result<&[f32], WeightsError> {
            let name = format!("{}.{suffix}", spec.name);
            let t = weights
                .0
                .get(&name)
                .ok_or_else(|| WeightsError::Mismatch(format!("tensor {name} is missing")))?;
            if t.values.len() != len {
                return Err(WeightsError::Mismatch(format!(
                    "tensor {name} has {} values, layer {} needs {len}",
                    t.values.len(),
                    spec.name
                )));
            }
            Ok(&t.values)
        };
        let bad = |why: String| WeightsError::Mismatch(format!("layer {}: {why}", spec.name));
        // Convolution, pooling and LRN take a feature map [C, H, W].
        let map = || -> Result<[usize; 3], WeightsError> {
            match *spec.input {
                [c, h, w] => Ok([c, h, w]),
                _ => Err(bad(format!(
                    "takes {:?}, not a feature map [C, H, W]",
                    spec.input
                ))),
            }
        };
        let same_output = |out: &[usize]| -> Result<(), WeightsError> {
            if out == spec.output.as_slice() {
                Ok(())
            } else {
                Err(bad(format!(
                    "the kernel outputs {out:?}, the table says {:?}",
                    spec.output
                )))
            }
        };
        Ok(match spec.params {
            LayerParams::Conv {
                in_channels,
                out_channels,
                kernel,
                padding,
            } => {
                let [c, h, w] = map()?;
                let shape = Conv {
                    ic: in_channels,
                    oc: out_channels,
                    h,
                    w,
                    k: kernel,
                    pad: padding,
                };
                if c != in_channels || !shape.keeps_size() || shape.lens().is_none() {
                    return Err(bad(format!(
                        "the kernels run size-keeping convolutions (kernel 2·padding + 1) of the input's channels, not {in_channels} channels, kernel {kernel}, padding {padding} on {:?}",
                        spec.input
                    )));
                }
                same_output(&[out_channels, h, w])?;
                let weights = tensor("weight", out_channels * in_channels * kernel * kernel)?;
                Self::Conv {
                    weights: kernels::pack_conv(shape, weights),
                    bias: tensor("bias", out_channels)?.to_vec(),
                    shape,
                }
            }
            LayerParams::Fc {
                in_features,
                out_features,
            } => {
                if spec.input_len() != in_features {
                    return Err(bad(format!(
                        "{in_features} input features, but its input {:?} has {}",
                        spec.input,
                        spec.input_len()
                    )));
                }
                same_output(&[out_features])?;
                let shape = Fc {
                    inputs: in_features,
                    outputs: out_features,
                };
                let map = map().ok();
                let weights = tensor("weight", in_features * out_features)?;
                Self::Fc {
                    weights: kernels::pack_fc(shape, map, weights),
                    bias: tensor("bias", out_features)?.to_vec(),
                    shape,
                }
            }
            LayerParams::MaxPool { kernel, stride } => {
                let [c, h, w] = map()?;
                if kernel == 0 || stride == 0 || kernel > h || kernel > w {
                    return Err(bad(format!(
                        "a {kernel}×{kernel} window with stride {stride} does not fit {h}×{w}"
                    )));
                }
                let shape = Pool {
                    c,
                    h,
                    w,
                    k: kernel,
                    stride,
                };
                same_output(&[c, shape.oh(), shape.ow()])?;
                Self::Pool(shape)
            }
            LayerParams::Lrn {
                size,
                alpha,
                beta,
                k,
            } => {
                let [c, h, w] = map()?;
                if beta != 0.75 || size % 2 == 0 {
                    return Err(bad(format!(
                        "the LRN kernel computes β = 0.75 over an odd window, not β = {beta} over {size} channels"
                    )));
                }
                same_output(&spec.input)?;
                Self::Lrn(Lrn {
                    c,
                    hw: h * w,
                    size,
                    alpha: alpha as f32,
                    k: k as f32,
                })
            }
            LayerParams::Dropout { .. } => Self::Dropout,
            LayerParams::None if spec.kind == LayerKind::Relu => {
                same_output(&spec.input)?;
                Self::Relu(spec.input_len())
            }
            LayerParams::None => {
                return Err(bad(format!(
                    "a {} layer needs parameters",
                    spec.kind.name()
                )));
            }
        })
    }
}

/// Where a thread's activations live while layers run: the current activation, the next
/// one, and scratch (the padded input of a convolution, LRN's line). Sized for the largest
/// layer once, then reused for every request on the thread.
#[derive(Debug, Default)]
pub struct Arena {
    current: Vec<f32>,
    next: Vec<f32>,
    scratch: Vec<f32>,
}

impl Arena {
    /// Grows the buffers to `activation` and `scratch` elements (never shrinks).
    fn reserve(&mut self, activation: usize, scratch: usize) {
        for (buffer, len) in [
            (&mut self.current, activation),
            (&mut self.next, activation),
            (&mut self.scratch, scratch),
        ] {
            if buffer.len() < len {
                buffer.resize(len, 0.0);
            }
        }
    }

    /// Convolution of the current activation (bias, and ReLU when `relu`). Inside a rayon
    /// pool of several threads (the plan's thread count), the output channels are split
    /// between them in blocks of 16: each block of the blocked output is a contiguous run,
    /// computed from the whole input by the same kernel.
    pub fn conv<S: ConvShape>(
        &mut self,
        isa: Isa,
        shape: S,
        relu: bool,
        weights: &[f32],
        bias: &[f32],
    ) {
        kernels::pad(shape, &self.current, &mut self.scratch);
        let s = shape.get();
        let blocks = s.oc / kernels::BLOCK;
        let groups = rayon::current_num_threads().min(blocks);
        // Split, the parts' shapes are known only at run time (a part's output channels).
        if groups <= 1 || !s.tiles() || s.h * s.w == 0 {
            kernels::conv2d(
                isa,
                shape,
                relu,
                weights,
                bias,
                &self.scratch,
                &mut self.next,
            );
        } else {
            let per = blocks.div_ceil(groups) * kernels::BLOCK;
            let (padded, out) = (&self.scratch, &mut self.next[..s.oc * s.h * s.w]);
            let kk = s.ic * s.k * s.k;
            rayon::scope(|scope| {
                for (i, chunk) in out.chunks_mut(per * s.h * s.w).enumerate() {
                    let part = Conv {
                        oc: chunk.len() / (s.h * s.w),
                        ..s
                    };
                    let weights = &weights[i * per * kk..(i * per + part.oc) * kk];
                    let bias = &bias[i * per..i * per + part.oc];
                    scope.spawn(move |_| {
                        kernels::conv2d(isa, part, relu, weights, bias, padded, chunk);
                    });
                }
            });
        }
        std::mem::swap(&mut self.current, &mut self.next);
    }

    /// Fully connected layer on the current activation (bias, and ReLU when `relu`).
    pub fn fc(&mut self, isa: Isa, shape: Fc, relu: bool, weights: &[f32], bias: &[f32]) {
        kernels::fc(
            isa,
            shape,
            relu,
            weights,
            bias,
            &self.current,
            &mut self.next,
        );
        std::mem::swap(&mut self.current, &mut self.next);
    }

    /// Max-pooling of the current activation.
    pub fn pool(&mut self, isa: Isa, shape: Pool) {
        kernels::max_pool(isa, shape, &self.current, &mut self.next);
        std::mem::swap(&mut self.current, &mut self.next);
    }

    /// LRN of the current activation, in place.
    pub fn lrn(&mut self, isa: Isa, shape: Lrn) {
        kernels::lrn(isa, shape, &mut self.current, &mut self.scratch);
    }

    /// ReLU of the first `len` elements of the current activation, in place.
    pub fn relu(&mut self, isa: Isa, len: usize) {
        kernels::relu(isa, &mut self.current[..len]);
    }
}

thread_local! {
    /// Each thread's arena (the device's main and speculation threads, the edge's workers),
    /// allocated by its first run and reused by the next ones.
    static ARENA: RefCell<Arena> = RefCell::new(Arena::default());
}

/// Runs `work` in this thread's arena, grown to `activation` and `scratch` elements. The
/// arena is taken out for the run and put back after, so a run nested in another on the
/// same thread (a callback that runs the engine, a rayon worker that picks up a second
/// run while waiting) gets an arena of its own instead of a borrow error.
fn in_arena<T>(activation: usize, scratch: usize, work: impl FnOnce(&mut Arena) -> T) -> T {
    let mut arena = ARENA.take();
    arena.reserve(activation, scratch);
    let out = work(&mut arena);
    ARENA.set(arena);
    out
}

/// Runs layer `index` of exit `exit` in the arena; `relu` asks it to apply the following
/// ReLU too. The plan's macro generates one with every shape a constant; the toolchain
/// uses [`PackedNetwork::interpret`].
pub type LayerFn = fn(&PackedNetwork, &mut Arena, usize, usize, bool);

/// B-AlexNet's layers packed for the kernels, shared by the exits whose chains hold them.
#[derive(Debug, Clone)]
pub struct PackedNetwork {
    table: LayerTable,
    isa: Isa,
    /// `[exit − 1][index]`: the trunk's layers are shared between the exits.
    layers: Vec<Vec<Arc<Packed>>>,
    activation_len: usize,
    scratch_len: usize,
    layer_fn: LayerFn,
    name: &'static str,
}

impl PackedNetwork {
    /// Packs every layer of `table` from `weights`, to run with `isa` through `layer_fn`
    /// ([`PackedNetwork::interpret`] reads each layer's shapes from the table).
    pub fn new(table: &LayerTable, weights: &WeightMap, isa: Isa) -> Result<Self, WeightsError> {
        let mut by_name: std::collections::HashMap<&str, Arc<Packed>> = Default::default();
        let mut layers = Vec::new();
        let (mut activation_len, mut scratch_len) = (0, 0);
        for spec in &table.exits {
            let mut chain = Vec::new();
            for layer in &spec.layers {
                let packed = match by_name.get(layer.name.as_str()) {
                    Some(p) => Arc::clone(p),
                    None => {
                        let p = Arc::new(Packed::new(layer, weights)?);
                        by_name.insert(&layer.name, Arc::clone(&p));
                        p
                    }
                };
                activation_len = activation_len
                    .max(layer.input_len())
                    .max(layer.output_len());
                scratch_len = scratch_len.max(match &*packed {
                    Packed::Conv { shape, .. } => shape.padded_len(),
                    Packed::Lrn(shape) => kernels::lrn_scratch_len(*shape),
                    _ => 0,
                });
                chain.push(packed);
            }
            layers.push(chain);
        }
        Ok(Self {
            table: table.clone(),
            isa,
            layers,
            activation_len,
            scratch_len,
            layer_fn: Self::interpret,
            name: "interpreted",
        })
    }

    /// The same network run through `layer_fn` (the plan's generated one), named `name`
    /// in reports.
    pub fn with_layer_fn(mut self, layer_fn: LayerFn, name: &'static str) -> Self {
        self.layer_fn = layer_fn;
        self.name = name;
        self
    }

    /// The instruction set the kernels run with.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// Layer `index` of exit `exit`'s chain.
    pub fn layer(&self, exit: usize, index: usize) -> &Packed {
        &self.layers[exit - 1][index]
    }

    /// Runs layer `index` of `exit` with the shapes the table gives it.
    pub fn interpret(&self, arena: &mut Arena, exit: usize, index: usize, relu: bool) {
        let isa = self.isa;
        match self.layer(exit, index) {
            Packed::Conv {
                shape,
                weights,
                bias,
            } => arena.conv(isa, *shape, relu, weights, bias),
            Packed::Fc {
                shape,
                weights,
                bias,
            } => arena.fc(isa, *shape, relu, weights, bias),
            Packed::Pool(shape) => arena.pool(isa, *shape),
            Packed::Lrn(shape) => arena.lrn(isa, *shape),
            Packed::Relu(len) => arena.relu(isa, *len),
            Packed::Dropout => {}
        }
    }

    /// Convolution `index` of `exit` with shapes known at compile time (`shape` must be
    /// the layer's: checked in debug builds).
    pub fn conv<S: ConvShape>(
        &self,
        arena: &mut Arena,
        exit: usize,
        index: usize,
        shape: S,
        relu: bool,
    ) {
        match self.layer(exit, index) {
            Packed::Conv {
                shape: packed,
                weights,
                bias,
            } => {
                debug_assert_eq!(*packed, shape.get(), "exit {exit} layer {index}");
                arena.conv(self.isa, shape, relu, weights, bias);
            }
            other => unreachable!("exit {exit} layer {index} is {other:?}, not a convolution"),
        }
    }

    /// Fully connected layer `index` of `exit` with shapes known at compile time (`shape`
    /// must be the layer's: checked in debug builds).
    pub fn fc(&self, arena: &mut Arena, exit: usize, index: usize, shape: Fc, relu: bool) {
        match self.layer(exit, index) {
            Packed::Fc {
                shape: packed,
                weights,
                bias,
            } => {
                debug_assert_eq!(*packed, shape, "exit {exit} layer {index}");
                arena.fc(self.isa, shape, relu, weights, bias);
            }
            other => unreachable!("exit {exit} layer {index} is {other:?}, not fully connected"),
        }
    }

    /// Runs `range` of `exit` on every sample of `x` in this thread's arena, through the
    /// network's layer function.
    pub fn run_with(
        &self,
        exit: usize,
        range: Range<usize>,
        x: &Activation,
        after_layer: AfterLayer<'_>,
    ) -> Result<Activation, ModelError> {
        let spec = check_slice(&self.table, exit, &range, x.dims())?;
        let batch = x.dims()[0];
        let (entry, exit_shape) = (
            spec.boundary_shape(range.start),
            spec.boundary_shape(range.end),
        );
        let (in_len, out_len): (usize, usize) =
            (entry.iter().product(), exit_shape.iter().product());
        let mut out = vec![0.0; batch * out_len];
        in_arena(self.activation_len, self.scratch_len, |arena| {
            for (sample, y) in x
                .values()
                .chunks_exact(in_len)
                .zip(out.chunks_exact_mut(out_len))
            {
                match *entry {
                    [c, h, w] => kernels::to_blocked(c, h * w, sample, &mut arena.current),
                    _ => arena.current[..in_len].copy_from_slice(sample),
                }
                let mut index = range.start;
                while index < range.end {
                    let fused = index + 1 < range.end && super::fused_relu(&spec.layers, index + 1);
                    (self.layer_fn)(self, arena, exit, index, fused);
                    after_layer(index)?;
                    if fused {
                        after_layer(index + 1)?;
                        index += 1;
                    }
                    index += 1;
                }
                match *exit_shape {
                    [c, h, w] => kernels::from_blocked(c, h * w, &arena.current, y),
                    _ => y.copy_from_slice(&arena.current[..out_len]),
                }
            }
            Ok::<(), ModelError>(())
        })?;
        let mut dims = vec![batch];
        dims.extend(exit_shape);
        Activation::from_values(out, &dims)
    }
}

impl PackedNetwork {
    /// Median milliseconds of layer `index` of `exit` alone on `x` (its input, batch 1),
    /// unfused, run back to back in this thread's arena: the input is put in place before
    /// each run, outside the timed part. The profiler times the generated engine's layers
    /// this way, as they run inside a chain (layout conversions happen only at a slice's
    /// ends).
    pub fn time_layer(
        &self,
        exit: usize,
        index: usize,
        x: &Activation,
        repeats: crate::slowdown::Repeats,
    ) -> Result<f64, ModelError> {
        let spec = check_slice(&self.table, exit, &(index..index + 1), x.dims())?;
        let shape = spec.boundary_shape(index);
        let len: usize = shape.iter().product();
        let mut input = vec![0.0; len];
        match *shape {
            [c, h, w] => kernels::to_blocked(c, h * w, &x.values()[..len], &mut input),
            _ => input.copy_from_slice(&x.values()[..len]),
        }
        Ok(in_arena(self.activation_len, self.scratch_len, |arena| {
            repeats.median_ms(|| {
                arena.current[..len].copy_from_slice(&input);
                let start = std::time::Instant::now();
                (self.layer_fn)(self, arena, exit, index, false);
                start.elapsed()
            })
        }))
    }
}

impl Engine for PackedNetwork {
    fn kind(&self) -> EngineKind {
        EngineKind::Generated
    }

    fn describe(&self) -> String {
        format!("{} kernels, {}", self.name, self.isa)
    }

    fn table(&self) -> &LayerTable {
        &self.table
    }

    fn run(
        &self,
        exit: usize,
        range: Range<usize>,
        x: &Activation,
        after_layer: AfterLayer<'_>,
    ) -> Result<Activation, ModelError> {
        self.run_with(exit, range, x, after_layer)
    }
}
