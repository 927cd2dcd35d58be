//! How a tensor is written on the wire (DESIGN.md §12, PROTOCOL.md "Encodings"): its values
//! as `f32`, `f16` or 8- or 4-bit affine quantisation (one scale and zero point for the
//! tensor, or one per channel), then optionally a lossless stage (zstd) over those bytes; the raw
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
    /// 4-bit affine quantisation (two codes a byte), one scale and zero point for the tensor.
    Q4,
    /// 4-bit affine quantisation (two codes a byte), one scale and zero point per channel.
    Q4c,
}

impl Values {
    /// Every kind of values.
    pub const ALL: [Values; 7] = [
        Self::U8,
        Self::F32,
        Self::F16,
        Self::Q8,
        Self::Q8c,
        Self::Q4,
        Self::Q4c,
    ];

    /// The name in plans, reports and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::U8 => "u8",
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::Q8 => "q8",
            Self::Q8c => "q8c",
            Self::Q4 => "q4",
            Self::Q4c => "q4c",
        }
    }

    /// Whether decoding gives back other values than the device had.
    pub fn lossy(self) -> bool {
        self == Self::F16 || self.bits().is_some()
    }

    /// Bits of a quantised code (8 for `q8`/`q8c`, 4 for `q4`/`q4c`); `None` for the rest.
    pub fn bits(self) -> Option<u32> {
        match self {
            Self::Q8 | Self::Q8c => Some(8),
            Self::Q4 | Self::Q4c => Some(4),
            Self::U8 | Self::F32 | Self::F16 => None,
        }
    }

    /// Whether each channel has its own scale and zero point (`q8c`, `q4c`).
    pub fn per_channel(self) -> bool {
        matches!(self, Self::Q8c | Self::Q4c)
    }

    /// Quantisation groups (scale/zero-point pairs) of a tensor of `shape`: 1 for `q8`/`q4`,
    /// the first dimension for `q8c`/`q4c`, 0 for the rest.
    pub fn groups(self, shape: &[usize]) -> usize {
        match self.bits() {
            None => 0,
            Some(_) if self.per_channel() => shape.first().copied().unwrap_or(0),
            Some(_) => 1,
        }
    }

    /// Whether a tensor of `ndim` dimensions can be written this way: `q8c`/`q4c` need a
    /// channel dimension and at least one more (2 or more dimensions); the rest take any.
    pub fn fits(self, ndim: usize) -> bool {
        !self.per_channel() || ndim >= 2
    }

    /// Bytes of the body (before the lossless stage) for `elements` values in `groups`
    /// groups: the values (codes packed, [`packed_len`]), plus 5 bytes (f32 scale, u8 zero
    /// point) per group when quantised. `None` on overflow.
    pub fn body_len(self, elements: usize, groups: usize) -> Option<usize> {
        match self {
            Self::U8 => Some(elements),
            Self::F32 => elements.checked_mul(4),
            Self::F16 => elements.checked_mul(2),
            Self::Q8 | Self::Q8c | Self::Q4 | Self::Q4c => groups
                .checked_mul(5)?
                .checked_add(packed_len(elements, self.bits()?)?),
        }
    }
}

/// Bytes of `count` codes of `bits` bits packed from the lowest bit of each byte up (the
/// last byte's unused high bits are 0). `None` on overflow.
pub fn packed_len(count: usize, bits: u32) -> Option<usize> {
    Some(count.checked_mul(bits as usize)?.div_ceil(8))
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
    pub const ACTIVATIONS: [Encoding; 12] = [
        Encoding::new(Values::F32, false),
        Encoding::new(Values::F32, true),
        Encoding::new(Values::F16, false),
        Encoding::new(Values::F16, true),
        Encoding::new(Values::Q8, false),
        Encoding::new(Values::Q8, true),
        Encoding::new(Values::Q8c, false),
        Encoding::new(Values::Q8c, true),
        Encoding::new(Values::Q4, false),
        Encoding::new(Values::Q4, true),
        Encoding::new(Values::Q4c, false),
        Encoding::new(Values::Q4c, true),
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
        self.values.fits(shape.len())
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
                    "unknown encoding `{s}`: expected u8, f32, f16, q8, q8c, q4 or q4c, optionally followed by +zstd"
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

/// An affine-quantised tensor of `bits`-bit codes: value `i` of group `g` is
/// `(codes[i] − zero_points[g]) · scales[g]` (ONNX's `DequantizeLinear` with `uint8`; for
/// 4 bits, with codes 0–15). Groups are equal, contiguous runs of `codes` (channels, in C,
/// H, W order).
#[derive(Debug, Clone, PartialEq)]
pub struct Quantized {
    /// Bits of a code: 8 or 4.
    pub bits: u32,
    /// Scale of each group: finite and > 0.
    pub scales: Vec<f32>,
    /// Zero point of each group: the code of 0.0.
    pub zero_points: Vec<u8>,
    /// The codes, row-major, one a byte (packed only on the wire).
    pub codes: Vec<u8>,
}

impl Quantized {
    /// Quantises `x` to `bits`-bit codes (1 to 8) in `groups` equal contiguous groups
    /// (`groups` divides `x.len()`). Each group's range is stretched to include 0, so a
    /// ReLU's zeros stay exactly 0.
    pub fn quantize(x: &[f32], groups: usize, bits: u32) -> Self {
        assert!(
            groups > 0 && x.len().is_multiple_of(groups),
            "{groups} groups do not divide {} values",
            x.len()
        );
        assert!((1..=8).contains(&bits), "codes of {bits} bits");
        let top = Self::top_code(bits);
        let per_group = x.len() / groups;
        let mut scales = Vec::with_capacity(groups);
        let mut zero_points = Vec::with_capacity(groups);
        let mut codes = Vec::with_capacity(x.len());
        for group in x.chunks_exact(per_group.max(1)).take(groups) {
            let (lo, hi) = group
                .iter()
                .fold((0.0f32, 0.0f32), |(lo, hi), &v| (lo.min(v), hi.max(v)));
            let range = hi - lo;
            let scale = if range > 0.0 && range.is_finite() {
                range / top
            } else {
                1.0
            };
            let zero_point = (-lo / scale).round().clamp(0.0, top);
            let inverse = 1.0 / scale;
            codes.extend(
                group
                    .iter()
                    .map(|&v| (v * inverse + zero_point).round().clamp(0.0, top) as u8),
            );
            scales.push(scale);
            zero_points.push(zero_point as u8);
        }
        Self {
            bits,
            scales,
            zero_points,
            codes,
        }
    }

    /// The largest code of `bits` bits (255 for 8, 15 for 4).
    fn top_code(bits: u32) -> f32 {
        ((1u32 << bits) - 1) as f32
    }

    /// Why these codes cannot stand for a tensor, if they cannot: a scale that is not a
    /// finite number above 0, or a zero point above the largest code.
    pub fn invalid(&self) -> Option<String> {
        if let Some((group, scale)) = self
            .scales
            .iter()
            .copied()
            .enumerate()
            .find(|&(_, s)| !(s.is_finite() && s > 0.0))
        {
            return Some(format!(
                "scale {scale} of group {group} is not a finite number above 0"
            ));
        }
        let top = Self::top_code(self.bits);
        self.zero_points
            .iter()
            .position(|&z| f32::from(z) > top)
            .map(|group| {
                format!(
                    "zero point {} of group {group} is above {top}, the largest {}-bit code",
                    self.zero_points[group], self.bits
                )
            })
    }

    /// The values the codes stand for, in order: `(q − zero point) · scale` in `f32`.
    pub fn values(&self) -> impl Iterator<Item = f32> + '_ {
        let groups = self.scales.len().max(1);
        let per_group = (self.codes.len() / groups).max(1);
        self.codes
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

    /// The body on the wire: scales (f32, little-endian), zero points, then the codes packed
    /// from the lowest bit of each byte up (for 4 bits: code `2k` in the low nibble of byte
    /// `k`, code `2k + 1` in its high nibble).
    pub fn to_bytes(&self) -> Vec<u8> {
        let packed = packed_len(self.codes.len(), self.bits).expect("codes fit in memory");
        let mut out = Vec::with_capacity(5 * self.scales.len() + packed);
        for s in &self.scales {
            out.extend_from_slice(&s.to_le_bytes());
        }
        out.extend_from_slice(&self.zero_points);
        if self.bits == 8 {
            out.extend_from_slice(&self.codes);
            return out;
        }
        let (mut acc, mut filled) = (0u32, 0u32);
        for &code in &self.codes {
            acc |= u32::from(code) << filled;
            filled += self.bits;
            while filled >= 8 {
                out.push(acc as u8);
                acc >>= 8;
                filled -= 8;
            }
        }
        if filled > 0 {
            out.push(acc as u8);
        }
        out
    }

    /// Reads a body of `groups` groups and `count` codes of `bits` bits; the caller has
    /// checked its length ([`Values::body_len`]). Refuses set bits in the last byte's
    /// padding (a writer that packs codes some other way).
    pub fn from_bytes(
        bytes: &[u8],
        groups: usize,
        count: usize,
        bits: u32,
    ) -> Result<Self, String> {
        let (scales, rest) = bytes.split_at(4 * groups);
        let (zero_points, packed) = rest.split_at(groups);
        let codes = if bits == 8 {
            packed.to_vec()
        } else {
            let mask = (1u32 << bits) - 1;
            let mut codes = Vec::with_capacity(count);
            let (mut acc, mut filled) = (0u32, 0u32);
            let mut bytes = packed.iter();
            while codes.len() < count {
                if filled < bits {
                    acc |= u32::from(*bytes.next().ok_or("fewer codes than the shape")?) << filled;
                    filled += 8;
                }
                codes.push((acc & mask) as u8);
                acc >>= bits;
                filled -= bits;
            }
            if acc != 0 {
                return Err(format!(
                    "the padding after the last {bits}-bit code is {acc:#x}, not 0"
                ));
            }
            codes
        };
        Ok(Self {
            bits,
            scales: scales
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect(),
            zero_points: zero_points.to_vec(),
            codes,
        })
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
        assert_eq!("q4".parse(), Ok(Encoding::new(Values::Q4, false)));
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
        for (values, groups) in [(Values::Q8, 1), (Values::Q8c, 4), (Values::Q4, 1)] {
            let bits = values.bits().unwrap();
            let q = Quantized::quantize(&x, groups, bits);
            assert_eq!(q.scales.len(), groups);
            assert!(q.invalid().is_none());
            assert!(q.codes.iter().all(|&c| u32::from(c) < 1 << bits));
            let back = q.dequantize();
            for (i, (a, b)) in x.iter().zip(&back).enumerate() {
                let scale = q.scales[i / (64 / groups)];
                assert!((a - b).abs() <= scale / 2.0 + 1e-6, "{i}: {a} vs {b}");
                if *a == 0.0 {
                    assert_eq!(*b, 0.0, "{i}");
                }
            }
            let bytes = q.to_bytes();
            assert_eq!(bytes.len(), values.body_len(64, groups).unwrap());
            assert_eq!(Quantized::from_bytes(&bytes, groups, 64, bits), Ok(q));
        }
    }

    #[test]
    fn four_bit_codes_pack_two_a_byte_low_nibble_first() {
        let q = Quantized {
            bits: 4,
            scales: vec![0.5],
            zero_points: vec![3],
            codes: vec![1, 2, 15, 0, 7],
        };
        let bytes = q.to_bytes();
        assert_eq!(bytes[..5], [0, 0, 0, 0x3f, 3]);
        assert_eq!(bytes[5..], [0x21, 0x0f, 0x07]);
        assert_eq!(bytes.len(), Values::Q4.body_len(5, 1).unwrap());
        assert_eq!(Quantized::from_bytes(&bytes, 1, 5, 4), Ok(q));
        // The odd code's empty high nibble must be 0; a zero point must be a 4-bit code.
        let mut padded = bytes.clone();
        padded[7] = 0x97;
        let err = Quantized::from_bytes(&padded, 1, 5, 4).unwrap_err();
        assert!(err.contains("padding"), "{err}");
        let mut high_zero = bytes;
        high_zero[4] = 16;
        let q = Quantized::from_bytes(&high_zero, 1, 5, 4).unwrap();
        assert!(q.invalid().unwrap().contains("largest 4-bit code"));
    }

    #[test]
    fn four_bits_keep_zeros_and_a_sixteenth_of_the_range() {
        let x: Vec<f32> = (0..1000).map(|i| ((i * 37) % 101) as f32 / 10.0).collect();
        let q = Quantized::quantize(&x, 1, 4);
        assert_eq!(q.scales[0], 10.0 / 15.0);
        for (a, b) in x.iter().zip(q.dequantize()) {
            assert!((a - b).abs() <= 10.0 / 30.0 + 1e-5, "{a} vs {b}");
            if *a == 0.0 {
                assert_eq!(b, 0.0);
            }
        }
    }

    #[test]
    fn a_valid_scale_can_still_overflow_a_value() {
        // f32::MAX is a finite scale above 0, yet (255 − 0) · f32::MAX is infinite.
        let q = Quantized {
            bits: 8,
            scales: vec![f32::MAX],
            zero_points: vec![0],
            codes: vec![0, 1, 255],
        };
        assert!(q.invalid().is_none());
        assert_eq!(q.values().position(|v| !v.is_finite()), Some(2));
    }

    #[test]
    fn a_constant_or_zero_group_quantises_without_dividing_by_zero() {
        let q = Quantized::quantize(&[0.0; 8], 2, 8);
        assert!(q.invalid().is_none());
        assert_eq!(q.dequantize(), vec![0.0; 8]);
        let q = Quantized::quantize(&[3.0; 4], 1, 4);
        assert!(q.invalid().is_none());
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
