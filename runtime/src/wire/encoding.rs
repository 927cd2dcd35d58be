//! How a tensor is written on the wire (DESIGN.md §12, PROTOCOL.md "Encodings"): its values
//! as `f32`, `f16` or 8-bit affine quantisation (one scale and zero point for the tensor,
//! or one per channel), then optionally a lossless stage (zstd) over those bytes; the raw
//! image as `u8`, optionally through the same lossless stage.
//!
//! The device picks an [`Encoding`] per request (the plan says which wins for the link);
//! the edge decodes whatever it gets, and every decoder here is bounded: a compressed
//! stream may inflate to exactly the tensor's size, no more.

use std::cell::RefCell;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The values of a tensor on the wire (the protocol's `dtype` without its flag bit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Values {
    /// Unsigned bytes: the raw image (partition 0).
    U8,
    /// IEEE-754 binary32.
    F32,
    /// IEEE-754 binary16 (values beyond ±65504 saturate).
    F16,
    /// 8-bit affine quantisation, one scale and zero point for the whole tensor.
    Q8,
    /// 8-bit affine quantisation, one scale and zero point per channel (first dimension).
    Q8c,
}

impl Values {
    /// Every kind of values.
    pub const ALL: [Values; 5] = [Self::U8, Self::F32, Self::F16, Self::Q8, Self::Q8c];

    /// The name in plans, reports and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::U8 => "u8",
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::Q8 => "q8",
            Self::Q8c => "q8c",
        }
    }

    /// Whether decoding gives back other values than the device had.
    pub fn lossy(self) -> bool {
        matches!(self, Self::F16 | Self::Q8 | Self::Q8c)
    }

    /// Quantisation groups (scale/zero-point pairs) of a tensor of `shape`: 1 for `q8`,
    /// the first dimension for `q8c`, 0 for the rest.
    pub fn groups(self, shape: &[usize]) -> usize {
        match self {
            Self::Q8 => 1,
            Self::Q8c => shape.first().copied().unwrap_or(0),
            _ => 0,
        }
    }

    /// Whether a tensor of `ndim` dimensions can be written this way: `q8c` needs a channel
    /// dimension and at least one more (2 or more dimensions); the rest take any.
    pub fn fits(self, ndim: usize) -> bool {
        self != Self::Q8c || ndim >= 2
    }

    /// Bytes of the body (before the lossless stage) for `elements` values in `groups`
    /// groups: values × size, plus 5 bytes (f32 scale, u8 zero point) per group. `None` on
    /// overflow.
    pub fn body_len(self, elements: usize, groups: usize) -> Option<usize> {
        match self {
            Self::U8 => Some(elements),
            Self::F32 => elements.checked_mul(4),
            Self::F16 => elements.checked_mul(2),
            Self::Q8 | Self::Q8c => groups.checked_mul(5)?.checked_add(elements),
        }
    }
}

/// How one tensor crosses the wire: its values, and whether the lossless stage follows.
/// Written by its name (`q8c+zstd`) in plans and reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Encoding {
    /// How the values are written.
    pub values: Values,
    /// Whether the body is compressed by the lossless stage (zstd).
    pub lossless: bool,
}

impl Encoding {
    /// The raw image, as protocol version 1 sends it.
    pub const RAW: Encoding = Encoding::new(Values::U8, false);
    /// `f32` activations, as protocol version 1 sends them.
    pub const F32: Encoding = Encoding::new(Values::F32, false);

    /// Every encoding of an activation (`0 < p < N`).
    pub const ACTIVATIONS: [Encoding; 8] = [
        Encoding::new(Values::F32, false),
        Encoding::new(Values::F32, true),
        Encoding::new(Values::F16, false),
        Encoding::new(Values::F16, true),
        Encoding::new(Values::Q8, false),
        Encoding::new(Values::Q8, true),
        Encoding::new(Values::Q8c, false),
        Encoding::new(Values::Q8c, true),
    ];

    /// Every encoding of the input image (`p = 0`).
    pub const INPUTS: [Encoding; 2] = [
        Encoding::new(Values::U8, false),
        Encoding::new(Values::U8, true),
    ];

    /// `values`, then the lossless stage if `lossless`.
    pub const fn new(values: Values, lossless: bool) -> Self {
        Self { values, lossless }
    }

    /// The encodings of what is sent at partition `p` (the image at 0, an activation after).
    pub fn at_partition(p: usize) -> &'static [Encoding] {
        if p == 0 {
            &Self::INPUTS
        } else {
            &Self::ACTIVATIONS
        }
    }

    /// Whether a tensor of `shape` (per sample) can be sent this way: per-channel
    /// quantisation needs channels (two dimensions or more).
    pub fn applies_to(self, shape: &[usize]) -> bool {
        self.values != Values::Q8c || shape.len() >= 2
    }

    /// The encodings of the tensor of `shape` sent at partition `p`.
    pub fn for_tensor(p: usize, shape: &[usize]) -> impl Iterator<Item = Encoding> + '_ {
        Self::at_partition(p)
            .iter()
            .copied()
            .filter(move |e| e.applies_to(shape))
    }

    /// The name in plans and reports: `f32`, `q8c+zstd`, `u8+zstd`.
    pub fn name(self) -> String {
        self.to_string()
    }

    /// Whether the edge sees other values than the device had (the accuracy may change).
    pub fn lossy(self) -> bool {
        self.values.lossy()
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.values.name())?;
        if self.lossless {
            f.write_str("+zstd")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Encoding {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (values, lossless) = match s.strip_suffix("+zstd") {
            Some(values) => (values, true),
            None => (s, false),
        };
        Values::ALL
            .into_iter()
            .find(|v| v.name() == values)
            .map(|values| Encoding::new(values, lossless))
            .ok_or_else(|| {
                format!(
                    "unknown encoding `{s}`: expected u8, f32, f16, q8 or q8c, optionally followed by +zstd"
                )
            })
    }
}

impl Serialize for Encoding {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Encoding {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An 8-bit affine-quantised tensor: value `i` of group `g` is
/// `(values[i] − zero_points[g]) · scales[g]` (ONNX's `DequantizeLinear` with `uint8`).
/// Groups are equal, contiguous runs of `values` (channels, in C, H, W order).
#[derive(Debug, Clone, PartialEq)]
pub struct Quantized {
    /// Scale of each group: finite and > 0.
    pub scales: Vec<f32>,
    /// Zero point of each group: the code of 0.0.
    pub zero_points: Vec<u8>,
    /// The codes, row-major.
    pub values: Vec<u8>,
}

impl Quantized {
    /// Quantises `x` in `groups` equal contiguous groups (`groups` divides `x.len()`). Each
    /// group's range is stretched to include 0, so a ReLU's zeros stay exactly 0.
    pub fn quantize(x: &[f32], groups: usize) -> Self {
        assert!(
            groups > 0 && x.len().is_multiple_of(groups),
            "{groups} groups do not divide {} values",
            x.len()
        );
        let per_group = x.len() / groups;
        let mut scales = Vec::with_capacity(groups);
        let mut zero_points = Vec::with_capacity(groups);
        let mut values = Vec::with_capacity(x.len());
        for group in x.chunks_exact(per_group.max(1)).take(groups) {
            let (lo, hi) = group
                .iter()
                .fold((0.0f32, 0.0f32), |(lo, hi), &v| (lo.min(v), hi.max(v)));
            let range = hi - lo;
            let scale = if range > 0.0 && range.is_finite() {
                range / 255.0
            } else {
                1.0
            };
            let zero_point = (-lo / scale).round().clamp(0.0, 255.0);
            let inverse = 1.0 / scale;
            values.extend(
                group
                    .iter()
                    .map(|&v| (v * inverse + zero_point).round().clamp(0.0, 255.0) as u8),
            );
            scales.push(scale);
            zero_points.push(zero_point as u8);
        }
        Self {
            scales,
            zero_points,
            values,
        }
    }

    /// The group whose scale is not a finite number above 0, if any.
    pub fn bad_scale(&self) -> Option<(usize, f32)> {
        self.scales
            .iter()
            .copied()
            .enumerate()
            .find(|&(_, s)| !(s.is_finite() && s > 0.0))
    }

    /// The values the codes stand for, in order: `(q − zero point) · scale` in `f32`.
    pub fn values(&self) -> impl Iterator<Item = f32> + '_ {
        let groups = self.scales.len().max(1);
        let per_group = (self.values.len() / groups).max(1);
        self.values
            .chunks(per_group)
            .zip(self.scales.iter().zip(&self.zero_points))
            .flat_map(|(codes, (&scale, &zero))| {
                codes
                    .iter()
                    .map(move |&q| (f32::from(q) - f32::from(zero)) * scale)
            })
    }

    /// The values back as `f32`.
    pub fn dequantize(&self) -> Vec<f32> {
        self.values().collect()
    }

    /// The body on the wire: scales (f32, little-endian), zero points, codes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(5 * self.scales.len() + self.values.len());
        for s in &self.scales {
            out.extend_from_slice(&s.to_le_bytes());
        }
        out.extend_from_slice(&self.zero_points);
        out.extend_from_slice(&self.values);
        out
    }

    /// Reads a body of `groups` groups; the caller has checked its length
    /// (`5 · groups + elements`).
    pub fn from_bytes(bytes: &[u8], groups: usize) -> Self {
        let (scales, rest) = bytes.split_at(4 * groups);
        let (zero_points, values) = rest.split_at(groups);
        Self {
            scales: scales
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect(),
            zero_points: zero_points.to_vec(),
            values: values.to_vec(),
        }
    }
}

/// `f32` values as binary16 bits, saturating at ±65504 (the largest finite `f16`), so a
/// finite tensor stays finite.
pub fn to_f16(x: &[f32]) -> Vec<u16> {
    const MAX: f32 = 65504.0;
    x.iter()
        .map(|&v| half::f16::from_f32(v.clamp(-MAX, MAX)).to_bits())
        .collect()
}

/// binary16 bits as `f32` values.
pub fn from_f16(bits: &[u16]) -> Vec<f32> {
    bits.iter()
        .map(|&b| half::f16::from_bits(b).to_f32())
        .collect()
}

/// zstd level of the lossless stage: level 1 compresses these tensors within a few
/// per cent of level 3 at twice the speed (`cargo xtask encodings` measures both).
pub const ZSTD_LEVEL: i32 = 1;

thread_local! {
    /// This thread's zstd contexts, made on first use: making one costs more than
    /// inflating a small tensor. Each call resets what it uses, a failed one included.
    static COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> =
        const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { RefCell::new(None) };
}

/// The lossless stage: `body` compressed with zstd (one frame, with its content size).
pub fn compress(body: &[u8]) -> Vec<u8> {
    COMPRESSOR.with_borrow_mut(|compressor| {
        let compressor = match compressor {
            Some(c) => c,
            None => compressor.insert(
                zstd::bulk::Compressor::new(ZSTD_LEVEL).expect("a zstd context at level 1"),
            ),
        };
        compressor
            .compress(body)
            .expect("zstd compresses any input in memory")
    })
}

/// Why a compressed payload was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InflateError {
    /// Not a zstd stream, truncated, or corrupt.
    Corrupt(String),
    /// It inflates to more bytes than the tensor needs (a "bomb"): decoding stopped there.
    TooLarge {
        /// Bytes the tensor needs.
        expected: usize,
    },
    /// It inflates to fewer bytes than the tensor needs.
    TooShort {
        /// Bytes it gave.
        got: usize,
        /// Bytes the tensor needs.
        expected: usize,
    },
}

impl fmt::Display for InflateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Corrupt(why) => write!(f, "the zstd stream is corrupt or truncated ({why})"),
            Self::TooLarge { expected } => write!(
                f,
                "the zstd stream inflates past the tensor's {expected} bytes"
            ),
            Self::TooShort { got, expected } => write!(
                f,
                "the zstd stream inflates to {got} bytes; the tensor needs {expected}"
            ),
        }
    }
}

impl std::error::Error for InflateError {}

/// Inflates `compressed` to exactly `expected` bytes, never allocating or writing more:
/// a stream that would give more is [`InflateError::TooLarge`].
pub fn decompress(compressed: &[u8], expected: usize) -> Result<Vec<u8>, InflateError> {
    // One byte of room past the tensor tells "exactly" from "more".
    let mut out = Vec::with_capacity(expected + 1);
    let inflated = DECOMPRESSOR.with_borrow_mut(|decoder| {
        let decoder = match decoder {
            Some(d) => d,
            None => decoder.insert(
                zstd::bulk::Decompressor::new()
                    .map_err(|e| InflateError::Corrupt(format!("no decoder: {e}")))?,
            ),
        };
        Ok(decoder.decompress_to_buffer(compressed, &mut out))
    })?;
    match inflated {
        Ok(n) if n == expected => Ok(out),
        Ok(n) if n > expected => Err(InflateError::TooLarge { expected }),
        Ok(got) => Err(InflateError::TooShort { got, expected }),
        // zstd reports "Destination buffer is too small" when the output would not fit.
        Err(e) if e.to_string().contains("too small") => Err(InflateError::TooLarge { expected }),
        Err(e) => Err(InflateError::Corrupt(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for e in Encoding::ACTIVATIONS.iter().chain(&Encoding::INPUTS) {
            assert_eq!(e.name().parse::<Encoding>(), Ok(*e));
            let json = serde_json::to_string(e).unwrap();
            assert_eq!(serde_json::from_str::<Encoding>(&json).unwrap(), *e);
        }
        assert_eq!("q8c+zstd".parse(), Ok(Encoding::new(Values::Q8c, true)));
        assert!(
            "f64"
                .parse::<Encoding>()
                .unwrap_err()
                .contains("unknown encoding")
        );
        assert!("f32+lz4".parse::<Encoding>().is_err());
    }

    #[test]
    fn quantisation_keeps_zero_exact_and_errs_by_at_most_half_a_step() {
        let x: Vec<f32> = (0..64)
            .map(|i| {
                if i % 3 == 0 {
                    0.0
                } else {
                    (i as f32 * 0.37).sin() * 4.0
                }
            })
            .collect();
        for groups in [1, 4] {
            let q = Quantized::quantize(&x, groups);
            assert_eq!(q.scales.len(), groups);
            let back = q.dequantize();
            for (i, (a, b)) in x.iter().zip(&back).enumerate() {
                let scale = q.scales[i / (64 / groups)];
                assert!((a - b).abs() <= scale / 2.0 + 1e-6, "{i}: {a} vs {b}");
                if *a == 0.0 {
                    assert_eq!(*b, 0.0, "{i}");
                }
            }
            let bytes = q.to_bytes();
            assert_eq!(bytes.len(), Values::Q8.body_len(64, groups).unwrap());
            assert_eq!(Quantized::from_bytes(&bytes, groups), q);
        }
    }

    #[test]
    fn a_valid_scale_can_still_overflow_a_value() {
        // f32::MAX is a finite scale above 0, yet (255 − 0) · f32::MAX is infinite.
        let q = Quantized {
            scales: vec![f32::MAX],
            zero_points: vec![0],
            values: vec![0, 1, 255],
        };
        assert!(q.bad_scale().is_none());
        assert_eq!(q.values().position(|v| !v.is_finite()), Some(2));
    }

    #[test]
    fn a_constant_or_zero_group_quantises_without_dividing_by_zero() {
        let q = Quantized::quantize(&[0.0; 8], 2);
        assert!(q.bad_scale().is_none());
        assert_eq!(q.dequantize(), vec![0.0; 8]);
        let q = Quantized::quantize(&[3.0; 4], 1);
        assert!(q.bad_scale().is_none());
        assert!((q.dequantize()[0] - 3.0).abs() < 0.01);
    }

    #[test]
    fn half_precision_saturates_instead_of_overflowing() {
        let back = from_f16(&to_f16(&[1.0e6, -1.0e6, 0.5, 1.0e-3]));
        assert_eq!(back[..3], [65504.0, -65504.0, 0.5]);
        assert!((back[3] - 1.0e-3).abs() < 1e-6);
        assert!(back.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn the_lossless_stage_round_trips_and_is_bounded() {
        let body: Vec<u8> = (0..4096u32)
            .map(|i| (i % 7 == 0) as u8 * (i as u8))
            .collect();
        let packed = compress(&body);
        assert!(packed.len() < body.len() / 2);
        assert_eq!(decompress(&packed, body.len()).unwrap(), body);
        // A bomb: 1 MiB of zeros compresses to a few dozen bytes.
        let bomb = compress(&vec![0u8; 1 << 20]);
        assert_eq!(
            decompress(&bomb, 4096),
            Err(InflateError::TooLarge { expected: 4096 })
        );
        assert_eq!(
            decompress(&packed, body.len() + 1),
            Err(InflateError::TooShort {
                got: body.len(),
                expected: body.len() + 1
            })
        );
        assert!(matches!(
            decompress(&packed[..packed.len() / 2], body.len()),
            Err(InflateError::Corrupt(_))
        ));
        assert!(matches!(
            decompress(b"not zstd at all", 16),
            Err(InflateError::Corrupt(_))
        ));
        // Two frames back to back inflate to both: more than one tensor's worth.
        let twice = [packed.clone(), packed.clone()].concat();
        assert!(decompress(&twice, body.len()).is_err());
        // This thread's contexts, used by every call above, still give the same bytes.
        assert_eq!(decompress(&packed, body.len()).unwrap(), body);
        assert_eq!(
            compress(&body),
            zstd::bulk::compress(&body, ZSTD_LEVEL).unwrap()
        );
    }
}
