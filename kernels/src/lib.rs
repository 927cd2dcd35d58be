//! The inference kernels of Edgent's generated engine (DESIGN.md §10): plain Rust, no burn.
//!
//! * [`conv2d`]: direct convolution, stride 1, zero padding, bias and ReLU fused; a map with
//!   one input channel (the first layer) is read as a plain plane, by its own const-generic
//!   instance of the same kernel (no 16-channel blocks to broadcast from).
//! * [`max_pool`]: square window, ceil mode (a window that runs past the edge takes the
//!   maximum of what it covers).
//! * [`lrn`]: Chainer's local response normalisation across channels, `(k + α·Σx²)^−β` with
//!   β = 0.75 computed as `r·√r`, `r = 1/√d` — no `powf`.
//! * [`fc`]: fully connected layer as a GEMV on weights transposed once (and, after a
//!   feature map, reordered to the map's storage order), bias and ReLU fused.
//!
//! **Layout.** A feature map of `C` channels is stored *blocked*: `[C/B][H][W][B]` with
//! `B = 16` lanes of channels when `C` is a multiple of 16 (one AVX-512 register), else
//! `B = 1` (plain `[C][H][W]`). [`to_blocked`] and [`from_blocked`] convert at the edges of
//! a run; vectors are plain.
//!
//! **Instruction sets.** Each kernel has a portable version (the reference, and what an ARM
//! device compiles) and, on x86-64, AVX2+FMA and AVX-512 versions, chosen by the [`Isa`]
//! passed in — once per call, never inside a loop. Convolution's SIMD versions are written
//! with intrinsics (module `x86`, the only place with `unsafe`); the other kernels are one
//! generic body compiled once per instruction set.

mod portable;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use portable::lrn_scratch_len;

/// Channels per block of the blocked layout.
pub const BLOCK: usize = 16;

/// The block size of a map with `channels` channels: 16, or 1 when 16 does not divide it.
pub const fn block_of(channels: usize) -> usize {
    if channels.is_multiple_of(BLOCK) {
        BLOCK
    } else {
        1
    }
}

/// The instruction set a kernel runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    /// Plain Rust, compiled for the target's baseline (SSE2 on x86-64, NEON on aarch64).
    Portable,
    /// AVX2 and FMA (x86-64).
    Avx2,
    /// AVX-512 F (x86-64).
    Avx512,
}

impl Isa {
    /// Every instruction set, lowest first.
    pub const ALL: [Isa; 3] = [Self::Portable, Self::Avx2, Self::Avx512];

    /// Whether this CPU can run kernels of this instruction set.
    pub fn supported(self) -> bool {
        match self {
            Self::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Self::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(target_arch = "x86_64")]
            // The kernels also use AVX2 and FMA, which a virtual machine may hide even
            // where AVX-512 F is shown.
            Self::Avx512 => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// Every instruction set this CPU supports, lowest first.
    pub fn available() -> Vec<Isa> {
        Self::ALL.into_iter().filter(|i| i.supported()).collect()
    }

    /// The best instruction set this CPU supports, capped by the environment variable
    /// `EDGENT_ISA` (`portable`, `avx2`, `avx512`) when it is set — tests and benchmarks use
    /// it to force a lower level. An unknown value is an error.
    pub fn detect() -> Result<Isa, String> {
        let best = *Self::available().last().unwrap_or(&Self::Portable);
        match std::env::var("EDGENT_ISA") {
            Ok(cap) => {
                let cap: Isa = cap.parse()?;
                Ok(best.min(cap))
            }
            Err(_) => Ok(best),
        }
    }

    /// The name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Portable => "portable",
            Self::Avx2 => "avx2",
            Self::Avx512 => "avx512",
        }
    }
}

impl std::str::FromStr for Isa {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|i| i.name() == s.to_ascii_lowercase())
            .ok_or_else(|| {
                format!("unknown instruction set `{s}`: expected portable, avx2 or avx512")
            })
    }
}

impl std::fmt::Display for Isa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Shapes of a convolution: `ic` channels of `h`×`w` in, `oc` channels of `h`×`w` out, a
/// `k`×`k` kernel (odd), stride 1 and the padding that keeps the size (`k = 2·pad + 1`), as
/// every convolution of B-AlexNet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv {
    /// Input channels.
    pub ic: usize,
    /// Output channels.
    pub oc: usize,
    /// Height of input and output.
    pub h: usize,
    /// Width of input and output.
    pub w: usize,
    /// Kernel side.
    pub k: usize,
    /// Zero padding on each side.
    pub pad: usize,
}

impl Conv {
    /// Height of the padded input.
    pub const fn hp(&self) -> usize {
        self.h + 2 * self.pad
    }

    /// Width of the padded input.
    pub const fn wp(&self) -> usize {
        self.w + 2 * self.pad
    }

    /// Elements of the padded input ([`pad`]'s output).
    pub const fn padded_len(&self) -> usize {
        self.ic * self.hp() * self.wp()
    }

    /// Elements of the packed weights ([`pack_conv`]'s output).
    pub const fn packed_len(&self) -> usize {
        self.oc.div_ceil(BLOCK) * BLOCK * self.ic * self.k * self.k
    }

    /// Whether the size is kept: `k = 2·pad + 1`, the only convolutions these kernels run.
    pub const fn keeps_size(&self) -> bool {
        self.pad < usize::MAX / 4 && 2 * self.pad + 1 == self.k
    }

    /// Elements of the packed weights, the padded input and the output, or `None` when a
    /// product overflows: the kernels check buffers against these before they run.
    pub fn lens(&self) -> Option<[usize; 3]> {
        let hp = self.pad.checked_mul(2)?.checked_add(self.h)?;
        let wp = self.pad.checked_mul(2)?.checked_add(self.w)?;
        let packed = self
            .oc
            .div_ceil(BLOCK)
            .checked_mul(BLOCK)?
            .checked_mul(self.ic)?
            .checked_mul(self.k.checked_mul(self.k)?)?;
        let padded = self.ic.checked_mul(hp)?.checked_mul(wp)?;
        let out = self.oc.checked_mul(self.h)?.checked_mul(self.w)?;
        Some([packed, padded, out])
    }

    /// Whether the SIMD versions take this shape: output channels in blocks of 16, columns
    /// in fours (every convolution of B-AlexNet, and the profiler's 4×4 maps); others run the portable version.
    pub const fn tiles(&self) -> bool {
        self.keeps_size() && self.oc.is_multiple_of(BLOCK) && self.w.is_multiple_of(4)
    }
}

/// A convolution's shapes, known when the program runs ([`Conv`]) or when it is compiled
/// ([`ConvConst`]: the generated engine's, which lets the compiler fold every loop bound).
/// Sealed: the SIMD kernels rely on `get` returning the same shapes every time, which both
/// implementations do.
pub trait ConvShape: Copy + Send + Sync + sealed::Sealed {
    /// The shapes.
    fn get(self) -> Conv;
}

mod sealed {
    /// Only this crate's shapes implement [`super::ConvShape`].
    pub trait Sealed {}
    impl Sealed for super::Conv {}
    impl<
        const IC: usize,
        const OC: usize,
        const H: usize,
        const W: usize,
        const K: usize,
        const PAD: usize,
    > Sealed for super::ConvConst<IC, OC, H, W, K, PAD>
    {
    }
}

impl ConvShape for Conv {
    #[inline(always)]
    fn get(self) -> Conv {
        self
    }
}

/// A convolution's shapes as constants (see [`ConvShape`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct ConvConst<
    const IC: usize,
    const OC: usize,
    const H: usize,
    const W: usize,
    const K: usize,
    const PAD: usize,
>;

impl<
    const IC: usize,
    const OC: usize,
    const H: usize,
    const W: usize,
    const K: usize,
    const PAD: usize,
> ConvShape for ConvConst<IC, OC, H, W, K, PAD>
{
    #[inline(always)]
    fn get(self) -> Conv {
        Conv {
            ic: IC,
            oc: OC,
            h: H,
            w: W,
            k: K,
            pad: PAD,
        }
    }
}

/// Shapes of a max-pooling: `c` channels of `h`×`w` in, window `k`, stride `stride`, ceil
/// mode, no padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    /// Channels.
    pub c: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Window side.
    pub k: usize,
    /// Stride.
    pub stride: usize,
}

impl Pool {
    /// Output side for an input side `n` in ceil mode (a last window that starts inside
    /// the input counts, as PyTorch's and burn's ceil mode without padding).
    pub const fn out_side(&self, n: usize) -> usize {
        let steps = (n.saturating_sub(self.k)).div_ceil(self.stride) + 1;
        // The last window must start inside the input.
        if (steps - 1) * self.stride >= n {
            steps - 1
        } else {
            steps
        }
    }

    /// Output height.
    pub const fn oh(&self) -> usize {
        self.out_side(self.h)
    }

    /// Output width.
    pub const fn ow(&self) -> usize {
        self.out_side(self.w)
    }
}

/// Shapes and constants of a local response normalisation over `c` channels of `hw` pixels:
/// `y = x · (k + α·Σ_{size channels} x²)^−0.75` (Chainer's α, not divided by `size`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lrn {
    /// Channels.
    pub c: usize,
    /// Pixels per channel (height × width).
    pub hw: usize,
    /// Channels in the window (odd).
    pub size: usize,
    /// α.
    pub alpha: f32,
    /// k.
    pub k: f32,
}

/// Shapes of a fully connected layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fc {
    /// Input features.
    pub inputs: usize,
    /// Output features.
    pub outputs: usize,
}

/// Panics with the kernel's name when a buffer is shorter than its shapes need: a bug of
/// the caller, which sizes buffers from the same shapes.
#[track_caller]
fn check_len(kernel: &str, what: &str, len: usize, need: usize) {
    assert!(
        len >= need,
        "{kernel}: {what} has {len} elements, the shapes need {need}"
    );
}

/// Converts a plain `[C][H][W]` map to the blocked layout.
pub fn to_blocked(c: usize, hw: usize, src: &[f32], dst: &mut [f32]) {
    let b = block_of(c);
    check_len("to_blocked", "source", src.len(), c * hw);
    check_len("to_blocked", "destination", dst.len(), c * hw);
    for ch in 0..c {
        let (g, lane) = (ch / b, ch % b);
        for (p, &v) in src[ch * hw..(ch + 1) * hw].iter().enumerate() {
            dst[(g * hw + p) * b + lane] = v;
        }
    }
}

/// Converts a blocked map back to plain `[C][H][W]`.
pub fn from_blocked(c: usize, hw: usize, src: &[f32], dst: &mut [f32]) {
    let b = block_of(c);
    check_len("from_blocked", "source", src.len(), c * hw);
    check_len("from_blocked", "destination", dst.len(), c * hw);
    for ch in 0..c {
        let (g, lane) = (ch / b, ch % b);
        for (p, v) in dst[ch * hw..(ch + 1) * hw].iter_mut().enumerate() {
            *v = src[(g * hw + p) * b + lane];
        }
    }
}

/// Packs convolution weights `[oc][ic][k][k]` (PyTorch's layout) as the kernels read them:
/// `[oc/16][ic][k][k][16]`, output channels padded to a multiple of 16 with zeros.
pub fn pack_conv(shape: Conv, weights: &[f32]) -> Vec<f32> {
    let Conv { ic, oc, k, .. } = shape;
    check_len("pack_conv", "weights", weights.len(), oc * ic * k * k);
    let mut packed = vec![0.0; shape.packed_len()];
    for o in 0..oc {
        let (ob, lane) = (o / BLOCK, o % BLOCK);
        for i in 0..ic {
            for t in 0..k * k {
                packed[((ob * ic + i) * k * k + t) * BLOCK + lane] =
                    weights[(o * ic + i) * k * k + t];
            }
        }
    }
    packed
}

/// Packs fully connected weights `[outputs][inputs]` (PyTorch's layout) transposed to
/// `[inputs][outputs]`, the rows in the order the input is stored: after a feature map of
/// shape `[c, h, w]` (`map`), its blocked order; after a vector (`None`), plain.
pub fn pack_fc(shape: Fc, map: Option<[usize; 3]>, weights: &[f32]) -> Vec<f32> {
    let Fc { inputs, outputs } = shape;
    check_len("pack_fc", "weights", weights.len(), inputs * outputs);
    // Storage position → logical (C, H, W) feature index.
    let logical: Vec<usize> = match map {
        Some([c, h, w]) if c * h * w == inputs => {
            let (b, hw) = (block_of(c), h * w);
            let mut order = vec![0; inputs];
            for ch in 0..c {
                for p in 0..hw {
                    order[((ch / b) * hw + p) * b + ch % b] = ch * hw + p;
                }
            }
            order
        }
        _ => (0..inputs).collect(),
    };
    let mut packed = vec![0.0; inputs * outputs];
    for (s, &i) in logical.iter().enumerate() {
        for o in 0..outputs {
            packed[s * outputs + o] = weights[o * inputs + i];
        }
    }
    packed
}

/// Copies a blocked map of `shape.ic` channels into the zero-padded buffer the convolution
/// reads (`[ic/B][h + 2·pad][w + 2·pad][B]`); the border is zeroed here.
pub fn pad<S: ConvShape>(shape: S, src: &[f32], dst: &mut [f32]) {
    let s = shape.get();
    let b = block_of(s.ic);
    let (hp, wp) = (s.hp(), s.wp());
    check_len("pad", "source", src.len(), s.ic * s.h * s.w);
    check_len("pad", "destination", dst.len(), s.padded_len());
    let dst = &mut dst[..s.padded_len()];
    if s.pad > 0 {
        dst.fill(0.0);
    }
    for g in 0..s.ic / b {
        for y in 0..s.h {
            let from = ((g * s.h + y) * s.w) * b;
            let to = ((g * hp + y + s.pad) * wp + s.pad) * b;
            dst[to..to + s.w * b].copy_from_slice(&src[from..from + s.w * b]);
        }
    }
}

/// Convolution of a padded blocked input ([`pad`]) with packed weights ([`pack_conv`]) and
/// bias, ReLU applied when `relu`; writes the blocked output.
pub fn conv2d<S: ConvShape>(
    isa: Isa,
    shape: S,
    relu: bool,
    weights: &[f32],
    bias: &[f32],
    padded: &[f32],
    out: &mut [f32],
) {
    let s = shape.get();
    assert!(
        s.keeps_size(),
        "conv2d: {s:?} does not keep the size (k = 2·pad + 1)"
    );
    let [packed, padded_len, out_len] = s
        .lens()
        .unwrap_or_else(|| panic!("conv2d: the buffers of {s:?} overflow usize"));
    check_len("conv2d", "weights", weights.len(), packed);
    check_len("conv2d", "bias", bias.len(), s.oc);
    check_len("conv2d", "input", padded.len(), padded_len);
    check_len("conv2d", "output", out.len(), out_len);
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 if s.tiles() && Isa::Avx512.supported() => {
            x86::conv2d_avx512(shape, relu, weights, bias, padded, out)
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512 if s.tiles() && Isa::Avx2.supported() => {
            x86::conv2d_avx2(shape, relu, weights, bias, padded, out)
        }
        _ => portable::conv2d(shape, relu, weights, bias, padded, out),
    }
}

/// Runs kernel `$body` compiled for `isa` (the portable body, compiled once per instruction
/// set in module `x86`), or the portable one.
macro_rules! multiversion {
    ($isa:expr, $body:ident($($arg:expr),* $(,)?)) => {
        match $isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 if Isa::Avx512.supported() => x86::avx512::$body($($arg),*),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 | Isa::Avx512 if Isa::Avx2.supported() => x86::avx2::$body($($arg),*),
            _ => portable::$body::<false>($($arg),*),
        }
    };
}

/// Max-pooling of a blocked map; writes the blocked output (`shape.c × oh × ow`).
pub fn max_pool(isa: Isa, shape: Pool, src: &[f32], out: &mut [f32]) {
    check_len("max_pool", "input", src.len(), shape.c * shape.h * shape.w);
    check_len(
        "max_pool",
        "output",
        out.len(),
        shape.c * shape.oh() * shape.ow(),
    );
    multiversion!(isa, max_pool(shape, src, out))
}

/// Local response normalisation of a blocked map in place; `scratch` holds at least
/// [`lrn_scratch_len`] elements.
pub fn lrn(isa: Isa, shape: Lrn, x: &mut [f32], scratch: &mut [f32]) {
    check_len("lrn", "map", x.len(), shape.c * shape.hw);
    check_len("lrn", "scratch", scratch.len(), lrn_scratch_len(shape));
    multiversion!(isa, lrn(shape, x, scratch))
}

/// Fully connected layer on packed weights ([`pack_fc`]): `out = bias + W·x`, ReLU applied
/// when `relu`.
pub fn fc(
    isa: Isa,
    shape: Fc,
    relu: bool,
    weights: &[f32],
    bias: &[f32],
    x: &[f32],
    out: &mut [f32],
) {
    check_len("fc", "weights", weights.len(), shape.inputs * shape.outputs);
    check_len("fc", "bias", bias.len(), shape.outputs);
    check_len("fc", "input", x.len(), shape.inputs);
    check_len("fc", "output", out.len(), shape.outputs);
    multiversion!(isa, fc(shape, relu, weights, bias, x, out))
}

/// ReLU in place.
pub fn relu(isa: Isa, x: &mut [f32]) {
    multiversion!(isa, relu(x))
}
