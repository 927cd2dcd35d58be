//! Structure-aware mutation of protocol messages, for fuzzing on stable Rust
//! (`edgent-edge fuzz`, `cargo xtask fuzz`).
//!
//! A [`Corpus`] holds valid messages of every type for a plan's shapes: an Infer at every
//! (exit, partition) in every encoding valid there (the `u8` image at `p = 0`, raw or
//! through zstd; `f32`, `f16`, `q8` or `q8c` activations after, each raw or through zstd),
//! and in version 1 (`u8` or `f32`); Pings with and without padding (versions 1 and 2),
//! Results, Errors with every code, a Pong. [`Corpus::case`] takes one, freshens its request
//! id and deadline, and stacks a few [`Mutation`]s on it: blind ones (bit flips, byte sets,
//! truncations, extensions, splices, extra, missing and empty frames) and field-aware ones
//! (magic, version, type, dtype, ndim, shape, exit, partition, code, digest, request id, the
//! fields a request must leave 0, NaN and infinities in `f32` and `f16` tensors, shapes
//! whose product overflows or passes the payload limit, a consistent reshape of header and
//! payload, the version switched, another encoding, the compression bit, zstd bombs,
//! streams a few bytes off the tensor's size, damaged streams, bad quantisation scales).
//!
//! This module depends only on [`super::protocol`], [`super::encoding`] (zstd) and `rand`,
//! so a cargo-fuzz target can compile it by `#[path]` as it does the protocol.

use rand::Rng;

use super::encoding::{self, Encoding, Values};
use super::protocol::{
    COMPRESSED, Dtype, ErrorCode, HEADER_LEN, Header, MAX_DIMS, MAX_PAYLOAD, Message, MessageType,
    OLDEST_VERSION, Payload, VERSION,
};

/// The frames of one message, as they cross the socket (no routing envelope).
pub type Frames = Vec<Vec<u8>>;

/// The shapes of a served plan, from which the valid messages are made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shapes {
    /// The plan digest every valid request carries.
    pub digest: [u8; 32],
    /// The model input `[C, H, W]`: the `u8` image an Infer at `p = 0` carries.
    pub input: Vec<u32>,
    /// Logits per Result.
    pub classes: u32,
    /// `boundaries[e - 1][p]`: the shape entering layer `p` of exit `e`, for `p` in `0..N`.
    pub boundaries: Vec<Vec<Vec<u32>>>,
    /// The largest payload a server takes, bytes.
    pub max_payload: usize,
}

/// The kinds of change [`Corpus::case`] stacks on a valid message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mutation {
    /// Flip one bit of a frame.
    BitFlip,
    /// Set one byte of a frame to an interesting or random value.
    ByteSet,
    /// Cut a frame short (possibly to nothing).
    Truncate,
    /// Append bytes to a frame.
    Extend,
    /// Damage the magic `EDGT`.
    Magic,
    /// A protocol version this build does not speak (0, 3, 0x7F, 0x80, 0xFF).
    Version,
    /// Another (or an unknown) message type.
    Type,
    /// Another (or an unknown) dtype, with or without the compression bit, payload
    /// unchanged.
    Dtype,
    /// Another `ndim`, dimensions unchanged.
    Ndim,
    /// One dimension set to 0, 1, ±1, 65536, `u32::MAX` or a random value.
    ShapeDim,
    /// A shape whose product overflows (`[65536; 4]`) or passes the payload limit, or one
    /// exactly at the limit with a payload to match.
    HugeShape,
    /// A consistent header shape and payload of another size (another boundary's shape,
    /// or a random one).
    Reshape,
    /// Another exit (0, 1–5, 6, 255).
    Exit,
    /// Another partition (0, `N − 1`, `N`, `N + 1`, 255, random).
    Partition,
    /// Another valid (exit, partition), the payload kept.
    Retarget,
    /// Another error code (0, each known one, 19, `0x100`, `0xFFFF`).
    Code,
    /// A damaged plan digest.
    Digest,
    /// Another request id (0, 1, `u64::MAX`, random).
    RequestId,
    /// A field a request must leave 0 set (or every such field cleared).
    MustBeZero,
    /// NaN or an infinity (or a finite oddity: −0, a subnormal, `f32::MAX`) in an `f32`
    /// tensor (another tensor converted to `f32` first; any other payload blindly).
    NonFinite,
    /// An extra frame (empty, random, a header) somewhere.
    ExtraFrame,
    /// One frame removed.
    MissingFrame,
    /// One frame emptied.
    EmptyFrame,
    /// Parts of two messages joined: a header with another's payload, a frame cut at the
    /// same point, or both messages' frames one after the other.
    Splice,
    /// `u8` ↔ `f32`, with the payload converted to match the shape.
    DtypeSwap,
    /// A text payload: valid UTF-8 (multi-byte too), or bytes that are not.
    Text,
    /// The other version this build speaks: 2 → 1, anything else → 2 (a version-1 message
    /// with a version-2 encoding is `bad_dtype`).
    VersionSwitch,
    /// The dtype byte's compression bit flipped; half the time the payload follows:
    /// inflated back, or compressed (by zstd, or as a frame of raw blocks written here,
    /// declaring a window of 1 KiB to 2 GiB, with or without its content size).
    Compression,
    /// A zstd stream that inflates far past the tensor: zstd of 16 MiB of zeros (its size
    /// declared), a frame of 128 KiB RLE blocks written here (no size declared), or the
    /// tensor's own stream 2 to 4 times over.
    Bomb,
    /// A zstd stream of the tensor's body a few bytes (1–8, or up to 256) short or long.
    InflateSize,
    /// The payload's zstd stream (the tensor compressed first when it is not) damaged: cut
    /// inside the frame or by its last bytes, a bit or byte changed past the magic, the
    /// magic damaged, bytes after the frame, or written as a frame declaring another size
    /// than it holds; or padded validly (a skippable frame before or after it, an empty
    /// frame after it).
    CorruptStream,
    /// A quantised tensor (`q8`, `q8c`, `q4`, `q4c`; another tensor quantised first) with
    /// one scale 0, −0, negative, NaN or infinite, or valid but odd (subnormal, tiny, or
    /// `f32::MAX`, whose values overflow unless every code is the zero point), or another
    /// zero point (for 4-bit codes, possibly above 15), or a 4-bit tensor's padding nibble set.
    QuantScale,
    /// NaN or an infinity (or a finite oddity: −0, a subnormal, 65504) in an `f16` tensor
    /// (another tensor converted to `f16` first; any other payload blindly).
    HalfNonFinite,
    /// Another encoding valid somewhere: the dtype byte alone (the payload kept), or the
    /// tensor re-encoded to match.
    EncodingSwitch,
}

impl Mutation {
    /// Every kind, in declaration order.
    pub const ALL: [Mutation; 34] = [
        Self::BitFlip,
        Self::ByteSet,
        Self::Truncate,
        Self::Extend,
        Self::Magic,
        Self::Version,
        Self::Type,
        Self::Dtype,
        Self::Ndim,
        Self::ShapeDim,
        Self::HugeShape,
        Self::Reshape,
        Self::Exit,
        Self::Partition,
        Self::Retarget,
        Self::Code,
        Self::Digest,
        Self::RequestId,
        Self::MustBeZero,
        Self::NonFinite,
        Self::ExtraFrame,
        Self::MissingFrame,
        Self::EmptyFrame,
        Self::Splice,
        Self::DtypeSwap,
        Self::Text,
        Self::VersionSwitch,
        Self::Compression,
        Self::Bomb,
        Self::InflateSize,
        Self::CorruptStream,
        Self::QuantScale,
        Self::HalfNonFinite,
        Self::EncodingSwitch,
    ];

    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::BitFlip => "bit_flip",
            Self::ByteSet => "byte_set",
            Self::Truncate => "truncate",
            Self::Extend => "extend",
            Self::Magic => "magic",
            Self::Version => "version",
            Self::Type => "type",
            Self::Dtype => "dtype",
            Self::Ndim => "ndim",
            Self::ShapeDim => "shape_dim",
            Self::HugeShape => "huge_shape",
            Self::Reshape => "reshape",
            Self::Exit => "exit",
            Self::Partition => "partition",
            Self::Retarget => "retarget",
            Self::Code => "code",
            Self::Digest => "digest",
            Self::RequestId => "request_id",
            Self::MustBeZero => "must_be_zero",
            Self::NonFinite => "non_finite",
            Self::ExtraFrame => "extra_frame",
            Self::MissingFrame => "missing_frame",
            Self::EmptyFrame => "empty_frame",
            Self::Splice => "splice",
            Self::DtypeSwap => "dtype_swap",
            Self::Text => "text",
            Self::VersionSwitch => "version_switch",
            Self::Compression => "compression",
            Self::Bomb => "zstd_bomb",
            Self::InflateSize => "inflate_size",
            Self::CorruptStream => "corrupt_stream",
            Self::QuantScale => "q8_scale",
            Self::HalfNonFinite => "f16_non_finite",
            Self::EncodingSwitch => "encoding_switch",
        }
    }
}

/// Which valid message a case starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// An Infer for exit `exit` at partition `partition`.
    Infer {
        /// Exit, 1-based.
        exit: u8,
        /// Partition point.
        partition: u8,
        /// How its tensor is written.
        encoding: Encoding,
        /// Its protocol version.
        version: u8,
    },
    /// A Ping with this many bytes of padding (0: none, dtype none).
    Ping(usize),
    /// A Result (logits).
    Result,
    /// An Error with some code.
    Error,
    /// A Pong.
    Pong,
    /// Frames given from outside (`--corpus`), valid or not.
    Given,
}

/// One starting point: a message's frames and what it is.
#[derive(Debug, Clone)]
pub struct Template {
    /// What the frames are.
    pub origin: Origin,
    /// The frames.
    pub frames: Frames,
}

/// One generated case: the frames to feed the decoder and the changes made to the
/// template they came from.
#[derive(Debug, Clone)]
pub struct Case {
    /// The template's kind.
    pub origin: Origin,
    /// The mutated frames.
    pub frames: Frames,
    /// The mutations applied, in order (none: the valid template, freshened).
    pub mutations: Vec<Mutation>,
}

/// Valid messages of every type for a plan, and the engine that mutates them.
#[derive(Debug, Clone)]
pub struct Corpus {
    shapes: Shapes,
    /// The Infers of each (exit, partition): every encoding valid there, and version 1.
    infer: Vec<Vec<Template>>,
    other: Vec<Template>,
    given: Vec<Template>,
    /// zstd of [`MAX_PAYLOAD`] zeros: a few hundred bytes that inflate past any tensor.
    bomb: Vec<u8>,
}

/// Most mutations stacked on one case.
pub const MAX_STACK: usize = 6;

/// Bytes a blind extension appends at most.
const MAX_EXTEND: usize = 64;

impl Corpus {
    /// Valid templates for `shapes`, their contents drawn from `rng`.
    pub fn new<R: Rng + ?Sized>(shapes: Shapes, rng: &mut R) -> Self {
        let mut infer = Vec::new();
        for (e, chain) in shapes.boundaries.iter().enumerate() {
            for (p, shape) in chain.iter().enumerate() {
                let (exit, partition) = (e as u8 + 1, p as u8);
                let n = elements(shape);
                let shape: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
                // The same values in every encoding: pixels at p = 0, activations after.
                let values = if p == 0 {
                    random_bytes(rng, n).into_iter().map(f32::from).collect()
                } else {
                    activations(rng, n)
                };
                let version_1 = if p == 0 { Encoding::RAW } else { Encoding::F32 };
                let group = Encoding::at_partition(p)
                    .iter()
                    .filter(|e| e.values.fits(shape.len()))
                    .map(|&e| (e, VERSION))
                    .chain([(version_1, OLDEST_VERSION)])
                    .map(|(encoding, version)| {
                        let mut msg = Message::infer(
                            shapes.digest,
                            rng.random(),
                            exit,
                            partition,
                            rng.random(),
                            &shape,
                            Payload::encode_f32(&values, encoding.values, &shape),
                        )
                        .in_version(version);
                        msg.header.set_encoding(encoding);
                        Template {
                            origin: Origin::Infer {
                                exit,
                                partition,
                                encoding,
                                version,
                            },
                            frames: msg.encode().to_vec(),
                        }
                    })
                    .collect();
                infer.push(group);
            }
        }
        let mut other = Vec::new();
        let pings = [0, 1, 7, 64, 1000, shapes.max_payload].map(|padding| (padding, VERSION));
        for (padding, version) in pings.into_iter().chain([(0, 1), (7, 1)]) {
            let mut header = Header::new(MessageType::Ping, shapes.digest, rng.random());
            header.version = version;
            let payload = if padding == 0 {
                Payload::Text(String::new())
            } else {
                header.dtype = Dtype::U8;
                header.shape = vec![padding as u32];
                Payload::U8(random_bytes(rng, padding))
            };
            other.push(Template {
                origin: Origin::Ping(padding),
                frames: Message { header, payload }.encode().to_vec(),
            });
        }
        for (e, chain) in shapes.boundaries.iter().enumerate() {
            let mut header = Header::new(MessageType::Result, shapes.digest, rng.random());
            header.exit = e as u8 + 1;
            header.partition = rng.random_range(0..chain.len().max(1)) as u8;
            header.edge_us = rng.random_range(0..1_000_000);
            header.queue_us = rng.random_range(0..1_000_000);
            header.dtype = Dtype::F32;
            header.shape = vec![shapes.classes];
            let payload = Payload::F32(random_values(rng, shapes.classes as usize));
            other.push(Template {
                origin: Origin::Result,
                frames: Message { header, payload }.encode().to_vec(),
            });
        }
        const TEXTS: [&str; 4] = ["", "bad request", "forme non prévue: é", "形状 ✗ 🚫"];
        for (i, code) in ErrorCode::ALL.into_iter().enumerate() {
            let text = TEXTS[i % TEXTS.len()];
            let msg = Message::error(shapes.digest, rng.random(), code, text);
            other.push(Template {
                origin: Origin::Error,
                frames: msg.encode().to_vec(),
            });
        }
        let pong = Message {
            header: Header::new(MessageType::Pong, shapes.digest, rng.random()),
            payload: Payload::Text(String::new()),
        };
        other.push(Template {
            origin: Origin::Pong,
            frames: pong.encode().to_vec(),
        });
        Self {
            shapes,
            infer,
            other,
            given: Vec::new(),
            bomb: encoding::compress(&vec![0; MAX_PAYLOAD]),
        }
    }

    /// Adds frames from outside (saved cases, a corpus directory) as starting points.
    pub fn add_given(&mut self, frames: Frames) {
        self.given.push(Template {
            origin: Origin::Given,
            frames,
        });
    }

    /// The plan's shapes.
    pub fn shapes(&self) -> &Shapes {
        &self.shapes
    }

    /// Every template: the Infers, then the other types, then the given ones.
    pub fn templates(&self) -> impl Iterator<Item = &Template> {
        self.infer
            .iter()
            .flatten()
            .chain(&self.other)
            .chain(&self.given)
    }

    /// A template: a given one 3 % of the time, an Infer 62 % (an (exit, partition), then
    /// one of its encodings), another type the rest.
    fn pick<R: Rng + ?Sized>(&self, rng: &mut R) -> &Template {
        let roll = rng.random_range(0..100);
        if roll < 3 && !self.given.is_empty() {
            &self.given[rng.random_range(0..self.given.len())]
        } else if roll < 65 && !self.infer.is_empty() {
            let group: &Vec<Template> = pick(rng, &self.infer);
            pick(rng, group)
        } else {
            &self.other[rng.random_range(0..self.other.len())]
        }
    }

    /// One case: a template, its request id (and an Infer's deadline) drawn afresh, then
    /// 0 to [`MAX_STACK`] mutations (none in about 1 case in 16).
    pub fn case<R: Rng + ?Sized>(&self, rng: &mut R) -> Case {
        let template = self.pick(rng);
        let mut frames = template.frames.clone();
        if template.origin != Origin::Given {
            poke(&mut frames, 40, &rng.random::<u64>().to_le_bytes());
            if matches!(template.origin, Origin::Infer { .. }) {
                poke(&mut frames, 52, &rng.random::<u32>().to_le_bytes());
            }
        }
        let mutations = self.mutate(&mut frames, rng);
        Case {
            origin: template.origin,
            frames,
            mutations,
        }
    }

    /// Stacks 0 to [`MAX_STACK`] mutations on `frames` (none in about 1 case in 16; 1, 2,
    /// 3, … with halving odds) and returns them in order: [`Corpus::case`] without the
    /// template, for frames from elsewhere.
    pub fn mutate<R: Rng + ?Sized>(&self, frames: &mut Frames, rng: &mut R) -> Vec<Mutation> {
        let count = if rng.random_ratio(1, 16) {
            0
        } else {
            1 + (rng.random::<u32>() | (1 << (MAX_STACK - 1))).trailing_zeros() as usize
        };
        let mut mutations = Vec::with_capacity(count);
        for _ in 0..count {
            let kind = Mutation::ALL[rng.random_range(0..Mutation::ALL.len())];
            self.apply(kind, frames, rng);
            mutations.push(kind);
        }
        mutations
    }

    /// Applies one mutation to `frames` (which came from a template of `origin`).
    /// Never panics, whatever the frames are.
    pub fn apply<R: Rng + ?Sized>(&self, kind: Mutation, frames: &mut Frames, rng: &mut R) {
        match kind {
            Mutation::BitFlip => {
                if let Some(f) = pick_frame(frames, rng).filter(|f| !f.is_empty()) {
                    let bit = rng.random_range(0..f.len() * 8);
                    f[bit / 8] ^= 1 << (bit % 8);
                }
            }
            Mutation::ByteSet => {
                if let Some(f) = pick_frame(frames, rng).filter(|f| !f.is_empty()) {
                    let at = rng.random_range(0..f.len());
                    f[at] = interesting_u8(rng);
                }
            }
            Mutation::Truncate => {
                if let Some(f) = pick_frame(frames, rng).filter(|f| !f.is_empty()) {
                    let len = match rng.random_range(0..4) {
                        0 => 0,
                        1 => f.len() - 1,
                        2 => f.len().min(HEADER_LEN - 1),
                        _ => rng.random_range(0..f.len()),
                    };
                    f.truncate(len);
                }
            }
            Mutation::Extend => {
                if let Some(f) = pick_frame(frames, rng) {
                    let n = match rng.random_range(0..3) {
                        0 => 1,
                        1 => 4,
                        _ => rng.random_range(1..=MAX_EXTEND),
                    };
                    let start = f.len();
                    f.resize(start + n, 0);
                    rng.fill(&mut f[start..]);
                }
            }
            Mutation::Magic => {
                let magic: [u8; 4] = match rng.random_range(0..5) {
                    0 => *b"EDGt",
                    1 => *b"HTTP",
                    2 => [0; 4],
                    3 => {
                        let mut m = *b"EDGT";
                        m[rng.random_range(0..4)] ^= 1 << rng.random_range(0..8);
                        m
                    }
                    _ => rng.random(),
                };
                poke(frames, 0, &magic);
            }
            Mutation::Version => {
                let v = *pick(rng, &[0, VERSION + 1, 0x7F, 0x80, 0xFF]);
                poke(frames, 4, &[v]);
            }
            Mutation::Type => {
                let t = if rng.random_bool(0.8) {
                    rng.random_range(0..=6)
                } else {
                    rng.random()
                };
                poke(frames, 5, &[t]);
            }
            Mutation::Dtype => {
                let d = if rng.random_bool(0.8) {
                    let flag = if rng.random_bool(0.3) { COMPRESSED } else { 0 };
                    rng.random_range(0..=Dtype::Q4c as u8 + 1) | flag
                } else {
                    rng.random()
                };
                poke(frames, 6, &[d]);
            }
            Mutation::Ndim => {
                let n = if rng.random_bool(0.8) {
                    rng.random_range(0..=5)
                } else {
                    rng.random()
                };
                poke(frames, 7, &[n]);
            }
            Mutation::ShapeDim => {
                let at = 64 + 4 * rng.random_range(0..MAX_DIMS);
                let current = peek_u32(frames, at).unwrap_or(0);
                let v = match rng.random_range(0..7) {
                    0 => 0,
                    1 => 1,
                    2 => current.wrapping_add(1),
                    3 => current.wrapping_sub(1),
                    4 => 65536,
                    5 => u32::MAX,
                    _ => rng.random(),
                };
                poke(frames, at, &v.to_le_bytes());
            }
            Mutation::HugeShape => self.huge_shape(frames, rng),
            Mutation::Reshape => self.reshape(frames, rng),
            Mutation::Exit => {
                let e = *pick(rng, &[0, 1, 2, 3, 4, 5, 6, 0x80, 0xFF]);
                poke(frames, 48, &[e]);
            }
            Mutation::Partition => {
                let n = self.chain_len(peek_u8(frames, 48).unwrap_or(0));
                let p = match rng.random_range(0..6) {
                    0 => 0,
                    1 => n.saturating_sub(1),
                    2 => n,
                    3 => n + 1,
                    4 => 0xFF,
                    _ => rng.random_range(0..n.max(1)),
                };
                poke(frames, 49, &[p.min(0xFF) as u8]);
            }
            Mutation::Retarget => {
                let e = rng.random_range(0..self.shapes.boundaries.len().max(1));
                let n = self.shapes.boundaries.get(e).map_or(1, Vec::len);
                let p = rng.random_range(0..n.max(1));
                poke(frames, 48, &[e as u8 + 1, p as u8]);
            }
            Mutation::Code => {
                let c: u16 = match rng.random_range(0..4) {
                    0 => 0,
                    1 => ErrorCode::ALL[rng.random_range(0..ErrorCode::ALL.len())] as u16,
                    2 => *pick(rng, &[ErrorCode::ALL.len() as u16 + 1, 0x100, 0xFFFF]),
                    _ => rng.random(),
                };
                poke(frames, 50, &c.to_le_bytes());
            }
            Mutation::Digest => match rng.random_range(0..3) {
                0 => {
                    let at = 8 + rng.random_range(0..32);
                    let v = peek_u8(frames, at).unwrap_or(0) ^ (1 << rng.random_range(0..8));
                    poke(frames, at, &[v]);
                }
                1 => poke(frames, 8, &[0; 32]),
                _ => poke(frames, 8, &rng.random::<[u8; 32]>()),
            },
            Mutation::RequestId => {
                let id: u64 = match rng.random_range(0..4) {
                    0 => 0,
                    1 => 1,
                    2 => u64::MAX,
                    _ => rng.random(),
                };
                poke(frames, 40, &id.to_le_bytes());
            }
            Mutation::MustBeZero => {
                // (offset, width) of code, deadline_us, edge_us, queue_us, exit, partition.
                const FIELDS: [(usize, usize); 6] =
                    [(50, 2), (52, 4), (56, 4), (60, 4), (48, 1), (49, 1)];
                if rng.random_ratio(1, 5) {
                    for (at, width) in FIELDS {
                        poke(frames, at, &[0; 4][..width]);
                    }
                } else {
                    let (at, width) = *pick(rng, &FIELDS);
                    let mut v = [0u8; 4];
                    if rng.random_bool(0.5) {
                        v[0] = 1;
                    } else {
                        rng.fill(&mut v[..width]);
                        v[0] |= 1;
                    }
                    poke(frames, at, &v[..width]);
                }
            }
            Mutation::NonFinite => self.set_element(
                frames,
                Values::F32,
                &[
                    f32::NAN.to_bits(),
                    (-f32::NAN).to_bits(),
                    0x7F80_0001, // a signalling NaN
                    0xFFFF_FFFF,
                    f32::INFINITY.to_bits(),
                    f32::NEG_INFINITY.to_bits(),
                    (-0.0f32).to_bits(),
                    1, // the smallest subnormal
                    f32::MAX.to_bits(),
                ],
                rng,
            ),
            Mutation::ExtraFrame => {
                let frame = match rng.random_range(0..4) {
                    0 => Vec::new(),
                    1 => {
                        let n = rng.random_range(1..=HEADER_LEN + 8);
                        random_bytes(rng, n)
                    }
                    2 => frames.first().cloned().unwrap_or_default(),
                    _ => self
                        .any_template(rng)
                        .frames
                        .first()
                        .cloned()
                        .unwrap_or_default(),
                };
                let at = rng.random_range(0..=frames.len());
                frames.insert(at, frame);
            }
            Mutation::MissingFrame => {
                if !frames.is_empty() {
                    let at = rng.random_range(0..frames.len());
                    frames.remove(at);
                }
            }
            Mutation::EmptyFrame => {
                if let Some(f) = pick_frame(frames, rng) {
                    f.clear();
                }
            }
            Mutation::Splice => {
                let other = &self.any_template(rng).frames;
                match rng.random_range(0..3) {
                    0 => {
                        // This header, the other's payload (or the reverse).
                        if frames.len() >= 2 && other.len() >= 2 {
                            let i = rng.random_range(0..2);
                            frames[i] = other[i].clone();
                        }
                    }
                    1 => {
                        if let (Some(i), false) = (pick_index(frames, rng), other.is_empty()) {
                            let theirs = &other[i.min(other.len() - 1)];
                            let cut = rng.random_range(0..=frames[i].len().min(theirs.len()));
                            frames[i].truncate(cut);
                            frames[i].extend_from_slice(&theirs[cut..]);
                        }
                    }
                    _ => frames.extend(other.iter().cloned()),
                }
            }
            Mutation::DtypeSwap => self.dtype_swap(frames, rng),
            Mutation::Text => {
                if frames.len() < 2 {
                    return;
                }
                frames[1] = match rng.random_range(0..3) {
                    0 => "texte précis ✓ 日本".as_bytes().to_vec(),
                    1 => vec![0xC3], // a cut two-byte sequence
                    _ => {
                        let n = rng.random_range(1..32);
                        random_bytes(rng, n)
                    }
                };
                if rng.random_bool(0.5) {
                    // As text: dtype none, no dimensions.
                    poke(frames, 6, &[0, 0]);
                    poke(frames, 64, &[0; 16]);
                }
            }
            Mutation::VersionSwitch => {
                let v = if peek_u8(frames, 4) == Some(VERSION) {
                    OLDEST_VERSION
                } else {
                    VERSION
                };
                poke(frames, 4, &[v]);
            }
            Mutation::Compression => self.compression(frames, rng),
            Mutation::Bomb => self.bomb(frames, rng),
            Mutation::InflateSize => self.inflate_size(frames, rng),
            Mutation::CorruptStream => self.corrupt_stream(frames, rng),
            Mutation::QuantScale => {
                self.quant_scale(frames, rng);
            }
            Mutation::HalfNonFinite => self.set_element(
                frames,
                Values::F16,
                &[
                    0x7C00, // +inf
                    0xFC00, // −inf
                    0x7E00, // NaN
                    0x7C01, // a signalling NaN
                    0xFFFF, 0x8000, // −0
                    0x0001, // the smallest subnormal
                    0x7BFF, // 65504, the largest finite
                ],
                rng,
            ),
            Mutation::EncodingSwitch => self.encoding_switch(frames, rng),
        }
    }

    /// A template of any kind (for splicing and extra headers).
    fn any_template<R: Rng + ?Sized>(&self, rng: &mut R) -> &Template {
        let infers: usize = self.infer.iter().map(Vec::len).sum();
        let n = infers + self.other.len() + self.given.len();
        let i = rng.random_range(0..n.max(1));
        self.templates().nth(i).unwrap_or_else(|| &self.other[0])
    }

    /// Layers of exit `exit` (0 when there is no such exit).
    fn chain_len(&self, exit: u8) -> usize {
        usize::from(exit)
            .checked_sub(1)
            .and_then(|e| self.shapes.boundaries.get(e))
            .map_or(0, Vec::len)
    }

    fn huge_shape<R: Rng + ?Sized>(&self, frames: &mut Frames, rng: &mut R) {
        let limit = self.shapes.max_payload;
        // The body of `[n]` in the header's dtype: a fixed part (q8's scale and zero
        // point) and a part per element.
        let values = values_of(frames);
        let body = |n: usize| {
            values
                .body_len(n, values.groups(&[n]))
                .unwrap_or(usize::MAX)
        };
        let (fixed, per) = (body(0), body(1) - body(0));
        let at_limit = limit.saturating_sub(fixed) / per.max(1);
        let (shape, payload): (Vec<u32>, Option<usize>) = match rng.random_range(0..6) {
            0 => (vec![65536; 4], None),
            1 => (vec![u32::MAX; 4], None),
            2 => (vec![65536, 65536, 1, 1], None),
            3 => (vec![1024, 1024, 1024], None),
            // One element past the limit, the payload to match the shape.
            4 => (vec![(at_limit + 1) as u32], Some(body(at_limit + 1))),
            // Exactly at the limit.
            _ => (vec![at_limit as u32], Some(body(at_limit))),
        };
        write_shape(frames, &shape);
        if let (Some(len), Some(f)) = (payload, frames.get_mut(1)) {
            f.resize(len, 0);
        }
    }

    fn reshape<R: Rng + ?Sized>(&self, frames: &mut Frames, rng: &mut R) {
        let shape: Vec<u32> = if rng.random_bool(0.5) && !self.shapes.boundaries.is_empty() {
            let chain = pick(rng, &self.shapes.boundaries);
            if chain.is_empty() {
                return;
            }
            pick(rng, chain).clone()
        } else {
            let ndim = rng.random_range(1..=MAX_DIMS);
            (0..ndim).map(|_| rng.random_range(1..=6)).collect()
        };
        // A tensor that decodes is written again in its encoding, in the new shape.
        if let Ok(msg) = Message::decode(frames)
            && let Some(encoding) = msg.header.encoding()
            && let Some(again) = rewrite(&msg, encoding, &shape)
        {
            *frames = again;
            return;
        }
        let size = values_of(frames).body_len(1, 0).unwrap_or(1);
        write_shape(frames, &shape);
        if let Some(f) = frames.get_mut(1) {
            let len = elements(&shape) * size;
            if size == 4 {
                let old = f.len();
                f.resize(len, 0);
                // Fresh elements are finite: 1.0.
                for c in f[old.min(len) / 4 * 4..].chunks_exact_mut(4) {
                    c.copy_from_slice(&1.0f32.to_le_bytes());
                }
            } else {
                f.resize(len, 0x55);
            }
        }
    }

    /// The header and body of the tensor `frames` carry (inflated when compressed): `None`
    /// when they are not two frames, the header does not decode or carries no tensor, the
    /// body is over the payload limit, or the payload is not the body (another length, or
    /// a stream that does not inflate to it).
    fn tensor(&self, frames: &Frames) -> Option<(Header, Vec<u8>)> {
        let [header, payload] = frames.as_slice() else {
            return None;
        };
        let header = Header::decode(header).ok()?;
        let len = header
            .body_len()
            .filter(|&n| n > 0 && n <= self.shapes.max_payload.min(MAX_PAYLOAD))?;
        let body = if header.compressed {
            encoding::decompress(payload, len).ok()?
        } else if payload.len() == len {
            payload.clone()
        } else {
            return None;
        };
        Some((header, body))
    }

    /// [`Corpus::tensor`] with values `want(header)`: a tensor holding other values is
    /// re-encoded first (when it decodes), keeping its lossless stage.
    fn tensor_as(
        &self,
        frames: &mut Frames,
        want: impl FnOnce(&Header) -> Values,
    ) -> Option<(Header, Vec<u8>)> {
        let (header, body) = self.tensor(frames)?;
        let values = want(&header);
        if header.dtype == Dtype::of(values) {
            return Some((header, body));
        }
        let msg = Message::decode(frames).ok()?;
        let shape = msg.header.shape.clone();
        *frames = rewrite(&msg, Encoding::new(values, header.compressed), &shape)?;
        self.tensor(frames)
    }

    /// One element of a `values` tensor (`f32` or `f16`) set to one of `bits` (as wide as
    /// an element): in the body, compressed again when it was; another tensor is converted
    /// first; any other payload gets the bits at a random aligned place.
    fn set_element<R: Rng + ?Sized>(
        &self,
        frames: &mut Frames,
        values: Values,
        bits: &[u32],
        rng: &mut R,
    ) {
        let width = values.body_len(1, 0).unwrap_or(1);
        let bytes = pick(rng, bits).to_le_bytes();
        let put = |f: &mut [u8], rng: &mut R| {
            let at = width * rng.random_range(0..f.len() / width);
            f[at..at + width].copy_from_slice(&bytes[..width]);
        };
        if let Some((header, mut body)) = self.tensor_as(frames, |_| values) {
            put(&mut body, rng);
            put_body(frames, &body, header.compressed);
        } else if let Some(f) = frames.get_mut(1).filter(|f| f.len() >= width) {
            put(f, rng);
        }
    }

    fn compression<R: Rng + ?Sized>(&self, frames: &mut Frames, rng: &mut R) {
        let Some(dtype) = peek_u8(frames, 6) else {
            return;
        };
        let tensor = if rng.random_bool(0.5) {
            self.tensor(frames)
        } else {
            None
        };
        poke(frames, 6, &[dtype ^ COMPRESSED]);
        let Some((header, body)) = tensor else {
            return;
        };
        let payload = if header.compressed {
            body
        } else if rng.random_bool(0.5) {
            encoding::compress(&body)
        } else {
            let window_log = rng.random_range(10..=31);
            let block = ZSTD_BLOCK.min(1 << window_log);
            let blocks: Vec<Block> = body.chunks(block).map(Block::Raw).collect();
            let size = rng.random_bool(0.5).then_some(body.len() as u64);
            zstd_frame(window_log, size, &blocks)
        };
        frames[1] = payload;
    }

    fn bomb<R: Rng + ?Sized>(&self, frames: &mut Frames, rng: &mut R) {
        let stream = match rng.random_range(0..3) {
            0 => self.bomb.clone(),
            1 => {
                let blocks = rng.random_range(2..=256);
                zstd_frame(
                    17,
                    None,
                    &vec![Block::Rle(rng.random(), ZSTD_BLOCK); blocks],
                )
            }
            _ => match self.tensor(frames) {
                Some((header, body)) => {
                    let once = if header.compressed {
                        frames[1].clone()
                    } else {
                        encoding::compress(&body)
                    };
                    once.repeat(rng.random_range(2..=4))
                }
                None => self.bomb.clone(),
            },
        };
        set_compressed(frames);
        if let Some(p) = frames.get_mut(1) {
            *p = stream;
        }
    }

    fn inflate_size<R: Rng + ?Sized>(&self, frames: &mut Frames, rng: &mut R) {
        let Some((_, mut body)) = self.tensor(frames) else {
            return;
        };
        let by = if rng.random_bool(0.75) {
            rng.random_range(1..=8)
        } else {
            rng.random_range(9..=256)
        };
        if rng.random_bool(0.5) {
            body.truncate(body.len().saturating_sub(by));
        } else {
            body.extend(random_bytes(rng, by));
        }
        set_compressed(frames);
        put_body(frames, &body, true);
    }

    fn corrupt_stream<R: Rng + ?Sized>(&self, frames: &mut Frames, rng: &mut R) {
        let Some((header, body)) = self.tensor(frames) else {
            return;
        };
        let mut stream = if header.compressed {
            frames[1].clone()
        } else {
            encoding::compress(&body)
        };
        let n = stream.len();
        if n <= ZSTD_MAGIC.len() {
            return;
        }
        match rng.random_range(0..9) {
            // Cut inside the frame, or by its last bytes.
            0 => stream.truncate(rng.random_range(1..n)),
            1 => stream.truncate(n - rng.random_range(1..=3.min(n - 1))),
            // A bit or a byte past the magic: frame header, block headers, contents.
            2 => stream[rng.random_range(4..n)] ^= 1 << rng.random_range(0..8),
            3 => stream[rng.random_range(4..n)] = interesting_u8(rng),
            4 => stream[rng.random_range(0..4)] ^= 1 << rng.random_range(0..8),
            // Bytes after the frame.
            5 => {
                let extra = rng.random_range(1..=8);
                stream.extend(random_bytes(rng, extra));
            }
            // A skippable frame before or after (cut short a quarter of the time).
            6 => {
                let mut skip = skippable_frame(rng);
                if rng.random_ratio(1, 4) {
                    skip.pop();
                }
                if rng.random_bool(0.5) {
                    stream.splice(0..0, skip);
                } else {
                    stream.extend(skip);
                }
            }
            // An empty frame after.
            7 => stream.extend(encoding::compress(&[])),
            // A frame written here declaring a few bytes more or fewer than it holds, its
            // last block empty (libzstd checks the size on its one-shot path only).
            _ => {
                let by = rng.random_range(1..=8);
                let declared = if rng.random_bool(0.5) {
                    body.len() + by
                } else {
                    body.len().saturating_sub(by)
                };
                let mut blocks: Vec<Block> = body.chunks(ZSTD_BLOCK).map(Block::Raw).collect();
                blocks.push(Block::Raw(&[]));
                stream = zstd_frame(17, Some(declared as u64), &blocks);
            }
        }
        set_compressed(frames);
        frames[1] = stream;
    }

    /// `None` when `frames` hold no tensor that can be quantised.
    fn quant_scale<R: Rng + ?Sized>(&self, frames: &mut Frames, rng: &mut R) -> Option<()> {
        let per_channel = rng.random_bool(0.5);
        let four_bits = rng.random_bool(0.5);
        let (header, mut body) = self.tensor_as(frames, |h| match h.dtype {
            Dtype::Q8 | Dtype::Q8c | Dtype::Q4 | Dtype::Q4c => {
                h.dtype.values().expect("a tensor dtype")
            }
            _ => {
                let channels = per_channel && Values::Q8c.fits(h.shape.len());
                match (four_bits, channels) {
                    (false, false) => Values::Q8,
                    (false, true) => Values::Q8c,
                    (true, false) => Values::Q4,
                    (true, true) => Values::Q4c,
                }
            }
        })?;
        let shape: Vec<usize> = header.shape.iter().map(|&d| d as usize).collect();
        let values = header.dtype.values()?;
        let groups = values.groups(&shape);
        let g = rng.random_range(0..groups.max(1));
        let scale = f32::from_le_bytes(body.get(4 * g..4 * g + 4)?.try_into().ok()?);
        match rng.random_range(0..10) {
            // Any 8-bit zero point is valid; a 4-bit one only up to 15.
            0 | 1 => {
                let random = rng.random();
                *body.get_mut(4 * groups + g)? = *pick(rng, &[0, 15, 16, 255, random]);
            }
            // The padding nibble after an odd count of 4-bit codes.
            2 if values.bits() == Some(4) && elements(&header.shape) % 2 == 1 => {
                *body.last_mut()? |= rng.random_range(1..=15) << 4;
            }
            roll => {
                let new_scale = if roll < 4 {
                    // Valid, though odd: a subnormal, the smallest normal, tiny, the largest.
                    *pick(
                        rng,
                        &[f32::from_bits(1), f32::MIN_POSITIVE, 1e-30, f32::MAX],
                    )
                } else {
                    *pick(
                        rng,
                        &[
                            0.0,
                            -0.0,
                            -1.0,
                            -scale,
                            f32::NAN,
                            -f32::NAN,
                            f32::INFINITY,
                            f32::NEG_INFINITY,
                        ],
                    )
                };
                body[4 * g..4 * g + 4].copy_from_slice(&new_scale.to_le_bytes());
            }
        }
        put_body(frames, &body, header.compressed);
        Some(())
    }

    fn encoding_switch<R: Rng + ?Sized>(&self, frames: &mut Frames, rng: &mut R) {
        let to = if rng.random_ratio(1, 5) {
            *pick(rng, &Encoding::INPUTS)
        } else {
            *pick(rng, &Encoding::ACTIVATIONS)
        };
        if rng.random_bool(0.5)
            && let Ok(msg) = Message::decode(frames)
            && let Some(again) = rewrite(&msg, to, &msg.header.shape)
        {
            *frames = again;
        } else {
            let flag = if to.lossless { COMPRESSED } else { 0 };
            poke(frames, 6, &[Dtype::of(to.values) as u8 | flag]);
        }
    }

    fn dtype_swap<R: Rng + ?Sized>(&self, frames: &mut Frames, rng: &mut R) {
        let Some(dtype) = peek_u8(frames, 6) else {
            return;
        };
        let (to, payload): (u8, Option<Vec<u8>>) = match (dtype, frames.get(1)) {
            (1, Some(p)) => (
                2,
                Some(p.iter().flat_map(|&b| f32::from(b).to_le_bytes()).collect()),
            ),
            (2, Some(p)) => (
                1,
                Some(
                    p.chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as u8)
                        .collect(),
                ),
            ),
            _ => (if rng.random_bool(0.5) { 1 } else { 2 }, None),
        };
        poke(frames, 6, &[to]);
        if let Some(p) = payload {
            frames[1] = p;
        }
    }
}

/// Elements of a shape (1 for `[]`), saturating.
fn elements<T: Copy + Into<u64>>(shape: &[T]) -> usize {
    let n = shape.iter().fold(1u64, |n, &d| n.saturating_mul(d.into()));
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// `msg` with its tensor written again: as `encoding`, in `shape` (values dropped, or
/// 1.0 added, to fit it); the values as near as the encoding holds them (a `u8` tensor's
/// bytes are its values). `None` when `msg` has no tensor.
fn rewrite(msg: &Message, encoding: Encoding, shape: &[u32]) -> Option<Frames> {
    let mut values = match &msg.payload {
        Payload::U8(bytes) => bytes.iter().map(|&b| f32::from(b)).collect(),
        tensor => tensor.to_f32()?,
    };
    values.resize(elements(shape), 1.0);
    let dims: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
    let mut header = msg.header.clone();
    header.shape = shape.to_vec();
    header.set_encoding(encoding);
    let payload = Payload::encode_f32(&values, encoding.values, &dims);
    Some(Message { header, payload }.encode().to_vec())
}

/// The values the header's dtype byte names (`u8` for none or an unknown one).
fn values_of(frames: &Frames) -> Values {
    peek_u8(frames, 6)
        .and_then(|b| Dtype::from_u8(b & !COMPRESSED))
        .and_then(Dtype::values)
        .unwrap_or(Values::U8)
}

/// Sets the dtype byte's compression bit.
fn set_compressed(frames: &mut Frames) {
    if let Some(d) = peek_u8(frames, 6) {
        poke(frames, 6, &[d | COMPRESSED]);
    }
}

/// Writes `body` as the payload (when there is one), through zstd when `compressed`.
fn put_body(frames: &mut Frames, body: &[u8], compressed: bool) {
    if let Some(p) = frames.get_mut(1) {
        *p = if compressed {
            encoding::compress(body)
        } else {
            body.to_vec()
        };
    }
}

/// The magic number that opens a zstd frame (0xFD2FB528, little-endian).
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];

/// The largest block of a zstd frame, bytes (RFC 8878 §3.1.1.2.4).
const ZSTD_BLOCK: usize = 128 << 10;

/// A block of a zstd frame written by [`zstd_frame`].
#[derive(Debug, Clone, Copy)]
enum Block<'a> {
    /// Stored bytes.
    Raw(&'a [u8]),
    /// One byte repeated this many times.
    Rle(u8, usize),
}

/// A zstd frame (RFC 8878) written here rather than by libzstd, so the streams the fuzzer
/// sends are not only those libzstd writes: a window of 2^`window_log` bytes (10 to 41),
/// the content size (8 bytes) when given, then `blocks` (none: one empty raw block), the
/// last one marked. Blocks must not exceed the window or [`ZSTD_BLOCK`] to be valid.
fn zstd_frame(window_log: u32, content_size: Option<u64>, blocks: &[Block]) -> Vec<u8> {
    let mut out = ZSTD_MAGIC.to_vec();
    // Frame header descriptor: bits 7–6 say how wide the content size is (3: 8 bytes; 0:
    // absent, the frame not being single-segment); no checksum, no dictionary.
    out.push(if content_size.is_some() { 0xC0 } else { 0 });
    // Window descriptor: exponent (window_log − 10) in bits 7–3, mantissa 0.
    out.push(((window_log.clamp(10, 41) - 10) << 3) as u8);
    if let Some(n) = content_size {
        out.extend_from_slice(&n.to_le_bytes());
    }
    let empty = [Block::Raw(&[])];
    let blocks = if blocks.is_empty() {
        &empty[..]
    } else {
        blocks
    };
    for (i, block) in blocks.iter().enumerate() {
        let (kind, size, bytes) = match *block {
            Block::Raw(bytes) => (0, bytes.len(), bytes),
            Block::Rle(byte, n) => (1, n, &[byte][..]),
        };
        // Block header, 3 bytes: last-block bit, type (2 bits), size (21 bits).
        let last = u32::from(i + 1 == blocks.len());
        let header = last | (kind << 1) | ((size as u32 & 0x1F_FFFF) << 3);
        out.extend_from_slice(&header.to_le_bytes()[..3]);
        out.extend_from_slice(bytes);
    }
    out
}

/// A skippable zstd frame (magic 0x184D2A5?, a 4-byte size, that many bytes): decoders
/// step over it.
fn skippable_frame<R: Rng + ?Sized>(rng: &mut R) -> Vec<u8> {
    let n = rng.random_range(0..=16);
    let mut frame = vec![0x50 | rng.random_range(0..16u8), 0x2A, 0x4D, 0x18];
    frame.extend_from_slice(&(n as u32).to_le_bytes());
    frame.extend(random_bytes(rng, n));
    frame
}

/// Writes `shape` and its `ndim` into the header (whatever of it exists).
fn write_shape(frames: &mut Frames, shape: &[u32]) {
    poke(frames, 7, &[shape.len() as u8]);
    let mut dims = [0u8; 4 * MAX_DIMS];
    for (i, d) in shape.iter().take(MAX_DIMS).enumerate() {
        dims[4 * i..4 * i + 4].copy_from_slice(&d.to_le_bytes());
    }
    poke(frames, 64, &dims);
}

/// Writes `bytes` at `at` of the first frame, as far as the frame reaches.
pub fn poke(frames: &mut Frames, at: usize, bytes: &[u8]) {
    if let Some(h) = frames.first_mut()
        && at < h.len()
    {
        let n = bytes.len().min(h.len() - at);
        h[at..at + n].copy_from_slice(&bytes[..n]);
    }
}

fn peek_u8(frames: &Frames, at: usize) -> Option<u8> {
    frames.first().and_then(|h| h.get(at).copied())
}

fn peek_u32(frames: &Frames, at: usize) -> Option<u32> {
    let b = frames.first()?.get(at..at + 4)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// A frame index, the header half of the time.
fn pick_index<R: Rng + ?Sized>(frames: &Frames, rng: &mut R) -> Option<usize> {
    match frames.len() {
        0 => None,
        _ if rng.random_bool(0.5) => Some(0),
        n => Some(rng.random_range(0..n)),
    }
}

fn pick_frame<'a, R: Rng + ?Sized>(frames: &'a mut Frames, rng: &mut R) -> Option<&'a mut Vec<u8>> {
    let i = pick_index(frames, rng)?;
    frames.get_mut(i)
}

fn pick<'a, T, R: Rng + ?Sized>(rng: &mut R, items: &'a [T]) -> &'a T {
    &items[rng.random_range(0..items.len())]
}

fn interesting_u8<R: Rng + ?Sized>(rng: &mut R) -> u8 {
    if rng.random_bool(0.5) {
        *pick(rng, &[0, 1, 2, 4, 5, 6, 0x7F, 0x80, 0xFE, 0xFF])
    } else {
        rng.random()
    }
}

fn random_bytes<R: Rng + ?Sized>(rng: &mut R, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rng.fill(&mut v[..]);
    v
}

/// Activations like a ReLU's output: half exact zeros, the rest mostly small and
/// positive, a few negative (a boundary before the ReLU), −0, subnormal or large.
fn activations<R: Rng + ?Sized>(rng: &mut R, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| match rng.random_range(0..64) {
            0..32 => 0.0,
            32 => -0.0,
            33 => f32::from_bits(rng.random_range(1..0x0080_0000)),
            34 => rng.random_range(1e3f32..1e30),
            35..40 => rng.random_range(-4.0f32..0.0),
            _ => rng.random_range(0.0f32..4.0),
        })
        .collect()
}

/// Finite values (logits): mostly small, some exact zeros, some large, some subnormal.
fn random_values<R: Rng + ?Sized>(rng: &mut R, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| match rng.random_range(0..16) {
            0 => 0.0,
            1 => -0.0,
            2 => f32::from_bits(rng.random_range(1..0x0080_0000)),
            3 => rng.random_range(-1e30f32..1e30),
            _ => rng.random_range(-4.0f32..4.0),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn shapes() -> Shapes {
        Shapes {
            digest: [3; 32],
            input: vec![1, 8, 8],
            classes: 10,
            boundaries: vec![
                vec![vec![1, 8, 8], vec![4, 8, 8], vec![16]],
                vec![vec![1, 8, 8], vec![4, 4, 4]],
            ],
            max_payload: 4 * 8 * 8 * 4,
        }
    }

    /// The Infer template of (exit, partition) in `encoding` and `version`.
    fn infer(corpus: &Corpus, exit: u8, partition: u8, encoding: &str, version: u8) -> Frames {
        let want = Origin::Infer {
            exit,
            partition,
            encoding: encoding.parse().unwrap(),
            version,
        };
        let t = corpus.templates().find(|t| t.origin == want);
        t.unwrap_or_else(|| panic!("no template {want:?}"))
            .frames
            .clone()
    }

    #[test]
    fn every_template_is_a_valid_message_of_its_kind() {
        let corpus = Corpus::new(shapes(), &mut ChaCha8Rng::seed_from_u64(1));
        let mut kinds = Vec::new();
        let mut infers = Vec::new();
        for t in corpus.templates() {
            let msg = Message::decode(&t.frames).unwrap_or_else(|e| panic!("{:?}: {e}", t.origin));
            assert_eq!(msg.encode().to_vec(), t.frames);
            kinds.push(msg.header.kind);
            if let Origin::Infer {
                exit,
                partition,
                encoding,
                version,
            } = t.origin
            {
                let h = &msg.header;
                assert_eq!((h.exit, h.partition), (exit, partition));
                assert_eq!((h.encoding(), h.version), (Some(encoding), version));
                let want =
                    &corpus.shapes().boundaries[usize::from(exit) - 1][usize::from(partition)];
                assert_eq!(&h.shape, want);
                assert!(Encoding::at_partition(usize::from(partition)).contains(&encoding));
                if version == OLDEST_VERSION {
                    assert!(
                        !encoding.lossless && h.dtype.in_version_1(),
                        "{:?}",
                        t.origin
                    );
                }
                infers.push((exit, partition, encoding, version));
            }
        }
        // Every encoding valid at each (exit, partition) in version 2, one in version 1.
        for (e, chain) in corpus.shapes().boundaries.iter().enumerate() {
            for (p, shape) in chain.iter().enumerate() {
                let at = |version: u8| {
                    let mut v: Vec<Encoding> = infers
                        .iter()
                        .filter(|i| (i.0, i.1, i.3) == (e as u8 + 1, p as u8, version))
                        .map(|i| i.2)
                        .collect();
                    v.sort();
                    v
                };
                let mut valid: Vec<Encoding> = Encoding::at_partition(p)
                    .iter()
                    .copied()
                    .filter(|e| e.values.fits(shape.len()))
                    .collect();
                valid.sort();
                assert_eq!(at(VERSION), valid, "exit {} p {p}", e + 1);
                let plain = if p == 0 { Encoding::RAW } else { Encoding::F32 };
                assert_eq!(at(OLDEST_VERSION), [plain], "exit {} p {p}", e + 1);
            }
        }
        // Infers: (2 + 12 + 8) + (2 + 12) in version 2 ([16] takes neither q8c nor q4c), 5
        // in version 1; 6 + 2 Pings, 2 Results, an Error per code, 1 Pong.
        for (kind, n) in [
            (MessageType::Infer, 41),
            (MessageType::Ping, 8),
            (MessageType::Result, 2),
            (MessageType::Error, ErrorCode::ALL.len()),
            (MessageType::Pong, 1),
        ] {
            assert_eq!(kinds.iter().filter(|k| **k == kind).count(), n, "{kind:?}");
        }
        // Compressed templates are smaller: realistic activations have zeros to squeeze.
        let f32_len = infer(&corpus, 1, 1, "f32", VERSION)[1].len();
        assert!(infer(&corpus, 1, 1, "f32+zstd", VERSION)[1].len() < f32_len * 3 / 4);
    }

    #[test]
    fn a_seed_gives_the_same_cases_and_every_mutation_runs_on_any_frames() {
        let mut corpus = Corpus::new(shapes(), &mut ChaCha8Rng::seed_from_u64(1));
        // Given starting points may be anything: no frames, one empty frame.
        corpus.add_given(vec![]);
        corpus.add_given(vec![vec![]]);
        let run = |seed| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            (0..200)
                .map(|_| corpus.case(&mut rng).frames)
                .collect::<Vec<_>>()
        };
        assert_eq!(run(5), run(5));
        assert_ne!(run(5), run(6));
        // Each mutation on odd inputs: no frames, an empty frame, a short header, many frames.
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let odd: Vec<Frames> = vec![
            vec![],
            vec![vec![]],
            vec![vec![0x45; 10], vec![1, 2, 3]],
            vec![vec![1; 80], vec![], vec![2; 200], vec![3]],
        ];
        for kind in Mutation::ALL {
            for frames in &odd {
                for _ in 0..50 {
                    let mut f = frames.clone();
                    corpus.apply(kind, &mut f, &mut rng);
                    assert!(
                        f.iter().map(Vec::len).sum::<usize>()
                            <= 2 * corpus.shapes().max_payload + 4096
                    );
                }
            }
        }
    }

    #[test]
    fn field_aware_mutations_change_what_they_name() {
        let corpus = Corpus::new(shapes(), &mut ChaCha8Rng::seed_from_u64(2));
        let infer = infer(&corpus, 1, 1, "f32", VERSION); // f32 [4, 8, 8]
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut seen_overflow = false;
        for _ in 0..200 {
            let mut f = infer.clone();
            corpus.apply(Mutation::HugeShape, &mut f, &mut rng);
            let h = &f[0];
            let dims: Vec<u32> = (0..4)
                .map(|i| u32::from_le_bytes(h[64 + 4 * i..68 + 4 * i].try_into().unwrap()))
                .collect();
            seen_overflow |= dims == [65536; 4];
            let product: u128 = dims[..usize::from(h[7])]
                .iter()
                .map(|&d| u128::from(d))
                .product();
            // Every huge shape is at or past the limit.
            assert!(
                product * 4 >= corpus.shapes().max_payload as u128,
                "{dims:?}"
            );
        }
        assert!(seen_overflow);
        for _ in 0..100 {
            let mut f = infer.clone();
            corpus.apply(Mutation::Reshape, &mut f, &mut rng);
            // A reshape keeps header and payload consistent: it still decodes.
            let msg = Message::decode(&f).unwrap();
            assert_eq!(msg.header.elements().unwrap() * 4, f[1].len());
        }
        for _ in 0..100 {
            let mut f = infer.clone();
            corpus.apply(Mutation::NonFinite, &mut f, &mut rng);
            match Message::decode(&f) {
                Ok(_) => {}
                Err(e) => assert_eq!(e.code, ErrorCode::NonFinite),
            }
        }
        let mut f = infer.clone();
        corpus.apply(Mutation::DtypeSwap, &mut f, &mut rng);
        let msg = Message::decode(&f).unwrap();
        assert_eq!((msg.header.dtype, f[1].len()), (Dtype::U8, 4 * 8 * 8));
    }

    /// Applies `kind` 200 times to `frames`; checks every answer of the decoder (`None`:
    /// decoded) is `allowed` and each of `seen` comes up.
    fn answers(
        corpus: &Corpus,
        kind: Mutation,
        frames: &Frames,
        allowed: &[Option<ErrorCode>],
        seen: &[Option<ErrorCode>],
    ) {
        let mut rng = ChaCha8Rng::seed_from_u64(kind as u64);
        let mut got = Vec::new();
        for _ in 0..200 {
            let mut f = frames.clone();
            corpus.apply(kind, &mut f, &mut rng);
            let answer = Message::decode(&f).err().map(|e| e.code);
            assert!(allowed.contains(&answer), "{kind:?}: {answer:?}");
            if !got.contains(&answer) {
                got.push(answer);
            }
        }
        for s in seen {
            assert!(got.contains(s), "{kind:?} never gave {s:?}: {got:?}");
        }
    }

    #[test]
    fn version_2_mutations_change_what_they_name() {
        use ErrorCode::*;
        let corpus = Corpus::new(shapes(), &mut ChaCha8Rng::seed_from_u64(4));
        let t = |p: u8, encoding: &str| infer(&corpus, 1, p, encoding, VERSION);
        let v1 = infer(&corpus, 1, 1, "f32", OLDEST_VERSION);
        // Streams that inflate past the tensor, or short of it.
        for frames in [t(1, "f32"), t(1, "q8c+zstd"), t(0, "u8")] {
            let c = Some(BadCompression);
            answers(&corpus, Mutation::Bomb, &frames, &[c], &[c]);
            answers(&corpus, Mutation::InflateSize, &frames, &[c], &[c]);
        }
        // A damaged stream: refused, or (valid padding, a flipped literal) still a tensor.
        let damaged = [
            None,
            Some(BadCompression),
            Some(NonFinite),
            Some(BadQuantization),
        ];
        for frames in [t(1, "f32+zstd"), t(1, "q8")] {
            let seen = [None, Some(BadCompression)];
            answers(&corpus, Mutation::CorruptStream, &frames, &damaged, &seen);
        }
        for frames in [t(1, "f32"), t(1, "q8c+zstd"), t(2, "q8")] {
            let all = [None, Some(BadQuantization), Some(NonFinite)];
            answers(&corpus, Mutation::QuantScale, &frames, &all, &all);
        }
        for frames in [t(1, "f16+zstd"), t(2, "f32"), t(0, "u8+zstd")] {
            let both = [None, Some(NonFinite)];
            answers(&corpus, Mutation::HalfNonFinite, &frames, &both, &both);
        }
        // The bit alone, or the payload compressed or inflated to match.
        let from_raw = [None, Some(BadCompression)];
        answers(
            &corpus,
            Mutation::Compression,
            &t(1, "f16"),
            &from_raw,
            &from_raw,
        );
        let from_zstd = [None, Some(BadLength)];
        answers(
            &corpus,
            Mutation::Compression,
            &t(1, "q8+zstd"),
            &from_zstd,
            &from_zstd,
        );
        // Version 1 has neither f16, q8, q8c nor compression.
        let (ok, dtype) = ([None], [Some(BadDtype)]);
        answers(
            &corpus,
            Mutation::VersionSwitch,
            &t(1, "f16"),
            &dtype,
            &dtype,
        );
        answers(&corpus, Mutation::VersionSwitch, &t(1, "f32"), &ok, &ok);
        answers(&corpus, Mutation::VersionSwitch, &v1, &ok, &ok);
        // Re-encoded it decodes (q8c fits [4, 8, 8]); the payload kept, it rarely does.
        let switched = [None, Some(BadLength), Some(BadCompression)];
        answers(
            &corpus,
            Mutation::EncodingSwitch,
            &t(1, "f32"),
            &switched,
            &switched,
        );
        let mut rng = ChaCha8Rng::seed_from_u64(8);
        for _ in 0..50 {
            let mut f = t(1, "q8c");
            corpus.apply(Mutation::QuantScale, &mut f, &mut rng);
            assert_eq!(f[0][6], Dtype::Q8c as u8, "a q8c tensor stays q8c");
        }
    }

    /// What libzstd's streaming decoder makes of `stream`, any window it can take allowed.
    fn inflate(stream: &[u8]) -> std::io::Result<Vec<u8>> {
        use std::io::Read;
        let mut decoder = zstd::stream::read::Decoder::new(stream)?;
        decoder.window_log_max(31)?;
        let mut out = Vec::new();
        decoder.read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn frames_written_here_are_zstd_that_libzstd_reads() {
        let corpus = Corpus::new(shapes(), &mut ChaCha8Rng::seed_from_u64(5));
        let frames = infer(&corpus, 1, 1, "f32+zstd", VERSION);
        let msg = Message::decode(&frames).unwrap();
        let (_, body) = corpus.tensor(&frames).unwrap();
        assert_eq!(body.len(), 1024);
        // Raw blocks, any window libzstd takes (1 KiB to 2 GiB), the size declared or not.
        for window_log in 10..=31 {
            for size in [None, Some(body.len() as u64)] {
                let block = ZSTD_BLOCK.min(1 << window_log);
                let blocks: Vec<Block> = body.chunks(block).map(Block::Raw).collect();
                let stream = zstd_frame(window_log, size, &blocks);
                assert_eq!(inflate(&stream).unwrap(), body);
                let f = vec![frames[0].clone(), stream];
                assert_eq!(
                    Message::decode(&f).as_ref(),
                    Ok(&msg),
                    "window 2^{window_log}"
                );
            }
        }
        assert!(inflate(&zstd_frame(10, Some(0), &[])).is_ok_and(|b| b.is_empty()));
        // An RLE bomb: 4 bytes a block, 128 KiB each.
        let bomb = zstd_frame(17, None, &[Block::Rle(7, ZSTD_BLOCK); 3]);
        assert_eq!(bomb.len(), 6 + 3 * 4);
        assert_eq!(inflate(&bomb).unwrap(), vec![7; 3 * ZSTD_BLOCK]);
        let f = vec![frames[0].clone(), bomb];
        assert_eq!(
            Message::decode(&f).unwrap_err().code,
            ErrorCode::BadCompression
        );
        // A skippable frame is stepped over.
        let mut rng = ChaCha8Rng::seed_from_u64(6);
        let padded = [skippable_frame(&mut rng), frames[1].clone()].concat();
        assert_eq!(inflate(&padded).unwrap(), body);
        assert!(corpus.bomb.len() < 1024);
    }
}
