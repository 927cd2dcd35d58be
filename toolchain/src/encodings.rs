//! Bytes on the wire (DESIGN.md §12): what each encoding of the tensor at a split costs and
//! keeps, measured on a model and its test images, for the planner to choose (exit,
//! partition, encoding) from.
//!
//! For every exit and every partition `p` (0: the `u8` image, [`Encoding::INPUTS`]; `0 < p <
//! N`: the `f32` activation entering layer `p`, [`Encoding::ACTIVATIONS`]) it measures
//!
//! * the payload's **bytes** per image (median and 95th percentile);
//! * the exit's **accuracy** when the activation goes through that encoding and back;
//! * **encode** (device) and **decode** (edge) time as lines in the tensor's element count;
//!
//! and, for the record, zstd levels 1 and 3, zstd with a reused context and lz4 on the same
//! bodies, and the image as PNG against `u8+zstd`.
//!
//! The codec here ([`encode`], [`decode`]) does what the device and the edge do with a
//! tensor: the body of [`runtime::wire::encoding`], its lossless stage, and on the edge the
//! bounded inflate, the quantisation's scale check, the widening to `f32` and the
//! finiteness check.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rayon::prelude::*;
use runtime::engine::{Activation, Engine};
use runtime::model::entropy::argmax;
use runtime::model::layers::LayerKind;
use runtime::model::{ModelError, normalize};
use runtime::slowdown::Repeats;
use runtime::wire::encoding::{self, Encoding, Values};
use runtime::wire::protocol;
use serde::{Deserialize, Serialize};

use crate::profile::Role;

/// The values kinds of an activation, in [`Encoding::ACTIVATIONS`] order.
pub const ACTIVATION_VALUES: [Values; 6] = [
    Values::F32,
    Values::F16,
    Values::Q8,
    Values::Q8c,
    Values::Q4,
    Values::Q4c,
];

/// The values kinds that change an activation (the accuracy is measured for each).
const LOSSY: [Values; 5] = [
    Values::F16,
    Values::Q8,
    Values::Q8c,
    Values::Q4,
    Values::Q4c,
];

/// Images per batch when timing the input's encodings (the image has one size; batches of
/// several real images give the line its slope).
const INPUT_BATCHES: [usize; 5] = [1, 2, 4, 8, 16];

/// Why a measurement failed.
#[derive(Debug, thiserror::Error)]
pub enum MeasureError {
    /// The engine refused a slice.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// A payload did not decode (a bug in the codec: it decodes what it encoded).
    #[error("decoding {encoding} failed: {why}")]
    Codec {
        /// The encoding.
        encoding: Encoding,
        /// The decoder's message.
        why: String,
    },
    /// The images and labels do not fit the model's input.
    #[error("{0}")]
    Input(String),
    /// The PNG encoder failed.
    #[error("PNG: {0}")]
    Png(String),
}

/// The body of a tensor of `shape` (batch excluded) as `values`, before the lossless stage
/// (`u8` takes the values as the image's pixels): the protocol's encoder.
pub fn encode_body(values: Values, x: &[f32], shape: &[usize]) -> Vec<u8> {
    encode(Encoding::new(values, false), x, shape)
}

/// What the device sends: the protocol's payload for `encoding`.
pub fn encode(encoding: Encoding, x: &[f32], shape: &[usize]) -> Vec<u8> {
    protocol::encode_tensor(x, shape, encoding)
}

/// What the edge does with a body of a tensor of `shape`: the protocol's decoder (reads
/// it, checks a quantised tensor's scales, widens it to `f32`, refuses a non-finite value).
pub fn decode_body(values: Values, body: &[u8], shape: &[usize]) -> Result<Vec<f32>, String> {
    decode(Encoding::new(values, false), body, shape)
}

/// [`decode_body`] after the bounded inflate when `encoding.lossless`.
pub fn decode(encoding: Encoding, payload: &[u8], shape: &[usize]) -> Result<Vec<f32>, String> {
    protocol::decode_tensor(payload, shape, encoding).map_err(|e| e.to_string())
}

/// The image as the device sends it at partition 0: the pixels, compressed when
/// `encoding.lossless`.
fn encode_input(encoding: Encoding, pixels: &[u8]) -> Vec<u8> {
    if encoding.lossless {
        encoding::compress(pixels)
    } else {
        pixels.to_vec()
    }
}

/// What the edge does with an image of `len` pixels: inflates it when compressed and
/// normalises it to the model's input.
fn decode_input(
    encoding: Encoding,
    payload: &[u8],
    len: usize,
    (mean, std): (&[f32], &[f32]),
) -> Result<Vec<f32>, String> {
    let inflated;
    let pixels = if encoding.lossless {
        inflated = encoding::decompress(payload, len).map_err(|e| e.to_string())?;
        &inflated
    } else {
        payload
    };
    Ok(normalize(pixels, mean, std))
}

/// The model and the test images a measurement runs on.
#[derive(Debug, Clone, Copy)]
pub struct Workload<'a> {
    /// Runs slices of the exit chains (its table gives the exits and shapes).
    pub engine: &'a dyn Engine,
    /// The images' `u8` pixels, `[N, C, H, W]` row-major.
    pub pixels: &'a [u8],
    /// Their labels.
    pub labels: &'a [u8],
    /// Normalisation the device applies before layer 0 (per channel, 0–1 scale).
    pub mean: &'a [f32],
    /// Its standard deviations.
    pub std: &'a [f32],
}

impl Workload<'_> {
    /// Pixels per image.
    fn image_len(&self) -> usize {
        self.engine.table().input.iter().product()
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there is no image.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The pixels of image `i`.
    fn image(&self, i: usize) -> &[u8] {
        let len = self.image_len();
        &self.pixels[i * len..(i + 1) * len]
    }

    /// Image `i` normalised, as the input of layer 0 (batch 1).
    fn input(&self, i: usize) -> Result<Activation, ModelError> {
        let mut dims = vec![1];
        dims.extend(&self.engine.table().input);
        Activation::from_values(normalize(self.image(i), self.mean, self.std), &dims)
    }

    fn check(&self) -> Result<(), MeasureError> {
        let len = self.image_len();
        let channels = self.engine.table().input.first().copied().unwrap_or(0);
        if self.is_empty() || self.pixels.len() != len * self.len() {
            return Err(MeasureError::Input(format!(
                "{} pixels for {} labels: the model takes {len} pixels per image",
                self.pixels.len(),
                self.len()
            )));
        }
        if self.mean.len() != channels || self.std.len() != channels {
            return Err(MeasureError::Input(format!(
                "normalisation for {} channels, the model takes {channels}",
                self.mean.len()
            )));
        }
        Ok(())
    }
}

/// The split points of the model's exits, and which of them hold the same tensor: an
/// exit whose first `p` layers are another's (the trunk, shared by all exits) enters layer
/// `p` with that exit's activation.
#[derive(Debug, Clone)]
struct Splits {
    /// Exit numbers, in table order.
    exits: Vec<usize>,
    /// `[e][p]`: the shape entering layer `p` of exit `exits[e]` (batch excluded).
    shapes: Vec<Vec<Vec<usize>>>,
    /// `[e][p]`: the first exit (index, `≤ e`) whose chain starts with the same `p` layers.
    owner: Vec<Vec<usize>>,
    /// `[e][p]`: layer `p` of exit `exits[e]` is a ReLU, so the device sends `relu(x)`
    /// (the edge's result is the same; `runtime::device` does it).
    enters_relu: Vec<Vec<bool>>,
}

impl Splits {
    fn new(engine: &dyn Engine) -> Self {
        let specs = &engine.table().exits;
        let names = |e: usize, p: usize| specs[e].layers[..p].iter().map(|l| &l.name);
        let owner = (0..specs.len())
            .map(|e| {
                (0..specs[e].len())
                    .map(|p| {
                        (0..e)
                            .find(|&f| p < specs[f].len() && names(f, p).eq(names(e, p)))
                            .unwrap_or(e)
                    })
                    .collect()
            })
            .collect();
        Self {
            exits: specs.iter().map(|s| s.exit).collect(),
            shapes: specs
                .iter()
                .map(|s| {
                    (0..=s.len())
                        .map(|p| s.boundary_shape(p).to_vec())
                        .collect()
                })
                .collect(),
            owner,
            enters_relu: specs
                .iter()
                .map(|s| s.layers.iter().map(|l| l.kind == LayerKind::Relu).collect())
                .collect(),
        }
    }

    /// The tensor the device sends at partition `p` of exit index `e` when `x` enters it:
    /// `relu(x)` where the edge's first layer is a ReLU, else `x`.
    fn sent<'x>(&self, e: usize, p: usize, x: &'x [f32]) -> std::borrow::Cow<'x, [f32]> {
        if self.enters_relu[e].get(p).copied().unwrap_or(false) {
            x.iter().map(|&v| v.max(0.0)).collect::<Vec<f32>>().into()
        } else {
            x.into()
        }
    }

    /// Layers of exit index `e`.
    fn len(&self, e: usize) -> usize {
        self.shapes[e].len() - 1
    }

    /// Every exit's activations for input `x`: `[e][p]` enters layer `p` (`p = N`: the
    /// logits). Each tensor shared between exits is computed once.
    fn activations(
        &self,
        engine: &dyn Engine,
        x: Activation,
    ) -> Result<Vec<Vec<Arc<Activation>>>, ModelError> {
        let x = Arc::new(x);
        let mut all: Vec<Vec<Arc<Activation>>> = Vec::with_capacity(self.exits.len());
        for (e, &exit) in self.exits.iter().enumerate() {
            let mut chain = vec![Arc::clone(&x)];
            for p in 1..=self.len(e) {
                let owner = self.owner[e].get(p).copied().unwrap_or(e);
                let next = if owner < e {
                    Arc::clone(&all[owner][p])
                } else {
                    Arc::new(engine.forward_slice(exit, p - 1..p, &chain[p - 1])?)
                };
                chain.push(next);
            }
            all.push(chain);
        }
        Ok(all)
    }

    /// The `(e, p)` of every distinct activation (`0 < p < N`), in table order.
    fn distinct(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        (0..self.exits.len())
            .flat_map(move |e| (1..self.len(e)).map(move |p| (e, p)))
            .filter(|&(e, p)| self.owner[e][p] == e)
    }
}

/// One image's results.
#[derive(Debug, Clone, Default)]
struct ImageResult {
    /// `[e]`: whether the exit's plain prediction is right.
    plain: Vec<bool>,
    /// `[e][p][k]`: whether it is right with the activation at `p` through `LOSSY[k]`.
    lossy: Vec<Vec<[bool; LOSSY.len()]>>,
    /// Compressed sizes, when this image's bytes are measured.
    bytes: Option<ImageBytes>,
}

/// One image's compressed sizes.
#[derive(Debug, Clone, Default)]
struct ImageBytes {
    /// The image through zstd.
    input: u32,
    /// `[e][p][k]`: the activation's body as `ACTIVATION_VALUES[k]` through zstd (only
    /// where `e` owns the activation).
    activations: Vec<Vec<[u32; ACTIVATION_VALUES.len()]>>,
}

/// Runs one image: every exit's chain, every lossy encoding at every split (and the rest of
/// the chain after it), and the compressed sizes when `bytes`.
fn measure_image(
    workload: &Workload<'_>,
    splits: &Splits,
    i: usize,
    bytes: bool,
) -> Result<ImageResult, MeasureError> {
    let engine = workload.engine;
    let label = usize::from(workload.labels[i]);
    let acts = splits.activations(engine, workload.input(i)?)?;
    let mut result = ImageResult {
        plain: acts
            .iter()
            .map(|chain| argmax(chain[chain.len() - 1].values()) == label)
            .collect(),
        lossy: splits
            .shapes
            .iter()
            .map(|s| vec![[false; LOSSY.len()]; s.len() - 1])
            .collect(),
        bytes: bytes.then(|| ImageBytes {
            input: encoding::compress(workload.image(i)).len() as u32,
            activations: splits
                .shapes
                .iter()
                .map(|s| vec![[0; ACTIVATION_VALUES.len()]; s.len() - 1])
                .collect(),
        }),
    };
    for (e, (&exit, chain)) in splits.exits.iter().zip(&acts).enumerate() {
        let n = splits.len(e);
        for (p, x) in chain.iter().enumerate().take(n).skip(1) {
            let shape = &splits.shapes[e][p];
            let owned = splits.owner[e][p] == e;
            let sent = splits.sent(e, p, x.values());
            for (k, values) in ACTIVATION_VALUES.into_iter().enumerate() {
                // Per-channel quantisation needs channels (the protocol refuses it on vectors).
                if !Encoding::new(values, false).applies_to(shape) {
                    continue;
                }
                let body = encode_body(values, &sent, shape);
                if let Some(b) = result.bytes.as_mut().filter(|_| owned) {
                    b.activations[e][p][k] = encoding::compress(&body).len() as u32;
                }
                let Some(l) = LOSSY.iter().position(|&v| v == values) else {
                    continue;
                };
                let back =
                    decode_body(values, &body, shape).map_err(|why| MeasureError::Codec {
                        encoding: Encoding::new(values, false),
                        why,
                    })?;
                let y = Activation::from_values(back, x.dims())?;
                let logits = engine.forward_slice(exit, p..n, &y)?;
                result.lossy[e][p][l] = argmax(logits.values()) == label;
            }
        }
    }
    Ok(result)
}

/// Where a long measurement reports how far it is.
pub trait Progress: Sync {
    /// A new stage of `len` steps begins.
    fn stage(&self, name: &str, len: u64);
    /// One step of the current stage is done.
    fn step(&self);
}

/// No progress reports.
impl Progress for () {
    fn stage(&self, _: &str, _: u64) {}
    fn step(&self) {}
}

/// How much to measure.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// The first this many images' payloads are measured (accuracy uses every image).
    pub bytes_images: usize,
    /// The first this many images' activations feed the lossless comparison.
    pub comparison_images: usize,
    /// Repeats of each encode and decode timing (the median is kept).
    pub repeats: Repeats,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            bytes_images: usize::MAX,
            comparison_images: 500,
            repeats: Repeats {
                warmup: 3,
                min: 11,
                max: 101,
                budget: Duration::from_millis(40),
            },
        }
    }
}

/// Which model and data a measurement is of.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Source {
    /// The data set (test split).
    pub dataset: String,
    /// The weights file's name.
    pub weights_file: String,
    /// Its digest (as in the plan).
    pub weights_digest: String,
}

/// Everything one measurement found (written as `encodings.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EncodingMeasurements {
    /// The model and data.
    pub source: Source,
    /// Test images the accuracy is counted on.
    pub images: usize,
    /// The first this many of them had their payloads measured.
    pub bytes_images: usize,
    /// The first this many fed the lossless comparison.
    pub comparison_images: usize,
    /// Threads the accuracy ran on (the rayon pool's).
    pub threads: usize,
    /// The zstd level of the lossless stage.
    pub zstd_level: i32,
    /// Each exit's accuracy without any lossy encoding (on this engine).
    pub plain: Vec<ExitAccuracy>,
    /// Every (exit, partition, encoding).
    pub entries: Vec<EncodingEntry>,
    /// Encode (device) and decode (edge) time per encoding, on this machine.
    pub timing: Vec<EncodingTiming>,
    /// Lossless stages compared on the same bodies (for the record).
    pub lossless_comparison: Vec<LosslessComparison>,
    /// The image's encodings, and PNG for the record.
    pub input: InputBytes,
}

/// An exit's correct answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitAccuracy {
    /// Exit.
    pub exit: usize,
    /// Right answers.
    pub correct: u64,
    /// Images.
    pub total: u64,
}

/// One (exit, partition, encoding).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EncodingEntry {
    /// Exit (1-based).
    pub exit: usize,
    /// Partition: the tensor entering layer `partition` crosses the wire.
    pub partition: usize,
    /// How it is written.
    pub encoding: Encoding,
    /// Its elements (batch 1).
    pub elements: u64,
    /// Median payload bytes per image (nearest rank).
    pub bytes_median: u64,
    /// 95th percentile of the payload bytes (nearest rank).
    pub bytes_p95: u64,
    /// Test images the exit answers right with this encoding at this partition.
    pub correct: u64,
    /// Test images.
    pub total: u64,
}

impl EncodingEntry {
    /// Fraction answered right.
    pub fn accuracy(&self) -> f64 {
        self.correct as f64 / self.total.max(1) as f64
    }
}

/// Time of one side of an encoding: `ms = intercept_ms + slope_ms_per_element · elements`,
/// an ordinary least-squares line through the medians measured on real tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EncodingTiming {
    /// The encoding.
    pub encoding: Encoding,
    /// Device: encode (quantise or convert, compress); edge: decode (inflate, read,
    /// widen to `f32`, check finiteness; normalise the image).
    pub role: Role,
    /// Milliseconds at zero elements.
    pub intercept_ms: f64,
    /// Milliseconds per element.
    pub slope_ms_per_element: f64,
    /// Coefficient of determination on the measured points.
    pub r2: f64,
    /// Measured tensors.
    pub points: usize,
    /// Smallest tensor, elements.
    pub min_elements: u64,
    /// Largest tensor, elements.
    pub max_elements: u64,
}

impl EncodingTiming {
    /// Predicted milliseconds for a tensor of `elements`.
    pub fn predict_ms(&self, elements: u64) -> f64 {
        self.intercept_ms + self.slope_ms_per_element * elements as f64
    }
}

/// A lossless stage compared in the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Lossless {
    /// zstd level 1, a new context per call (what the product does).
    #[serde(rename = "zstd-1")]
    Zstd1,
    /// zstd level 1, one context reused for every call.
    #[serde(rename = "zstd-1-reused")]
    Zstd1Reused,
    /// zstd level 3, a new context per call.
    #[serde(rename = "zstd-3")]
    Zstd3,
    /// lz4 block format (`lz4_flex`).
    #[serde(rename = "lz4")]
    Lz4,
}

impl Lossless {
    /// Every stage compared.
    pub const ALL: [Lossless; 4] = [Self::Zstd1, Self::Zstd1Reused, Self::Zstd3, Self::Lz4];

    /// Name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Zstd1 => "zstd-1",
            Self::Zstd1Reused => "zstd-1 (reused context)",
            Self::Zstd3 => "zstd-3",
            Self::Lz4 => "lz4",
        }
    }
}

/// One lossless stage on every body of one values kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LosslessComparison {
    /// The bodies' values kind.
    pub values: Values,
    /// The stage.
    pub lossless: Lossless,
    /// Bodies compressed.
    pub tensors: u64,
    /// Their bytes.
    pub raw_bytes: u64,
    /// Compressed.
    pub compressed_bytes: u64,
    /// Time compressing them all, ms.
    pub compress_ms: f64,
    /// Time decompressing them all, ms.
    pub decompress_ms: f64,
}

impl LosslessComparison {
    /// Raw over compressed bytes.
    pub fn ratio(&self) -> f64 {
        self.raw_bytes as f64 / self.compressed_bytes.max(1) as f64
    }

    /// Compression speed, MB (10⁶ bytes) of input per second.
    pub fn compress_mb_s(&self) -> f64 {
        self.raw_bytes as f64 / 1e3 / self.compress_ms.max(1e-9)
    }

    /// Decompression speed, MB of output per second.
    pub fn decompress_mb_s(&self) -> f64 {
        self.raw_bytes as f64 / 1e3 / self.decompress_ms.max(1e-9)
    }

    /// Mean time per tensor to compress, send at `bandwidth_bps` and decompress, ms, with
    /// compression `device_slowdown` times slower than measured.
    pub fn ms_per_tensor(&self, bandwidth_bps: f64, device_slowdown: f64) -> f64 {
        let n = self.tensors.max(1) as f64;
        (device_slowdown * self.compress_ms + self.decompress_ms) / n
            + 8e3 * self.compressed_bytes as f64 / n / bandwidth_bps
    }
}

/// The image's payload sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputBytes {
    /// Raw pixels.
    pub raw: u64,
    /// Through zstd: median.
    pub zstd_median: u64,
    /// Through zstd: 95th percentile.
    pub zstd_p95: u64,
    /// As a PNG file (default compression): median.
    pub png_median: u64,
    /// As a PNG file (best compression, adaptive filters): median.
    pub png_best_median: u64,
}

/// Median and 95th percentile (nearest rank) of `values`.
pub fn median_p95(values: &mut [u64]) -> (u64, u64) {
    values.sort_unstable();
    let rank = |q: f64| {
        let n = values.len();
        if n == 0 {
            0
        } else {
            values[((q * n as f64).ceil() as usize).clamp(1, n) - 1]
        }
    };
    (rank(0.5), rank(0.95))
}

/// A least-squares line `y = intercept + slope · x`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Line {
    /// `y` at `x = 0`.
    pub intercept: f64,
    /// `dy/dx`.
    pub slope: f64,
    /// Coefficient of determination (1 when every `y` is equal and met).
    pub r2: f64,
}

/// The ordinary least-squares line through `points`; `None` with fewer than two distinct
/// `x`.
pub fn fit_line(points: &[(f64, f64)]) -> Option<Line> {
    let n = points.len() as f64;
    let (mx, my) = points
        .iter()
        .fold((0.0, 0.0), |(a, b), &(x, y)| (a + x / n, b + y / n));
    let sxx: f64 = points.iter().map(|&(x, _)| (x - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|&(x, y)| (x - mx) * (y - my)).sum();
    if points.len() < 2 || sxx <= 0.0 {
        return None;
    }
    let slope = sxy / sxx;
    let intercept = my - slope * mx;
    let ss_res: f64 = points
        .iter()
        .map(|&(x, y)| (y - intercept - slope * x).powi(2))
        .sum();
    let ss_tot: f64 = points.iter().map(|&(_, y)| (y - my).powi(2)).sum();
    let r2 = if ss_tot > 0.0 {
        1.0 - ss_res / ss_tot
    } else {
        1.0
    };
    Some(Line {
        intercept,
        slope,
        r2,
    })
}

/// Median ms of `run` under `repeats`.
fn time_ms<T>(repeats: Repeats, mut run: impl FnMut() -> T) -> f64 {
    repeats.median_ms(|| {
        let start = Instant::now();
        std::hint::black_box(run());
        start.elapsed()
    })
}

/// Measures everything on `workload` (see the module's documentation): accuracy on every
/// image (in parallel on the current rayon pool), bytes on the first
/// `settings.bytes_images`, then the lossless comparison and the timing on one thread.
pub fn measure(
    workload: &Workload<'_>,
    source: Source,
    settings: &Settings,
    progress: &dyn Progress,
) -> Result<EncodingMeasurements, MeasureError> {
    workload.check()?;
    let splits = Splits::new(workload.engine);
    let images = workload.len();
    let bytes_images = settings.bytes_images.clamp(1, images);
    progress.stage("accuracy and bytes", images as u64);
    let results: Vec<ImageResult> = (0..images)
        .into_par_iter()
        .map(|i| {
            let r = measure_image(workload, &splits, i, i < bytes_images);
            progress.step();
            r
        })
        .collect::<Result<_, _>>()?;
    let (plain, entries) = tally(workload, &splits, &results);
    let input = input_bytes(workload, &results, bytes_images, progress)?;
    let comparison_images = settings.comparison_images.clamp(1, images);
    let lossless_comparison = compare_lossless(workload, &splits, comparison_images, progress)?;
    let timing = time_codecs(workload, &splits, settings.repeats, progress)?;
    Ok(EncodingMeasurements {
        source,
        images,
        bytes_images,
        comparison_images,
        threads: rayon::current_num_threads(),
        zstd_level: encoding::ZSTD_LEVEL,
        plain,
        entries,
        timing,
        lossless_comparison,
        input,
    })
}

/// Counts the images' results into the per-exit accuracy and the entries.
fn tally(
    workload: &Workload<'_>,
    splits: &Splits,
    results: &[ImageResult],
) -> (Vec<ExitAccuracy>, Vec<EncodingEntry>) {
    let total = results.len() as u64;
    let count = |right: &dyn Fn(&ImageResult) -> bool| -> u64 {
        results.iter().filter(|r| right(r)).count() as u64
    };
    let measured: Vec<&ImageBytes> = results.iter().filter_map(|r| r.bytes.as_ref()).collect();
    let quantiles = |size: &dyn Fn(&ImageBytes) -> u32| -> (u64, u64) {
        median_p95(
            &mut measured
                .iter()
                .map(|b| u64::from(size(b)))
                .collect::<Vec<_>>(),
        )
    };
    let mut plain = Vec::new();
    let mut entries = Vec::new();
    for (e, &exit) in splits.exits.iter().enumerate() {
        let plain_correct = count(&|r| r.plain[e]);
        plain.push(ExitAccuracy {
            exit,
            correct: plain_correct,
            total,
        });
        let image_len = workload.image_len() as u64;
        for encoding in Encoding::INPUTS {
            let (bytes_median, bytes_p95) = if encoding.lossless {
                quantiles(&|b| b.input)
            } else {
                (image_len, image_len)
            };
            entries.push(EncodingEntry {
                exit,
                partition: 0,
                encoding,
                elements: image_len,
                bytes_median,
                bytes_p95,
                correct: plain_correct,
                total,
            });
        }
        for p in 1..splits.len(e) {
            let shape = &splits.shapes[e][p];
            let elements: usize = shape.iter().product();
            let owner = splits.owner[e][p];
            for encoding in Encoding::for_tensor(p, shape) {
                let k = ACTIVATION_VALUES
                    .iter()
                    .position(|&v| v == encoding.values)
                    .expect("an activation's values");
                let (bytes_median, bytes_p95) = if encoding.lossless {
                    quantiles(&|b| b.activations[owner][p][k])
                } else {
                    let body = encoding
                        .values
                        .body_len(elements, encoding.values.groups(shape))
                        .unwrap_or(usize::MAX) as u64;
                    (body, body)
                };
                let correct = match LOSSY.iter().position(|&v| v == encoding.values) {
                    Some(l) => count(&|r| r.lossy[e][p][l]),
                    None => plain_correct,
                };
                entries.push(EncodingEntry {
                    exit,
                    partition: p,
                    encoding,
                    elements: elements as u64,
                    bytes_median,
                    bytes_p95,
                    correct,
                    total,
                });
            }
        }
    }
    (plain, entries)
}

/// The image as PNG (`best`: best compression with adaptive filters) — channels
/// interleaved, as PNG stores them.
fn png(pixels: &[u8], shape: &[usize], best: bool) -> Result<usize, MeasureError> {
    use image::ImageEncoder;
    use image::codecs::png::{CompressionType, FilterType, PngEncoder};
    let [c, h, w] = *shape else {
        return Err(MeasureError::Png(format!(
            "the input {shape:?} is not an image"
        )));
    };
    let color = match c {
        1 => image::ExtendedColorType::L8,
        3 => image::ExtendedColorType::Rgb8,
        _ => return Err(MeasureError::Png(format!("{c} channels"))),
    };
    let plane = h * w;
    let interleaved: Vec<u8> = (0..plane * c)
        .map(|i| pixels[(i % c) * plane + i / c])
        .collect();
    let mut out = Vec::new();
    let encoder = if best {
        PngEncoder::new_with_quality(&mut out, CompressionType::Best, FilterType::Adaptive)
    } else {
        PngEncoder::new(&mut out)
    };
    encoder
        .write_image(&interleaved, w as u32, h as u32, color)
        .map_err(|e| MeasureError::Png(e.to_string()))?;
    Ok(out.len())
}

/// The image's sizes: raw, zstd (from the results), PNG.
fn input_bytes(
    workload: &Workload<'_>,
    results: &[ImageResult],
    images: usize,
    progress: &dyn Progress,
) -> Result<InputBytes, MeasureError> {
    progress.stage("PNG", images as u64);
    let shape = &workload.engine.table().input;
    let sizes: Vec<(u64, u64)> = (0..images)
        .into_par_iter()
        .map(|i| {
            let sizes = (
                png(workload.image(i), shape, false)? as u64,
                png(workload.image(i), shape, true)? as u64,
            );
            progress.step();
            Ok(sizes)
        })
        .collect::<Result<_, MeasureError>>()?;
    let mut zstd: Vec<u64> = results
        .iter()
        .filter_map(|r| r.bytes.as_ref().map(|b| u64::from(b.input)))
        .collect();
    let (zstd_median, zstd_p95) = median_p95(&mut zstd);
    Ok(InputBytes {
        raw: workload.image_len() as u64,
        zstd_median,
        zstd_p95,
        png_median: median_p95(&mut sizes.iter().map(|s| s.0).collect::<Vec<_>>()).0,
        png_best_median: median_p95(&mut sizes.iter().map(|s| s.1).collect::<Vec<_>>()).0,
    })
}

/// A lossless stage's two directions, with whatever state it keeps between calls.
struct Stage {
    kind: Lossless,
    compressor: zstd::bulk::Compressor<'static>,
    decompressor: zstd::bulk::Decompressor<'static>,
}

impl Stage {
    fn new(kind: Lossless) -> std::io::Result<Self> {
        Ok(Self {
            kind,
            compressor: zstd::bulk::Compressor::new(encoding::ZSTD_LEVEL)?,
            decompressor: zstd::bulk::Decompressor::new()?,
        })
    }

    fn compress(&mut self, body: &[u8]) -> Vec<u8> {
        match self.kind {
            Lossless::Zstd1 => encoding::compress(body),
            Lossless::Zstd3 => zstd::bulk::compress(body, 3).expect("zstd compresses in memory"),
            Lossless::Zstd1Reused => self
                .compressor
                .compress(body)
                .expect("zstd compresses in memory"),
            Lossless::Lz4 => lz4_flex::block::compress(body),
        }
    }

    fn decompress(&mut self, packed: &[u8], len: usize) -> Result<Vec<u8>, String> {
        match self.kind {
            Lossless::Zstd1 | Lossless::Zstd3 => {
                encoding::decompress(packed, len).map_err(|e| e.to_string())
            }
            Lossless::Zstd1Reused => {
                let mut out = Vec::with_capacity(len);
                self.decompressor
                    .decompress_to_buffer(packed, &mut out)
                    .map_err(|e| e.to_string())?;
                Ok(out)
            }
            Lossless::Lz4 => {
                let mut out = vec![0; len];
                let n = lz4_flex::block::decompress_into(packed, &mut out)
                    .map_err(|e| e.to_string())?;
                out.truncate(n);
                Ok(out)
            }
        }
    }
}

/// Every lossless stage on the bodies of every distinct activation of the first `images`
/// images, one call at a time on this thread; each round trip is checked.
fn compare_lossless(
    workload: &Workload<'_>,
    splits: &Splits,
    images: usize,
    progress: &dyn Progress,
) -> Result<Vec<LosslessComparison>, MeasureError> {
    let zstd_failed = |e: std::io::Error| MeasureError::Input(format!("zstd: {e}"));
    let mut stages: Vec<Stage> = Lossless::ALL
        .into_iter()
        .map(Stage::new)
        .collect::<Result<_, _>>()
        .map_err(zstd_failed)?;
    let mut rows: Vec<LosslessComparison> = ACTIVATION_VALUES
        .into_iter()
        .flat_map(|values| {
            Lossless::ALL.map(|lossless| LosslessComparison {
                values,
                lossless,
                tensors: 0,
                raw_bytes: 0,
                compressed_bytes: 0,
                compress_ms: 0.0,
                decompress_ms: 0.0,
            })
        })
        .collect();
    let distinct: Vec<(usize, usize)> = splits.distinct().collect();
    progress.stage("lossless stages", images as u64);
    for i in 0..images {
        let acts = splits.activations(workload.engine, workload.input(i)?)?;
        for &(e, p) in &distinct {
            for (k, values) in ACTIVATION_VALUES.into_iter().enumerate() {
                if !Encoding::new(values, false).applies_to(&splits.shapes[e][p]) {
                    continue;
                }
                let sent = splits.sent(e, p, acts[e][p].values());
                let body = encode_body(values, &sent, &splits.shapes[e][p]);
                for (s, stage) in stages.iter_mut().enumerate() {
                    let start = Instant::now();
                    let packed = std::hint::black_box(stage.compress(&body));
                    let compressed = start.elapsed();
                    let start = Instant::now();
                    let back = stage.decompress(&packed, body.len());
                    let decompressed = start.elapsed();
                    if back.as_deref() != Ok(body.as_slice()) {
                        return Err(MeasureError::Codec {
                            encoding: Encoding::new(values, true),
                            why: format!("{} did not round-trip", stage.kind.name()),
                        });
                    }
                    let row = &mut rows[k * Lossless::ALL.len() + s];
                    row.tensors += 1;
                    row.raw_bytes += body.len() as u64;
                    row.compressed_bytes += packed.len() as u64;
                    row.compress_ms += compressed.as_secs_f64() * 1e3;
                    row.decompress_ms += decompressed.as_secs_f64() * 1e3;
                }
            }
        }
        progress.step();
    }
    Ok(rows)
}

/// Fits a line to `(elements, ms)` points.
fn timing_fit(encoding: Encoding, role: Role, points: &[(u64, f64)]) -> EncodingTiming {
    let xy: Vec<(f64, f64)> = points.iter().map(|&(x, y)| (x as f64, y)).collect();
    let line = fit_line(&xy).unwrap_or(Line {
        intercept: xy.first().map_or(0.0, |p| p.1),
        slope: 0.0,
        r2: f64::NAN,
    });
    EncodingTiming {
        encoding,
        role,
        intercept_ms: line.intercept,
        slope_ms_per_element: line.slope,
        r2: line.r2,
        points: points.len(),
        min_elements: points.iter().map(|p| p.0).min().unwrap_or(0),
        max_elements: points.iter().map(|p| p.0).max().unwrap_or(0),
    }
}

/// Encode and decode times of every encoding on the first image's distinct activations
/// (every split size of the model) and on batches of 1–16 images for the input, on this
/// thread, fitted to lines.
fn time_codecs(
    workload: &Workload<'_>,
    splits: &Splits,
    repeats: Repeats,
    progress: &dyn Progress,
) -> Result<Vec<EncodingTiming>, MeasureError> {
    let acts = splits.activations(workload.engine, workload.input(0)?)?;
    let sent: Vec<(std::borrow::Cow<'_, [f32]>, &[usize])> = splits
        .distinct()
        .map(|(e, p)| {
            (
                splits.sent(e, p, acts[e][p].values()),
                splits.shapes[e][p].as_slice(),
            )
        })
        .collect();
    let tensors: Vec<(&[f32], &[usize])> = sent.iter().map(|(x, s)| (&x[..], *s)).collect();
    let batches: Vec<usize> = INPUT_BATCHES
        .into_iter()
        .filter(|&b| b <= workload.len())
        .collect();
    progress.stage(
        "encode and decode times",
        (Encoding::ACTIVATIONS.len() * tensors.len() + Encoding::INPUTS.len() * batches.len())
            as u64,
    );
    let failed = |encoding: Encoding| move |why: String| MeasureError::Codec { encoding, why };
    let mut fits = Vec::new();
    for encoding in Encoding::ACTIVATIONS {
        let (mut device, mut edge) = (Vec::new(), Vec::new());
        for &(x, shape) in tensors
            .iter()
            .filter(|(_, shape)| encoding.applies_to(shape))
        {
            let payload = encode(encoding, x, shape);
            decode(encoding, &payload, shape).map_err(failed(encoding))?;
            let elements = x.len() as u64;
            device.push((elements, time_ms(repeats, || encode(encoding, x, shape))));
            edge.push((
                elements,
                time_ms(repeats, || decode(encoding, &payload, shape)),
            ));
            progress.step();
        }
        fits.push(timing_fit(encoding, Role::Device, &device));
        fits.push(timing_fit(encoding, Role::Edge, &edge));
    }
    let normalization = (workload.mean, workload.std);
    for encoding in Encoding::INPUTS {
        let (mut device, mut edge) = (Vec::new(), Vec::new());
        for &batch in &batches {
            let pixels = &workload.pixels[..batch * workload.image_len()];
            let payload = encode_input(encoding, pixels);
            decode_input(encoding, &payload, pixels.len(), normalization)
                .map_err(failed(encoding))?;
            let elements = pixels.len() as u64;
            device.push((
                elements,
                time_ms(repeats, || encode_input(encoding, pixels)),
            ));
            edge.push((
                elements,
                time_ms(repeats, || {
                    decode_input(encoding, &payload, pixels.len(), normalization)
                }),
            ));
            progress.step();
        }
        fits.push(timing_fit(encoding, Role::Device, &device));
        fits.push(timing_fit(encoding, Role::Edge, &edge));
    }
    Ok(fits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use runtime::{BranchyAlexNetConfig, Isa, PackedNetwork};

    #[test]
    fn every_encoding_round_trips_within_its_precision() {
        let shape = [4, 3, 5];
        let x: Vec<f32> = (0..60)
            .map(|i| {
                if i % 4 == 0 {
                    0.0
                } else {
                    (i as f32 * 0.71).sin() * (1 + i / 15) as f32
                }
            })
            .collect();
        for encoding in Encoding::ACTIVATIONS {
            let payload = encode(encoding, &x, &shape);
            let body = encode_body(encoding.values, &x, &shape);
            let groups = encoding.values.groups(&shape);
            assert_eq!(body.len(), encoding.values.body_len(60, groups).unwrap());
            if encoding.lossless {
                assert_eq!(payload, encoding::compress(&body), "{encoding}");
            } else {
                assert_eq!(payload, body, "{encoding}");
            }
            let back = decode(encoding, &payload, &shape).unwrap();
            assert_eq!(back.len(), x.len());
            // Per-channel ranges are narrower than the tensor's: its steps are finer.
            let step = |i: usize| -> f32 {
                let range = |xs: &[f32]| {
                    xs.iter().fold(0.0f32, |m, v| m.max(*v))
                        - xs.iter().fold(0.0f32, |m, v| m.min(*v))
                };
                let top = ((1u32 << encoding.values.bits().unwrap_or(0)) - 1) as f32;
                if encoding.values.per_channel() {
                    range(&x[i / 15 * 15..i / 15 * 15 + 15]) / top
                } else {
                    range(&x) / top
                }
            };
            for (i, (a, b)) in x.iter().zip(&back).enumerate() {
                let tolerance = match encoding.values {
                    Values::F32 => 0.0,
                    Values::F16 => a.abs() / 1024.0 + 1e-7,
                    _ => step(i) / 2.0 + 1e-6,
                };
                assert!((a - b).abs() <= tolerance, "{encoding} {i}: {a} vs {b}");
                if *a == 0.0 {
                    assert_eq!(*b, 0.0, "{encoding} keeps zeros exact");
                }
            }
        }
        // Per channel is never coarser than per tensor here, and strictly finer somewhere.
        let error = |values| -> f32 {
            let back = decode(
                Encoding::new(values, false),
                &encode_body(values, &x, &shape),
                &shape,
            )
            .unwrap();
            x.iter().zip(&back).map(|(a, b)| (a - b).abs()).sum()
        };
        assert!(error(Values::Q8c) < error(Values::Q8));
        assert!(error(Values::Q4c) < error(Values::Q4));
        assert!(error(Values::Q8) < error(Values::Q4));
    }

    #[test]
    fn the_decoder_refuses_what_the_edge_refuses() {
        let shape = [2, 2];
        let f32_body = encode_body(Values::F32, &[1.0, f32::NAN, 0.0, 2.0], &shape);
        assert!(
            decode_body(Values::F32, &f32_body, &shape)
                .unwrap_err()
                .contains("finite")
        );
        assert!(
            decode_body(Values::F32, &f32_body[1..], &shape)
                .unwrap_err()
                .contains("bytes")
        );
        let mut q = encode_body(Values::Q8c, &[1.0, 2.0, 3.0, 4.0], &shape);
        q[..4].copy_from_slice(&(-1.0f32).to_le_bytes());
        assert!(
            decode_body(Values::Q8c, &q, &shape)
                .unwrap_err()
                .contains("scale")
        );
        // A finite scale whose codes overflow f32 when widened.
        let mut q = encode_body(Values::Q8, &[1.0, 2.0, 3.0, 4.0], &shape);
        q[..4].copy_from_slice(&3.0e38f32.to_le_bytes());
        assert!(
            decode_body(Values::Q8, &q, &shape)
                .unwrap_err()
                .contains("finite")
        );
        let bomb = encoding::compress(&vec![0u8; 1 << 16]);
        assert!(decode(Encoding::new(Values::F32, true), &bomb, &shape).is_err());
    }

    #[test]
    fn quantiles_and_lines() {
        let mut v: Vec<u64> = (1..=100).rev().collect();
        assert_eq!(median_p95(&mut v), (50, 95));
        assert_eq!(median_p95(&mut [7]), (7, 7));
        assert_eq!(median_p95(&mut []), (0, 0));
        let points: Vec<(f64, f64)> = (0..10)
            .map(|i| (i as f64 * 100.0, 0.5 + 0.002 * i as f64 * 100.0))
            .collect();
        let line = fit_line(&points).unwrap();
        assert!((line.intercept - 0.5).abs() < 1e-12 && (line.slope - 0.002).abs() < 1e-15);
        assert!((line.r2 - 1.0).abs() < 1e-12);
        let noisy = [(0.0, 1.0), (1.0, 0.0), (2.0, 1.0), (3.0, 0.0)];
        assert!(fit_line(&noisy).unwrap().r2 < 0.5);
        assert!(fit_line(&[(1.0, 2.0), (1.0, 3.0)]).is_none());
    }

    /// Random weights (seeded) and a few structured images: every number the measurement
    /// reports is recomputed here the direct way.
    #[test]
    fn a_small_measurement_agrees_with_running_the_chains_directly() {
        let device = runtime::Backend::Flex.device();
        let model = BranchyAlexNetConfig::new().init_seeded(&device, 7);
        let table = model.layer_table().clone();
        let engine = PackedNetwork::new(&table, &model.weights(), Isa::detect().unwrap()).unwrap();
        let images = 3;
        let len: usize = table.input.iter().product();
        let pixels: Vec<u8> = (0..images * len)
            .map(|i| {
                let (img, px) = (i / len, i % len);
                let (y, x) = (px / 32, px % 32);
                if (4 + img..28 - img).contains(&y) && (6..26).contains(&x) {
                    ((x * 9 + y * (img + 3) * 5) % 256) as u8
                } else {
                    0
                }
            })
            .collect();
        let labels = [3u8, 0, 7];
        let (mean, std) = ([0.2f32], [0.3f32]);
        let workload = Workload {
            engine: &engine,
            pixels: &pixels,
            labels: &labels,
            mean: &mean,
            std: &std,
        };
        let settings = Settings {
            bytes_images: 2,
            comparison_images: 1,
            repeats: Repeats::exactly(3),
        };
        let source = Source {
            dataset: "test".into(),
            weights_file: "seeded".into(),
            weights_digest: String::new(),
        };
        let m = measure(&workload, source, &settings, &()).unwrap();
        assert_eq!((m.images, m.bytes_images), (3, 2));
        let expected: usize = table
            .exits
            .iter()
            .map(|s| {
                (0..s.len())
                    .map(|p| Encoding::for_tensor(p, s.boundary_shape(p)).count())
                    .sum::<usize>()
            })
            .sum();
        assert_eq!(m.entries.len(), expected);

        let input = |i: usize| {
            Activation::from_values(
                normalize(&pixels[i * len..(i + 1) * len], &mean, &std),
                &[1, 1, 32, 32],
            )
            .unwrap()
        };
        for spec in &table.exits {
            let n = spec.len();
            let right = |logits: &Activation, i: usize| {
                u64::from(argmax(logits.values()) == usize::from(labels[i]))
            };
            let plain: u64 = (0..images)
                .map(|i| {
                    right(
                        &engine.forward_slice(spec.exit, 0..n, &input(i)).unwrap(),
                        i,
                    )
                })
                .sum();
            assert_eq!(m.plain[spec.exit - 1].correct, plain, "exit {}", spec.exit);
            for entry in m.entries.iter().filter(|e| e.exit == spec.exit) {
                let p = entry.partition;
                assert_eq!(entry.total, 3);
                assert!(entry.bytes_median <= entry.bytes_p95);
                // What the device sends at p, the direct way: the whole prefix in one slice,
                // through the ReLU when it is the edge's first layer.
                let relu = spec
                    .layers
                    .get(p)
                    .is_some_and(|l| l.kind == LayerKind::Relu);
                let xs: Vec<Activation> = (0..images)
                    .map(|i| {
                        let x = engine.forward_slice(spec.exit, 0..p, &input(i)).unwrap();
                        if relu {
                            let values = x.values().iter().map(|v| v.max(0.0)).collect();
                            Activation::from_values(values, x.dims()).unwrap()
                        } else {
                            x
                        }
                    })
                    .collect();
                let shape = spec.boundary_shape(p);
                let elements: usize = shape.iter().product();
                assert_eq!(entry.elements, elements as u64);
                if p == 0 {
                    assert_eq!(entry.correct, plain);
                    let mut sizes: Vec<u64> = (0..2)
                        .map(|i| {
                            if entry.encoding.lossless {
                                encoding::compress(&pixels[i * len..(i + 1) * len]).len() as u64
                            } else {
                                len as u64
                            }
                        })
                        .collect();
                    assert_eq!(
                        (entry.bytes_median, entry.bytes_p95),
                        median_p95(&mut sizes)
                    );
                    continue;
                }
                let mut sizes: Vec<u64> = xs[..2]
                    .iter()
                    .map(|x| encode(entry.encoding, x.values(), shape).len() as u64)
                    .collect();
                assert_eq!(
                    (entry.bytes_median, entry.bytes_p95),
                    median_p95(&mut sizes),
                    "exit {} p {p} {}",
                    spec.exit,
                    entry.encoding
                );
                if entry.encoding == Encoding::F32 {
                    assert_eq!(entry.bytes_median, 4 * elements as u64);
                }
                let correct: u64 = xs
                    .iter()
                    .enumerate()
                    .map(|(i, x)| {
                        let back = decode(
                            entry.encoding,
                            &encode(entry.encoding, x.values(), shape),
                            shape,
                        )
                        .unwrap();
                        let y = Activation::from_values(back, x.dims()).unwrap();
                        right(&engine.forward_slice(spec.exit, p..n, &y).unwrap(), i)
                    })
                    .sum();
                assert_eq!(
                    entry.correct, correct,
                    "exit {} p {p} {}",
                    spec.exit, entry.encoding
                );
            }
        }
        assert_eq!(m.input.raw, 1024);
        assert!(m.input.zstd_median < 1024 && m.input.png_median < 1024);
        assert!(m.input.png_best_median <= m.input.png_median + 16);
        // One image's distinct activations, each body through every stage.
        let splits = Splits::new(&engine);
        let distinct: Vec<(usize, usize)> = splits.distinct().collect();
        assert_eq!(
            m.lossless_comparison.len(),
            ACTIVATION_VALUES.len() * Lossless::ALL.len()
        );
        for row in &m.lossless_comparison {
            // q8c only where there are channels.
            let tensors = distinct
                .iter()
                .filter(|&&(e, p)| {
                    Encoding::new(row.values, false).applies_to(&splits.shapes[e][p])
                })
                .count() as u64;
            assert_eq!(row.tensors, tensors, "{:?}", row.values);
            assert!(row.compressed_bytes > 0 && row.compress_ms > 0.0);
        }
        let f32_raw: u64 = m
            .lossless_comparison
            .iter()
            .find(|r| r.values == Values::F32)
            .unwrap()
            .raw_bytes;
        let shapes = Splits::new(&engine);
        let expected_raw: u64 = shapes
            .distinct()
            .map(|(e, p)| 4 * shapes.shapes[e][p].iter().product::<usize>() as u64)
            .sum();
        assert_eq!(f32_raw, expected_raw);
        assert_eq!(
            m.timing.len(),
            2 * (Encoding::ACTIVATIONS.len() + Encoding::INPUTS.len())
        );
        for t in &m.timing {
            assert!(t.points >= 2, "{} {:?}", t.encoding, t.role);
            assert!(t.r2.is_finite());
        }
        // Compressing 128 KiB takes longer than compressing 64 values.
        let zstd = m
            .timing
            .iter()
            .find(|t| t.encoding == Encoding::new(Values::F32, true) && t.role == Role::Device)
            .unwrap();
        assert!(zstd.predict_ms(zstd.max_elements) > zstd.predict_ms(zstd.min_elements));
    }

    #[test]
    fn the_trunk_is_shared_and_branches_are_not() {
        let table = runtime::model::layers::b_alexnet(1, 10);
        let device = runtime::Backend::Flex.device();
        let model = BranchyAlexNetConfig::new().init_seeded(&device, 1);
        let engine = PackedNetwork::new(&table, &model.weights(), Isa::Portable).unwrap();
        let splits = Splits::new(&engine);
        for (e, spec) in table.exits.iter().enumerate() {
            for p in 1..spec.len() {
                let owner = splits.owner[e][p];
                assert!(owner <= e);
                // Shares a tensor only inside the trunk.
                assert_eq!(
                    owner < e,
                    e > 0 && p <= table.exits[e - 1].trunk_layers,
                    "exit {} p {p}",
                    spec.exit
                );
            }
        }
        // Exit 5's first split after conv1 is exit 1's.
        assert_eq!(splits.owner[4][1], 0);
        // Every split of every exit is either owned or shared: 21 trunk splits + branches.
        let branch_splits: usize = table.exits[..4]
            .iter()
            .map(|s| s.len() - 1 - s.trunk_layers)
            .sum();
        assert_eq!(
            splits.distinct().count(),
            table.exits[4].len() - 1 + branch_splits
        );
    }
}
