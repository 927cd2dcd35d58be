//! The layer table: for every exit of B-AlexNet, its chain of layers with kind, shapes and
//! parameters. It is the single source of truth that the model, the profiler, the planner
//! and the code generator are built from.
//!
//! Shapes are per sample (no batch dimension): `[C, H, W]` for feature maps and `[F]` for
//! vectors. Every layer boundary of an exit's chain is a candidate partition point.

use serde::{Deserialize, Serialize};

/// Number of exits of the branchy network.
pub const NUM_EXITS: usize = 5;

/// What a layer computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerKind {
    /// 2-D convolution, stride 1.
    Conv,
    /// Rectified linear unit.
    Relu,
    /// 3×3 max-pooling, stride 2, ceil mode.
    MaxPool,
    /// Local response normalisation across channels.
    Lrn,
    /// Dropout (the identity at inference).
    Dropout,
    /// Fully connected layer; flattens a feature map (C, H, W order) first.
    Fc,
}

impl LayerKind {
    /// Every kind, in a fixed order.
    pub const ALL: [LayerKind; 6] = [
        Self::Conv,
        Self::Relu,
        Self::MaxPool,
        Self::Lrn,
        Self::Dropout,
        Self::Fc,
    ];

    /// The kind's name in tables and files.
    pub fn name(self) -> &'static str {
        match self {
            Self::Conv => "conv",
            Self::Relu => "relu",
            Self::MaxPool => "pool",
            Self::Lrn => "lrn",
            Self::Dropout => "dropout",
            Self::Fc => "fc",
        }
    }
}

/// The hyper-parameters of a layer (its shapes are in [`LayerSpec`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LayerParams {
    /// Convolution with a square kernel, stride 1.
    Conv {
        /// Input channels.
        in_channels: usize,
        /// Output channels (filters).
        out_channels: usize,
        /// Kernel side.
        kernel: usize,
        /// Zero padding on each side.
        padding: usize,
    },
    /// Max-pooling with a square window, ceil mode.
    MaxPool {
        /// Window side.
        kernel: usize,
        /// Stride.
        stride: usize,
    },
    /// Local response normalisation, Chainer's formula `x / (k + α·Σ x²)^β` over `size` channels.
    Lrn {
        /// Channels in the window.
        size: usize,
        /// α of Chainer's formula (not divided by `size`).
        alpha: f64,
        /// β.
        beta: f64,
        /// k.
        k: f64,
    },
    /// Dropout with drop probability `prob`.
    Dropout {
        /// Probability of zeroing an element during training.
        prob: f64,
    },
    /// Fully connected layer.
    Fc {
        /// Input features.
        in_features: usize,
        /// Output features.
        out_features: usize,
    },
    /// No parameters (ReLU).
    None,
}

/// One layer of an exit's chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerSpec {
    /// Unique name, also the prefix of its tensors in `model.safetensors` (`conv1`, `exit2.fc`).
    pub name: String,
    /// What the layer computes.
    pub kind: LayerKind,
    /// Input shape per sample.
    pub input: Vec<usize>,
    /// Output shape per sample.
    pub output: Vec<usize>,
    /// Hyper-parameters.
    pub params: LayerParams,
}

impl LayerSpec {
    /// Elements of the input per sample.
    pub fn input_len(&self) -> usize {
        self.input.iter().product()
    }

    /// Elements of the output per sample.
    pub fn output_len(&self) -> usize {
        self.output.iter().product()
    }

    /// Trainable parameters (weights and biases) of the layer.
    pub fn param_count(&self) -> usize {
        match self.params {
            LayerParams::Conv {
                in_channels,
                out_channels,
                kernel,
                ..
            } => out_channels * in_channels * kernel * kernel + out_channels,
            LayerParams::Fc {
                in_features,
                out_features,
            } => in_features * out_features + out_features,
            _ => 0,
        }
    }

    /// Multiply-accumulate operations per sample.
    pub fn macs(&self) -> usize {
        match self.params {
            LayerParams::Conv {
                in_channels,
                kernel,
                ..
            } => self.output_len() * in_channels * kernel * kernel,
            LayerParams::Fc {
                in_features,
                out_features,
            } => in_features * out_features,
            _ => 0,
        }
    }
}

/// The chain of layers that computes one exit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExitSpec {
    /// Exit number, 1 (shallowest) to 5 (the full network).
    pub exit: usize,
    /// How many leading layers are shared with the trunk; the rest are the exit's branch.
    pub trunk_layers: usize,
    /// The layers `L_1..L_N` of the chain.
    pub layers: Vec<LayerSpec>,
}

impl ExitSpec {
    /// Number of layers `N` of the chain; partition points are `0..=N`.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// Whether the chain is empty (never, for a valid table).
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// Shape per sample of the activation entering layer `p` (`p == N`: the logits).
    pub fn boundary_shape(&self, p: usize) -> &[usize] {
        if p < self.layers.len() {
            &self.layers[p].input
        } else {
            &self.layers[self.layers.len() - 1].output
        }
    }
}

/// Every exit's chain, plus the input shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerTable {
    /// Input shape per sample, `[C, 32, 32]`.
    pub input: Vec<usize>,
    /// Number of classes.
    pub classes: usize,
    /// Exits 1..=5 in order.
    pub exits: Vec<ExitSpec>,
}

impl LayerTable {
    /// The chain of exit `exit` (1-based), if it exists.
    pub fn exit(&self, exit: usize) -> Option<&ExitSpec> {
        exit.checked_sub(1).and_then(|i| self.exits.get(i))
    }
}

/// An architecture step before shapes are known (the profiler builds layers from these).
#[derive(Debug, Clone, Copy)]
pub enum Op {
    /// Convolution, stride 1.
    Conv {
        /// Output channels.
        out: usize,
        /// Square kernel size.
        kernel: usize,
        /// Zero padding on each side.
        padding: usize,
    },
    /// ReLU.
    Relu,
    /// Max-pooling (3×3, stride 2, ceil mode).
    Pool,
    /// Local response normalisation.
    Lrn,
    /// Dropout (the identity at inference).
    Dropout,
    /// Fully connected (flattens a feature map first).
    Fc {
        /// Output features.
        out: usize,
    },
}

use Op::{Dropout, Lrn, Pool, Relu};

const fn conv(out: usize, kernel: usize) -> Op {
    Op::Conv {
        out,
        kernel,
        padding: kernel / 2,
    }
}

const fn fc(out: usize) -> Op {
    Op::Fc { out }
}

/// The trunk (exit 5), as DESIGN.md §3 lists it; `classes` replaces `0` in the last FC.
pub(crate) const TRUNK: &[(&str, Op)] = &[
    ("conv1", conv(32, 5)),
    ("relu1", Relu),
    ("pool1", Pool),
    ("lrn1", Lrn),
    ("conv2", conv(64, 5)),
    ("relu2", Relu),
    ("pool2", Pool),
    ("lrn2", Lrn),
    ("conv3", conv(96, 3)),
    ("relu3", Relu),
    ("conv4", conv(96, 3)),
    ("relu4", Relu),
    ("conv5", conv(64, 3)),
    ("relu5", Relu),
    ("pool5", Pool),
    ("fc6", fc(256)),
    ("relu6", Relu),
    ("drop6", Dropout),
    ("fc7", fc(128)),
    ("relu7", Relu),
    ("drop7", Dropout),
    ("fc8", fc(0)),
];

/// Branches of exits 1–4: how many trunk layers they follow, and their own layers.
pub(crate) const BRANCHES: [(usize, &[(&str, Op)]); 4] = [
    (
        4,
        &[
            ("conv1", conv(32, 3)),
            ("relu1", Relu),
            ("pool1", Pool),
            ("conv2", conv(32, 3)),
            ("relu2", Relu),
            ("pool2", Pool),
            ("fc", fc(0)),
        ],
    ),
    (
        8,
        &[
            ("conv1", conv(32, 3)),
            ("relu1", Relu),
            ("conv2", conv(32, 3)),
            ("relu2", Relu),
            ("pool", Pool),
            ("fc", fc(0)),
        ],
    ),
    (
        10,
        &[
            ("conv1", conv(32, 3)),
            ("relu1", Relu),
            ("conv2", conv(32, 3)),
            ("relu2", Relu),
            ("pool", Pool),
            ("fc", fc(0)),
        ],
    ),
    (
        12,
        &[
            ("conv1", conv(32, 3)),
            ("relu1", Relu),
            ("pool", Pool),
            ("fc1", fc(128)),
            ("relu2", Relu),
            ("fc2", fc(0)),
        ],
    ),
];

/// LRN as DESIGN.md §3: Chainer's n = 3, α = 5e-5, β = 0.75, k = 2.
pub const LRN: (usize, f64, f64, f64) = (3, 5e-5, 0.75, 2.0);
/// Dropout probability of the trunk's FC layers.
pub const DROPOUT: f64 = 0.5;
/// Max-pooling window and stride.
pub const POOL: (usize, usize) = (3, 2);

/// Infers the spec of one layer from its input shape.
pub fn spec(name: String, op: Op, input: &[usize], classes: usize) -> LayerSpec {
    let (kind, params, output) = match op {
        Op::Conv {
            out,
            kernel,
            padding,
        } => {
            let (h, w) = (input[1], input[2]);
            let output = vec![
                out,
                h + 2 * padding - kernel + 1,
                w + 2 * padding - kernel + 1,
            ];
            let params = LayerParams::Conv {
                in_channels: input[0],
                out_channels: out,
                kernel,
                padding,
            };
            (LayerKind::Conv, params, output)
        }
        Op::Pool => {
            let (kernel, stride) = POOL;
            // Ceil mode: a window that starts inside the input counts.
            let side = |n: usize| (n - kernel).div_ceil(stride) + 1;
            let output = vec![input[0], side(input[1]), side(input[2])];
            (
                LayerKind::MaxPool,
                LayerParams::MaxPool { kernel, stride },
                output,
            )
        }
        Op::Lrn => {
            let (size, alpha, beta, k) = LRN;
            let params = LayerParams::Lrn {
                size,
                alpha,
                beta,
                k,
            };
            (LayerKind::Lrn, params, input.to_vec())
        }
        Op::Relu => (LayerKind::Relu, LayerParams::None, input.to_vec()),
        Op::Dropout => (
            LayerKind::Dropout,
            LayerParams::Dropout { prob: DROPOUT },
            input.to_vec(),
        ),
        Op::Fc { out } => {
            let out = if out == 0 { classes } else { out };
            let params = LayerParams::Fc {
                in_features: input.iter().product(),
                out_features: out,
            };
            (LayerKind::Fc, params, vec![out])
        }
    };
    LayerSpec {
        name,
        kind,
        input: input.to_vec(),
        output,
        params,
    }
}

/// Appends the layers of `ops` to `out`, inferring shapes from `shape` on.
fn chain(
    ops: impl IntoIterator<Item = (String, Op)>,
    mut shape: Vec<usize>,
    classes: usize,
    out: &mut Vec<LayerSpec>,
) {
    for (name, op) in ops {
        let layer = spec(name, op, &shape, classes);
        shape = layer.output.clone();
        out.push(layer);
    }
}

/// Builds the layer table of B-AlexNet for `channels`-channel 32×32 inputs and `classes`.
pub fn b_alexnet(channels: usize, classes: usize) -> LayerTable {
    let input = vec![channels, 32, 32];
    let mut trunk = Vec::new();
    chain(
        TRUNK.iter().map(|&(n, op)| (n.to_string(), op)),
        input.clone(),
        classes,
        &mut trunk,
    );
    let mut exits: Vec<ExitSpec> = BRANCHES
        .iter()
        .enumerate()
        .map(|(i, &(tap, ops))| {
            let mut layers = trunk[..tap].to_vec();
            let shape = layers[tap - 1].output.clone();
            chain(
                ops.iter()
                    .map(|&(n, op)| (format!("exit{}.{n}", i + 1), op)),
                shape,
                classes,
                &mut layers,
            );
            ExitSpec {
                exit: i + 1,
                trunk_layers: tap,
                layers,
            }
        })
        .collect();
    exits.push(ExitSpec {
        exit: NUM_EXITS,
        trunk_layers: trunk.len(),
        layers: trunk,
    });
    LayerTable {
        input,
        classes,
        exits,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_follow_the_design() {
        let table = b_alexnet(1, 10);
        let lens: Vec<usize> = table.exits.iter().map(ExitSpec::len).collect();
        assert_eq!(lens, vec![11, 14, 16, 18, 22]);
        let trunk = &table.exits[4].layers;
        assert_eq!(trunk[3].output, vec![32, 16, 16]); // conv1 block
        assert_eq!(trunk[7].output, vec![64, 8, 8]); // conv2 block
        assert_eq!(trunk[14].output, vec![64, 4, 4]); // conv5 block
        assert_eq!(trunk[15].input, vec![64, 4, 4]);
        assert_eq!(trunk[21].output, vec![10]);
        for exit in &table.exits[..4] {
            let fc = exit
                .layers
                .iter()
                .find(|l| l.kind == LayerKind::Fc)
                .unwrap();
            assert_eq!(fc.input_len(), 512, "exit {}", exit.exit);
            assert_eq!(exit.layers.last().unwrap().output, vec![10]);
        }
        // Branch layers get their exit's prefix, trunk layers are shared by name.
        assert_eq!(table.exits[0].layers[4].name, "exit1.conv1");
        assert_eq!(table.exits[3].layers[11].name, "relu4");
    }

    #[test]
    fn every_chain_is_consistent() {
        for channels in [1, 3] {
            let table = b_alexnet(channels, 10);
            for exit in &table.exits {
                assert_eq!(exit.layers[0].input, table.input);
                for pair in exit.layers.windows(2) {
                    assert_eq!(pair[0].output, pair[1].input);
                }
                assert_eq!(exit.boundary_shape(exit.len()), &[10]);
            }
        }
    }
}
