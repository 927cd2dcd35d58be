//! Structure-aware mutation of protocol messages, for fuzzing on stable Rust
//! (`edgent-edge fuzz`, `cargo xtask fuzz`).
//!
//! A [`Corpus`] holds valid messages of every type for a plan's shapes: an Infer at every
//! (exit, partition) with the right dtype, shape and payload (the `u8` image at `p = 0`,
//! `f32` activations after), Pings with and without padding, Results, Errors with every
//! code, a Pong. [`Corpus::case`] takes one, freshens its request id and deadline, and
//! stacks a few [`Mutation`]s on it: blind ones (bit flips, byte sets, truncations,
//! extensions, splices, extra, missing and empty frames) and field-aware ones (magic,
//! version, type, dtype, ndim, shape, exit, partition, code, digest, request id, the fields a
//! request must leave 0, NaN and infinities in `f32` tensors, shapes whose product
//! overflows or passes the payload limit, a consistent reshape of header and payload).
//!
//! This module depends only on [`super::protocol`] and `rand`, so a cargo-fuzz target can
//! compile it by `#[path]` as it does the protocol.

use rand::Rng;

use super::protocol::{
    Dtype, ErrorCode, HEADER_LEN, Header, MAX_DIMS, Message, MessageType, Payload,
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
    /// Another protocol version.
    Version,
    /// Another (or an unknown) message type.
    Type,
    /// Another (or an unknown) dtype, payload unchanged.
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
    /// NaN or an infinity (or a finite oddity: −0, a subnormal, `f32::MAX`) in the payload.
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
}

impl Mutation {
    /// Every kind, in declaration order.
    pub const ALL: [Mutation; 26] = [
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
    infer: Vec<Template>,
    other: Vec<Template>,
    given: Vec<Template>,
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
                let payload = if p == 0 {
                    Payload::U8(random_bytes(rng, elements(&shapes.input)))
                } else {
                    Payload::F32(random_values(rng, elements(shape)))
                };
                let shape: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
                let msg = Message::infer(
                    shapes.digest,
                    rng.random(),
                    exit,
                    partition,
                    rng.random(),
                    &shape,
                    payload,
                );
                infer.push(Template {
                    origin: Origin::Infer { exit, partition },
                    frames: msg.encode().to_vec(),
                });
            }
        }
        let mut other = Vec::new();
        for padding in [0, 1, 7, 64, 1000, shapes.max_payload] {
            let mut header = Header::new(MessageType::Ping, shapes.digest, rng.random());
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
        self.infer.iter().chain(&self.other).chain(&self.given)
    }

    fn pick<R: Rng + ?Sized>(&self, rng: &mut R) -> &Template {
        let roll = rng.random_range(0..100);
        if roll < 3 && !self.given.is_empty() {
            &self.given[rng.random_range(0..self.given.len())]
        } else if roll < 65 && !self.infer.is_empty() {
            &self.infer[rng.random_range(0..self.infer.len())]
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
        let count = if rng.random_ratio(1, 16) {
            0
        } else {
            // 1, 2, 3, … with halving odds.
            1 + (rng.random::<u32>() | (1 << (MAX_STACK - 1))).trailing_zeros() as usize
        };
        let mut mutations = Vec::with_capacity(count);
        for _ in 0..count {
            let kind = Mutation::ALL[rng.random_range(0..Mutation::ALL.len())];
            self.apply(kind, &mut frames, rng);
            mutations.push(kind);
        }
        Case {
            origin: template.origin,
            frames,
            mutations,
        }
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
                let v = *pick(rng, &[0, 2, 3, 0x7F, 0x80, 0xFF]);
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
                    rng.random_range(0..=3)
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
            Mutation::NonFinite => {
                if let Some(f) = frames.get_mut(1).filter(|f| f.len() >= 4) {
                    let at = 4 * rng.random_range(0..f.len() / 4);
                    let bits: u32 = *pick(
                        rng,
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
                    );
                    f[at..at + 4].copy_from_slice(&bits.to_le_bytes());
                }
            }
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
        }
    }

    /// A template of any kind (for splicing and extra headers).
    fn any_template<R: Rng + ?Sized>(&self, rng: &mut R) -> &Template {
        let n = self.infer.len() + self.other.len() + self.given.len();
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
        let size = match peek_u8(frames, 6) {
            Some(2) => 4,
            _ => 1,
        };
        let (shape, payload): (Vec<u32>, Option<usize>) = match rng.random_range(0..6) {
            0 => (vec![65536; 4], None),
            1 => (vec![u32::MAX; 4], None),
            2 => (vec![65536, 65536, 1, 1], None),
            3 => (vec![1024, 1024, 1024], None),
            // One element past the limit, the payload to match the shape.
            4 => (
                vec![(limit / size + 1) as u32],
                Some(limit / size * size + size),
            ),
            // Exactly at the limit.
            _ => (vec![(limit / size) as u32], Some(limit / size * size)),
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
        let size = match peek_u8(frames, 6) {
            Some(2) => 4,
            _ => 1,
        };
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

/// Finite activations: mostly small, some exact zeros, some large, some subnormal.
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

    #[test]
    fn every_template_is_a_valid_message_of_its_kind() {
        let corpus = Corpus::new(shapes(), &mut ChaCha8Rng::seed_from_u64(1));
        let mut kinds = Vec::new();
        for t in corpus.templates() {
            let msg = Message::decode(&t.frames).unwrap_or_else(|e| panic!("{:?}: {e}", t.origin));
            assert_eq!(msg.encode().to_vec(), t.frames);
            kinds.push(msg.header.kind);
            if let Origin::Infer { exit, partition } = t.origin {
                assert_eq!((msg.header.exit, msg.header.partition), (exit, partition));
                let want =
                    &corpus.shapes().boundaries[usize::from(exit) - 1][usize::from(partition)];
                assert_eq!(&msg.header.shape, want);
                let dtype = if partition == 0 {
                    Dtype::U8
                } else {
                    Dtype::F32
                };
                assert_eq!(msg.header.dtype, dtype);
            }
        }
        // 5 Infers, 6 Pings, 2 Results, an Error per code, 1 Pong.
        for (kind, n) in [
            (MessageType::Infer, 5),
            (MessageType::Ping, 6),
            (MessageType::Result, 2),
            (MessageType::Error, ErrorCode::ALL.len()),
            (MessageType::Pong, 1),
        ] {
            assert_eq!(kinds.iter().filter(|k| **k == kind).count(), n, "{kind:?}");
        }
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
        let infer = corpus.infer[1].frames.clone(); // exit 1, p = 1: f32 [4, 8, 8]
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
}
