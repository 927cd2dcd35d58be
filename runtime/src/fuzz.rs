//! The fuzzer's oracle: runs one case (a list of frames) through the decoder
//! ([`Message::decode`], [`Message::decode_with`] with an edge's [`Accept`]) and the edge's
//! admission ([`admission`]) and checks invariants, not only the absence of panics:
//!
//! * each decoder's answer is the one PROTOCOL.md gives for these bytes, worked out here
//!   from the raw bytes (the code of the first failing check; among the header's dtype and
//!   shape checks, any code whose condition holds), with the request id the header carries;
//! * a decoded message re-encodes to the very same frames (so they decode to it again);
//! * an error reply carries a known code, encodes and decodes to itself;
//! * admission refuses exactly what the decoder refuses, with its code; otherwise answers
//!   what the plan checks demand, in PROTOCOL.md's order (`unknown_plan`, `bad_field`,
//!   `bad_exit`, `bad_partition`, `bad_dtype`, `wrong_shape`), a Pong to a clean Ping, and
//!   runs the rest: the header as decoded, an input of exactly the (exit, partition)
//!   boundary's element count, finite, from a payload within `plan.max_payload`.
//!
//! Cases come from [`crate::wire::mutate`]; case `i` of a run with seed `s` draws from
//! [`case_rng`]`(s, i)`, so any case can be regenerated alone. Failing cases are saved as
//! `.frames` files ([`encode_frames`]): each frame as a little-endian `u32` length and its
//! bytes, one after the other (an empty file holds no frames).

use std::cell::OnceCell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::LayerTable;
use crate::edge::{Admission, ServedPlan, admission};
use crate::model::normalize;
use crate::wire::encoding::Encoding;
use crate::wire::mutate::{Corpus, Frames, Mutation, Origin, Shapes};
use crate::wire::protocol::{
    Accept, COMPRESSED, ErrorCode, HEADER_LEN, Header, MAGIC, MAX_DIMS, Message, MessageType,
    OLDEST_VERSION, Payload, ProtocolError, VERSION,
};

/// The shapes valid requests for `plan` have, for [`Corpus::new`].
pub fn shapes(table: &LayerTable, plan: &ServedPlan) -> Shapes {
    let dims = |s: &[usize]| s.iter().map(|&d| d as u32).collect::<Vec<u32>>();
    Shapes {
        digest: plan.digest,
        input: dims(&table.input),
        classes: table.classes as u32,
        boundaries: table
            .exits
            .iter()
            .map(|e| (0..e.len()).map(|p| dims(e.boundary_shape(p))).collect())
            .collect(),
        max_payload: plan.max_payload,
    }
}

/// The RNG of case `index` of a run seeded with `seed`.
pub fn case_rng(seed: u64, index: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(index);
    rng
}

/// The corpus of a run seeded with `seed` (its templates' contents drawn from a stream no
/// case uses).
pub fn corpus(table: &LayerTable, plan: &ServedPlan, seed: u64) -> Corpus {
    Corpus::new(shapes(table, plan), &mut case_rng(seed, u64::MAX))
}

/// What the edge's admission made of a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Handed to a worker.
    Run,
    /// Answered with a Pong.
    Pong,
    /// Answered with an error.
    Refused(ErrorCode),
}

/// A case that held every invariant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checked {
    /// The type [`Message::decode`] read, when it accepted the frames.
    pub decoded: Option<MessageType>,
    /// What admission did.
    pub outcome: Outcome,
}

/// What the decoder must answer for some frames, worked out from the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expected {
    Ok,
    /// This code, and no other.
    Code(ErrorCode),
    /// Several of the header's dtype and shape checks fail: any of these codes.
    OneOf(Vec<ErrorCode>),
}

impl Expected {
    fn allows(&self, code: ErrorCode) -> bool {
        match self {
            Self::Ok => false,
            Self::Code(c) => *c == code,
            Self::OneOf(codes) => codes.contains(&code),
        }
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

/// PROTOCOL.md's checks of a header frame (codes 2–7), from the bytes.
fn expected_header(h: &[u8], accept: &Accept) -> Expected {
    use ErrorCode::*;
    if h.len() != HEADER_LEN {
        return Expected::Code(BadHeaderLength);
    }
    if h[0..4] != MAGIC {
        return Expected::Code(BadMagic);
    }
    let version = h[4];
    if !(OLDEST_VERSION..=VERSION).contains(&version) {
        return Expected::Code(BadVersion);
    }
    let kind = match h[5] {
        1 => MessageType::Infer,
        2 => MessageType::Result,
        3 => MessageType::Error,
        4 => MessageType::Ping,
        5 => MessageType::Pong,
        _ => return Expected::Code(BadType),
    };
    if !accept.kinds.contains(&kind) {
        return Expected::Code(BadType);
    }
    let (compressed, dtype, ndim) = (
        h[6] & COMPRESSED != 0,
        h[6] & !COMPRESSED,
        usize::from(h[7]),
    );
    let dims: Vec<u32> = (0..MAX_DIMS).map(|i| u32_at(h, 64 + 4 * i)).collect();
    let mut failing = Vec::new();
    // dtypes: 0 none, 1 u8, 2 f32 (version 1 and 2); 3 f16, 4 q8, 5 q8c, 6 q4, 7 q4c and
    // the compression bit (version 2 only).
    if dtype > 7 || (version == 1 && (compressed || dtype > 2)) || (compressed && dtype == 0) {
        failing.push(BadDtype);
    }
    if ndim > MAX_DIMS || dims[..ndim].contains(&0) || dims[ndim..].iter().any(|&d| d != 0) {
        failing.push(BadShape);
    }
    if dtype <= 7 && (dtype == 0) != (ndim == 0) {
        failing.push(BadDtype);
    }
    if matches!(dtype, 5 | 7) && ndim < 2 {
        failing.push(BadDtype);
    }
    let tensor_ok = match kind {
        MessageType::Ping => dtype <= 1 && !compressed,
        MessageType::Pong => dtype == 0 && !compressed,
        _ => true,
    };
    if !tensor_ok {
        failing.push(BadDtype);
    }
    if kind == MessageType::Ping && ndim > 1 {
        failing.push(BadShape);
    }
    if failing.is_empty() {
        Expected::Ok
    } else {
        Expected::OneOf(failing)
    }
}

/// What the oracle works out about a payload once, for the verdicts on both decoders
/// (they read the same frames): the body a compressed payload inflates to (`None`: it does
/// not inflate to the tensor's size), and whether its values are finite (`f32`, `f16`, and
/// what quantised codes stand for).
#[derive(Debug, Default)]
struct Memo {
    inflated: OnceCell<Option<Vec<u8>>>,
    finite: OnceCell<bool>,
}

/// PROTOCOL.md's answer to `frames` under `accept`, from the bytes; `memo` keeps what one
/// answer works out for the next.
fn expected_decode<F: AsRef<[u8]>>(frames: &[F], accept: &Accept, memo: &Memo) -> Expected {
    use ErrorCode::*;
    let [h, p] = frames else {
        return Expected::Code(BadFrames);
    };
    let (h, p) = (h.as_ref(), p.as_ref());
    let header = expected_header(h, accept);
    if header != Expected::Ok {
        return header;
    }
    let limit = accept.max_payload;
    if p.len() > limit {
        return Expected::Code(BadLength);
    }
    let (kind, compressed, dtype, ndim) = (
        h[5],
        h[6] & COMPRESSED != 0,
        h[6] & !COMPRESSED,
        usize::from(h[7]),
    );
    if dtype == 0 {
        let text_ok =
            (kind == MessageType::Error as u8 || p.is_empty()) && std::str::from_utf8(p).is_ok();
        return if text_ok {
            Expected::Ok
        } else {
            Expected::Code(BadLength)
        };
    }
    let elements = (0..ndim)
        .map(|i| u128::from(u32_at(h, 64 + 4 * i)))
        .product::<u128>();
    // Bits per element, and 5 bytes (f32 scale, u8 zero point) per quantisation group.
    let (bits, groups): (u128, u128) = match dtype {
        1 => (8, 0),
        2 => (32, 0),
        3 => (16, 0),
        4 => (8, 1),
        5 => (8, u128::from(u32_at(h, 64))),
        6 => (4, 1),
        _ => (4, u128::from(u32_at(h, 64))),
    };
    let needed = (elements * bits).div_ceil(8) + 5 * groups;
    if needed > limit as u128 || (!compressed && needed != p.len() as u128) {
        return Expected::Code(BadLength);
    }
    if compressed && p.is_empty() {
        return Expected::Code(BadLength);
    }
    // The tensor's size depends on the header alone: both answers inflate to the same.
    let body = if compressed {
        match memo.inflated.get_or_init(|| inflate(p, needed as usize)) {
            Some(body) => body.as_slice(),
            None => return Expected::Code(BadCompression),
        }
    } else {
        p
    };
    // Quantised: the codes, one a byte (4-bit ones low nibble first).
    let quantised = (4..=7).contains(&dtype);
    let codes: Vec<u8> = match dtype {
        6 | 7 => body[5 * groups as usize..]
            .iter()
            .flat_map(|&b| [b & 0x0f, b >> 4])
            .collect(),
        _ if quantised => body[5 * groups as usize..].to_vec(),
        _ => Vec::new(),
    };
    if quantised {
        let g = groups as usize;
        let bad_scale = body[..4 * g].chunks_exact(4).any(|c| {
            let s = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            !(s.is_finite() && s > 0.0)
        });
        let top = if bits == 4 { 15 } else { 255 };
        let bad_zero = body[4 * g..5 * g].iter().any(|&z| z > top);
        // An odd count of 4-bit codes leaves a high nibble that must be 0.
        let bad_padding = codes.len() as u128 > elements && codes.last() != Some(&0);
        if bad_scale || bad_zero || bad_padding {
            return Expected::Code(BadQuantization);
        }
    }
    let all_finite = || match dtype {
        2 => body
            .chunks_exact(4)
            .all(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]).is_finite()),
        // binary16: exponent bits all ones is infinity or NaN.
        3 => body
            .chunks_exact(2)
            .all(|c| u16::from_le_bytes([c[0], c[1]]) & 0x7c00 != 0x7c00),
        // Quantised: each group's widest code from its zero point, times its scale (the
        // scales are finite and above 0 by now, and the product grows with the distance).
        _ if quantised => {
            let g = groups as usize;
            let (scales, rest) = body.split_at(4 * g);
            let zero_points = &rest[..g];
            let codes = &codes[..elements as usize];
            let per_group = (codes.len() / g).max(1);
            codes
                .chunks(per_group)
                .zip(zero_points)
                .zip(scales.chunks_exact(4))
                .all(|((run, &zero), s)| {
                    let widest = run.iter().map(|&q| q.abs_diff(zero)).max().unwrap_or(0);
                    (f32::from(widest) * f32::from_le_bytes([s[0], s[1], s[2], s[3]])).is_finite()
                })
        }
        _ => true,
    };
    if (2..=7).contains(&dtype) && !*memo.finite.get_or_init(all_finite) {
        return Expected::Code(NonFinite);
    }
    Expected::Ok
}

/// Largest window a zstd frame may declare, log2: libzstd's own limit on 64-bit targets.
/// PROTOCOL.md refuses a stream for what it inflates to, never for its window (a receiver
/// inflates into a buffer of the body's size and needs none), while the streaming decoder
/// refuses windows over 2^27 unless told otherwise.
const ZSTD_WINDOW_LOG_MAX: u32 = 31;

/// A zstd payload inflated apart from the edge's bulk decoder: frame by frame (skippable
/// frames too), each through the streaming decoder and held to the content size its
/// header declares, `expected + 1` bytes at most in all. The bytes when they are exactly
/// `expected`; `None` when the stream is corrupt, truncated, or inflates to another size.
///
/// The declared sizes are checked here because libzstd's streaming decoder checks them only
/// on its one-shot path (an output buffer as large as the frame): block by block, an empty
/// last block ends a frame unchecked, so a frame declaring 8 bytes and holding none read
/// as empty through the last byte of room `expected + 1` leaves.
fn inflate(payload: &[u8], expected: usize) -> Option<Vec<u8>> {
    use std::io::Read;
    use zstd::zstd_safe;
    let mut out = Vec::new();
    let mut rest = payload;
    while !rest.is_empty() {
        let len = zstd_safe::find_frame_compressed_size(rest).ok()?;
        let (frame, tail) = rest.split_at_checked(len)?;
        let declared = zstd_safe::get_frame_content_size(frame).ok()?;
        let mut decoder = zstd::stream::read::Decoder::with_buffer(frame)
            .ok()?
            .single_frame();
        decoder.window_log_max(ZSTD_WINDOW_LOG_MAX).ok()?;
        let room = (expected + 1).saturating_sub(out.len()) as u64;
        let n = decoder.take(room).read_to_end(&mut out).ok()?;
        if out.len() > expected || declared.is_some_and(|d| d != n as u64) {
            return None;
        }
        rest = tail;
    }
    (out.len() == expected).then_some(out)
}

/// The protocol version an answer to `frames` must be written in: the request's, when its
/// header is long enough, has the magic and a version this build speaks; else [`VERSION`].
fn expected_version<F: AsRef<[u8]>>(frames: &[F]) -> u8 {
    match frames.first().map(AsRef::as_ref) {
        Some(h)
            if h.len() == HEADER_LEN
                && h[0..4] == MAGIC
                && (OLDEST_VERSION..=VERSION).contains(&h[4]) =>
        {
            h[4]
        }
        _ => VERSION,
    }
}

/// The request id an error about `frames` must carry: the header's, once the header is
/// long enough and has the magic; for a wrong frame count, only when the first frame is a
/// whole valid header.
fn expected_request_id<F: AsRef<[u8]>>(frames: &[F], code: ErrorCode) -> u64 {
    let Some(h) = frames.first().map(AsRef::as_ref) else {
        return 0;
    };
    match code {
        ErrorCode::BadHeaderLength | ErrorCode::BadMagic => 0,
        ErrorCode::BadFrames if expected_header(h, &Accept::ANY) != Expected::Ok => 0,
        _ if h.len() == HEADER_LEN => u64_at(h, 40),
        _ => 0,
    }
}

/// Checks one decoder against the oracle; returns its answer. A message it decodes must
/// re-encode to the very frames it came from (so they decode to it again: decoding is a
/// function of the bytes).
fn check_decoder<F: AsRef<[u8]>>(
    frames: &[F],
    accept: &Accept,
    which: &str,
    memo: &Memo,
) -> Result<Result<Message, ProtocolError>, String> {
    let expected = expected_decode(frames, accept, memo);
    match Message::decode_with(frames, accept) {
        Ok(msg) if expected == Expected::Ok => {
            let again = msg.encode();
            // A compressed payload may have been compressed otherwise (another level, another
            // encoder): it must decode to the same message, not re-encode to the same bytes.
            let same = if msg.header.compressed {
                again[0] == *frames[0].as_ref()
                    && Message::decode_with(&again, accept).as_ref() == Ok(&msg)
            } else {
                again.len() == frames.len()
                    && again.iter().zip(frames).all(|(a, b)| a[..] == *b.as_ref())
            };
            if !same {
                return Err(format!(
                    "{which}: {:?} re-encodes to other frames",
                    msg.header
                ));
            }
            Ok(Ok(msg))
        }
        Ok(msg) => Err(format!(
            "{which} accepted a {:?} PROTOCOL.md refuses ({expected:?})",
            msg.header
        )),
        Err(e) => {
            if !expected.allows(e.code) {
                return Err(format!(
                    "{which} answered {} ({}), PROTOCOL.md says {expected:?}",
                    e.code.name(),
                    e.text
                ));
            }
            let id = expected_request_id(frames, e.code);
            if e.request_id != id {
                return Err(format!(
                    "{which}'s {} error carries request id {}, the header {id}",
                    e.code.name(),
                    e.request_id
                ));
            }
            let whole_header = frames
                .first()
                .is_some_and(|h| expected_header(h.as_ref(), &Accept::ANY) == Expected::Ok);
            let version = if e.code == ErrorCode::BadFrames && !whole_header {
                VERSION
            } else {
                expected_version(frames)
            };
            if e.version != version {
                return Err(format!(
                    "{which}'s {} error is for version {}, the request's is {version}",
                    e.code.name(),
                    e.version
                ));
            }
            check_reply(&Message::error([0; 32], e.request_id, e.code, &e.text))?;
            Ok(Err(e))
        }
    }
}

/// A reply an edge sends: a known code (never `busy` or `internal` from admission), and it
/// encodes to frames that decode to it.
fn check_reply(reply: &Message) -> Result<(), String> {
    let h = &reply.header;
    match h.kind {
        MessageType::Error => match ErrorCode::from_u16(h.code) {
            None => return Err(format!("error reply with unknown code {}", h.code)),
            Some(ErrorCode::Busy | ErrorCode::Internal) => {
                return Err(format!("admission answered {}", h.code));
            }
            Some(_) => {}
        },
        MessageType::Pong => {}
        other => return Err(format!("admission answered with a {other:?}")),
    }
    match Message::decode(&reply.encode()) {
        Ok(back) if back == *reply => Ok(()),
        other => Err(format!("reply {reply:?} decodes to {other:?}")),
    }
}

/// The plan checks PROTOCOL.md gives a decoded request, in its order: `None` to run it
/// (an Infer) or pong (a Ping).
fn expected_plan_code(h: &Header, table: &LayerTable, plan: &ServedPlan) -> Option<ErrorCode> {
    let zero = h.code == 0 && h.edge_us == 0 && h.queue_us == 0;
    if h.kind == MessageType::Ping {
        let ping_zero = h.exit == 0 && h.partition == 0 && h.deadline_us == 0;
        return (!(zero && ping_zero)).then_some(ErrorCode::BadField);
    }
    if h.plan_digest != plan.digest {
        return Some(ErrorCode::UnknownPlan);
    }
    if !zero {
        return Some(ErrorCode::BadField);
    }
    let Some(spec) = usize::from(h.exit)
        .checked_sub(1)
        .and_then(|e| table.exits.get(e))
    else {
        return Some(ErrorCode::BadExit);
    };
    let p = usize::from(h.partition);
    if p >= spec.len() {
        return Some(ErrorCode::BadPartition);
    }
    if !h
        .encoding()
        .is_some_and(|e| Encoding::at_partition(p).contains(&e))
    {
        return Some(ErrorCode::BadDtype);
    }
    let boundary = spec.boundary_shape(p);
    if h.shape.len() != boundary.len()
        || h.shape.iter().zip(boundary).any(|(&a, &b)| a as usize != b)
    {
        return Some(ErrorCode::WrongShape);
    }
    None
}

/// Runs `frames` through both decoders and admission and checks every invariant (see the
/// [module](self) docs). `Err` says which one broke.
pub fn check<F: AsRef<[u8]>>(
    frames: &[F],
    table: &LayerTable,
    plan: &ServedPlan,
) -> Result<Checked, String> {
    let memo = Memo::default();
    let any = check_decoder(frames, &Accept::ANY, "decode", &memo)?;
    let accept = Accept::requests(plan.max_payload);
    let request = check_decoder(frames, &accept, "decode_with(requests)", &memo)?;
    // Both re-encode to `frames` when they decode: the same message.
    let decoded = any.as_ref().ok().map(|m| m.header.kind);
    let admitted = admission(frames, table, plan);
    if let Admission::Answer(reply) = &admitted {
        check_reply(reply)?;
        if reply.header.plan_digest != plan.digest {
            return Err("a reply without the served plan's digest".into());
        }
    }
    let msg = match request {
        Ok(msg) => msg,
        Err(e) => {
            // Refused by the decoder: admission answers the decoder's error.
            let expected =
                Message::error(plan.digest, e.request_id, e.code, &e.text).in_version(e.version);
            return match admitted {
                Admission::Answer(reply) if reply == expected => Ok(Checked {
                    decoded,
                    outcome: Outcome::Refused(
                        ErrorCode::from_u16(reply.header.code).ok_or("code")?,
                    ),
                }),
                other => Err(format!(
                    "admission of frames the decoder refuses with {}: {}",
                    e.code.name(),
                    describe(&other)
                )),
            };
        }
    };
    let h = &msg.header;
    let outcome = match (expected_plan_code(h, table, plan), admitted) {
        (Some(code), Admission::Answer(reply)) => {
            let rh = &reply.header;
            if rh.kind != MessageType::Error
                || rh.code != code as u16
                || rh.request_id != h.request_id
                || rh.version != h.version
            {
                return Err(format!(
                    "PROTOCOL.md refuses {h:?} with {}, admission answered {rh:?}",
                    code.name()
                ));
            }
            Outcome::Refused(code)
        }
        (None, Admission::Answer(reply)) if h.kind == MessageType::Ping => {
            let pong = Message {
                header: Header::new(MessageType::Pong, plan.digest, h.request_id),
                payload: Payload::Text(String::new()),
            }
            .in_version(h.version);
            if reply != pong {
                return Err(format!("a clean Ping {h:?} was answered {reply:?}"));
            }
            Outcome::Pong
        }
        (None, Admission::Run { header, input }) if h.kind == MessageType::Infer => {
            check_run(&msg, &header, &input, table, plan)?;
            Outcome::Run
        }
        (expected, other) => {
            return Err(format!(
                "PROTOCOL.md gives {h:?} {}, admission did {}",
                expected.map_or("a run or a pong", ErrorCode::name),
                describe(&other)
            ));
        }
    };
    Ok(Checked { decoded, outcome })
}

/// What admission did, without the tensor.
fn describe(admitted: &Admission) -> String {
    match admitted {
        Admission::Answer(reply) => format!("answer {:?}", reply.header),
        Admission::Run { header, input } => {
            format!("run {header:?} on {} values", input.len())
        }
    }
}

/// A request admission hands to a worker.
fn check_run(
    msg: &Message,
    header: &Header,
    input: &[f32],
    table: &LayerTable,
    plan: &ServedPlan,
) -> Result<(), String> {
    if *header != msg.header {
        return Err(format!(
            "run with header {header:?}, decoded {:?}",
            msg.header
        ));
    }
    let spec = table
        .exit(usize::from(header.exit))
        .ok_or("run of an exit that does not exist")?;
    let p = usize::from(header.partition);
    if p >= spec.len() {
        return Err(format!(
            "run at partition {p} of a {}-layer chain",
            spec.len()
        ));
    }
    let elements: usize = spec.boundary_shape(p).iter().product();
    if input.len() != elements {
        return Err(format!(
            "run of exit {} at {p} with {} values, the boundary holds {elements}",
            header.exit,
            input.len()
        ));
    }
    let bytes = header.body_len().unwrap_or(usize::MAX);
    if bytes > plan.max_payload {
        return Err(format!(
            "admitted a {bytes}-byte tensor over the {}-byte limit",
            plan.max_payload
        ));
    }
    // An f32 request's values were checked finite by the oracle; the image's normalisation
    // is checked here.
    let same = match &msg.payload {
        Payload::U8(pixels) => {
            if let Some(i) = input.iter().position(|v| !v.is_finite()) {
                return Err(format!("run with a non-finite input at {i}"));
            }
            normalize(pixels, &plan.mean, &plan.std) == input
        }
        Payload::Text(_) => false,
        tensor => tensor.to_f32().as_deref() == Some(input),
    };
    if !same {
        return Err("the run's input is not the request's tensor".into());
    }
    Ok(())
}

/// A case that broke an invariant or panicked.
#[derive(Debug, Clone)]
pub struct Failure {
    /// Index of the case in its run.
    pub index: u64,
    /// The template it started from.
    pub origin: Origin,
    /// The mutations applied.
    pub mutations: Vec<Mutation>,
    /// The frames (none when the mutator itself panicked).
    pub frames: Option<Frames>,
    /// What went wrong.
    pub what: String,
}

/// Counts over a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tally {
    /// Cases run.
    pub cases: u64,
    /// Cases [`Message::decode`] accepted.
    pub decoded: u64,
    /// Cases admitted to run.
    pub runs: u64,
    /// Pings answered.
    pub pongs: u64,
    /// Refusals by error code (index: the code).
    pub refused: [u64; ErrorCode::ALL.len() + 1],
    /// Mutations applied, by kind (index: position in [`Mutation::ALL`]).
    pub mutations: [u64; Mutation::ALL.len()],
    /// Cases that broke an invariant or panicked.
    pub failures: u64,
}

impl Default for Tally {
    fn default() -> Self {
        Self {
            cases: 0,
            decoded: 0,
            runs: 0,
            pongs: 0,
            refused: [0; ErrorCode::ALL.len() + 1],
            mutations: [0; Mutation::ALL.len()],
            failures: 0,
        }
    }
}

impl Tally {
    /// Adds `other`'s counts.
    pub fn merge(&mut self, other: &Tally) {
        self.cases += other.cases;
        self.decoded += other.decoded;
        self.runs += other.runs;
        self.pongs += other.pongs;
        self.failures += other.failures;
        for (a, b) in self.refused.iter_mut().zip(other.refused) {
            *a += b;
        }
        for (a, b) in self.mutations.iter_mut().zip(other.mutations) {
            *a += b;
        }
    }

    /// Counts one admission outcome.
    pub fn outcome(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Run => self.runs += 1,
            Outcome::Pong => self.pongs += 1,
            Outcome::Refused(code) => self.refused[code as usize] += 1,
        }
    }

    /// Outcomes by name (`run`, `pong`, the error codes' names), those that occurred.
    pub fn outcomes(&self) -> Vec<(&'static str, u64)> {
        let mut out = vec![("run", self.runs), ("pong", self.pongs)];
        out.extend(
            ErrorCode::ALL
                .iter()
                .map(|&c| (c.name(), self.refused[c as usize])),
        );
        out.retain(|(_, n)| *n > 0);
        out
    }

    /// Mutations by name, those applied.
    pub fn mutation_counts(&self) -> Vec<(&'static str, u64)> {
        Mutation::ALL
            .iter()
            .zip(self.mutations)
            .filter(|(_, n)| *n > 0)
            .map(|(m, n)| (m.name(), n))
            .collect()
    }
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// Generates and checks case `index` of the run seeded with `seed`, each step under
/// `catch_unwind`; counts it in `tally`.
pub fn run_case(
    corpus: &Corpus,
    seed: u64,
    index: u64,
    table: &LayerTable,
    plan: &ServedPlan,
    tally: &mut Tally,
) -> Option<Failure> {
    tally.cases += 1;
    let mut rng = case_rng(seed, index);
    let case = match catch_unwind(AssertUnwindSafe(|| corpus.case(&mut rng))) {
        Ok(case) => case,
        Err(panic) => {
            tally.failures += 1;
            return Some(Failure {
                index,
                origin: Origin::Given,
                mutations: Vec::new(),
                frames: None,
                what: format!("the mutator panicked: {}", panic_text(&*panic)),
            });
        }
    };
    for m in &case.mutations {
        tally.mutations[*m as usize] += 1;
    }
    let what = match catch_unwind(AssertUnwindSafe(|| check(&case.frames, table, plan))) {
        Ok(Ok(checked)) => {
            tally.decoded += u64::from(checked.decoded.is_some());
            tally.outcome(checked.outcome);
            return None;
        }
        Ok(Err(broken)) => broken,
        Err(panic) => format!("panic: {}", panic_text(&*panic)),
    };
    tally.failures += 1;
    Some(Failure {
        index,
        origin: case.origin,
        mutations: case.mutations,
        frames: Some(case.frames),
        what,
    })
}

/// Cases `range` of the run seeded with `seed`: their tally and up to `keep` failures.
pub fn run_range(
    corpus: &Corpus,
    seed: u64,
    range: std::ops::Range<u64>,
    table: &LayerTable,
    plan: &ServedPlan,
    keep: usize,
) -> (Tally, Vec<Failure>) {
    let mut tally = Tally::default();
    let mut failures = Vec::new();
    for index in range {
        if let Some(f) = run_case(corpus, seed, index, table, plan, &mut tally)
            && failures.len() < keep
        {
            failures.push(f);
        }
    }
    (tally, failures)
}

/// The `.frames` file of some frames: each frame as a little-endian `u32` length, then its
/// bytes.
pub fn encode_frames<F: AsRef<[u8]>>(frames: &[F]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in frames {
        let f = f.as_ref();
        out.extend_from_slice(&(f.len() as u32).to_le_bytes());
        out.extend_from_slice(f);
    }
    out
}

/// Reads a `.frames` file's contents back.
pub fn decode_frames(mut bytes: &[u8]) -> Result<Frames, String> {
    let mut frames = Vec::new();
    while !bytes.is_empty() {
        let Some((len, rest)) = bytes.split_first_chunk::<4>() else {
            return Err(format!("{} bytes left, not a frame length", bytes.len()));
        };
        let len = u32::from_le_bytes(*len) as usize;
        if len > rest.len() {
            return Err(format!("a {len}-byte frame with {} bytes left", rest.len()));
        }
        frames.push(rest[..len].to_vec());
        bytes = &rest[len..];
    }
    Ok(frames)
}

/// Saves `frames` in `dir` as `<hash>.frames` (the same frames, the same name) and
/// returns the path.
pub fn save_frames<F: AsRef<[u8]>>(dir: &Path, frames: &[F]) -> std::io::Result<PathBuf> {
    let bytes = encode_frames(frames);
    // FNV-1a, 64 bits: a stable name from the contents.
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("{hash:016x}.frames"));
    std::fs::write(&path, bytes)?;
    Ok(path)
}

/// Every `.frames` file in `dir` (sorted by name), read.
pub fn load_frames(dir: &Path) -> Result<Vec<(PathBuf, Frames)>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "frames"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let frames = decode_frames(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
            Ok((path, frames))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BranchyAlexNetConfig;
    use crate::edge::largest_tensor_bytes;
    use crate::wire::protocol::Dtype;

    fn setup() -> (LayerTable, ServedPlan) {
        let table = BranchyAlexNetConfig::new().layer_table();
        let plan = ServedPlan {
            digest: [9; 32],
            mean: vec![0.5],
            std: vec![0.25],
            max_payload: largest_tensor_bytes(&table),
        };
        (table, plan)
    }

    #[test]
    fn frames_files_round_trip_and_refuse_a_cut_file() {
        let frames: Frames = vec![vec![], vec![1, 2, 3], vec![0; 300]];
        let bytes = encode_frames(&frames);
        assert_eq!(decode_frames(&bytes).unwrap(), frames);
        assert_eq!(decode_frames(&[]).unwrap(), Frames::new());
        assert!(decode_frames(&bytes[..bytes.len() - 1]).is_err());
        assert!(decode_frames(&[1, 0]).is_err());
        let dir = tempfile::tempdir().unwrap();
        let a = save_frames(dir.path(), &frames).unwrap();
        assert_eq!(
            save_frames(dir.path(), &frames).unwrap(),
            a,
            "named by content"
        );
        save_frames(dir.path(), &[vec![7u8]]).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not a case").unwrap();
        let loaded = load_frames(dir.path()).unwrap();
        assert_eq!(loaded.len(), 2);
        assert!(loaded.iter().any(|(_, f)| *f == frames));
    }

    fn expected(frames: &[Vec<u8>], accept: &Accept) -> Expected {
        expected_decode(frames, accept, &Memo::default())
    }

    #[test]
    fn the_oracle_works_out_the_documented_answer() {
        let (table, plan) = setup();
        let image = Message::infer(
            plan.digest,
            4,
            2,
            0,
            0,
            &[1, 32, 32],
            Payload::U8(vec![9; 1024]),
        );
        let checked = check(&image.encode(), &table, &plan).unwrap();
        assert_eq!(checked.outcome, Outcome::Run);
        assert_eq!(checked.decoded, Some(MessageType::Infer));
        // The oracle's own verdicts, against hand-made frames.
        let [h, p] = image.encode();
        assert_eq!(
            expected(std::slice::from_ref(&h), &Accept::ANY),
            Expected::Code(ErrorCode::BadFrames)
        );
        let mut bad = h.clone();
        bad[6] = 9; // dtype
        bad[7] = 7; // ndim
        assert_eq!(
            expected(&[bad.clone(), p.clone()], &Accept::ANY),
            Expected::OneOf(vec![ErrorCode::BadDtype, ErrorCode::BadShape])
        );
        // A decoder error that is not the expected one is reported, with both codes.
        let mut short = p.clone();
        short.pop();
        assert_eq!(
            expected(&[h.clone(), short], &Accept::ANY),
            Expected::Code(ErrorCode::BadLength)
        );
        let wrong = check_decoder(
            &[bad, p.clone()],
            &Accept::requests(16),
            "decode",
            &Memo::default(),
        );
        assert!(
            wrong.is_ok(),
            "dtype 9 with ndim 7: bad_dtype or bad_shape both fit"
        );
        // Over the server's limit: the decoder must say bad_length, and it does.
        assert!(
            check_decoder(
                &[h.clone(), p.clone()],
                &Accept::requests(1000),
                "x",
                &Memo::default()
            )
            .is_ok()
        );
        assert_eq!(
            expected(&[h, p], &Accept::requests(1000)),
            Expected::Code(ErrorCode::BadLength)
        );
    }

    #[test]
    fn plan_checks_follow_the_documented_order() {
        let (table, plan) = setup();
        let mut h = Header::new(MessageType::Infer, [0; 32], 1);
        h.exit = 9;
        h.code = 1;
        assert_eq!(
            expected_plan_code(&h, &table, &plan),
            Some(ErrorCode::UnknownPlan)
        );
        h.plan_digest = plan.digest;
        assert_eq!(
            expected_plan_code(&h, &table, &plan),
            Some(ErrorCode::BadField)
        );
        h.code = 0;
        assert_eq!(
            expected_plan_code(&h, &table, &plan),
            Some(ErrorCode::BadExit)
        );
        h.exit = 1;
        h.partition = 11;
        assert_eq!(
            expected_plan_code(&h, &table, &plan),
            Some(ErrorCode::BadPartition)
        );
        h.partition = 1;
        h.dtype = Dtype::U8;
        assert_eq!(
            expected_plan_code(&h, &table, &plan),
            Some(ErrorCode::BadDtype)
        );
        h.dtype = Dtype::F32;
        h.shape = vec![32, 32, 31];
        assert_eq!(
            expected_plan_code(&h, &table, &plan),
            Some(ErrorCode::WrongShape)
        );
        h.shape = vec![32, 32, 32];
        assert_eq!(expected_plan_code(&h, &table, &plan), None);
        let mut ping = Header::new(MessageType::Ping, [1; 32], 1);
        assert_eq!(
            expected_plan_code(&ping, &table, &plan),
            None,
            "pings skip the plan"
        );
        ping.deadline_us = 5;
        assert_eq!(
            expected_plan_code(&ping, &table, &plan),
            Some(ErrorCode::BadField)
        );
    }

    #[test]
    fn a_run_of_cases_counts_every_outcome_and_is_reproducible() {
        let (table, plan) = setup();
        let corpus = corpus(&table, &plan, 11);
        let (tally, failures) = run_range(&corpus, 11, 0..3000, &table, &plan, 10);
        assert!(failures.is_empty(), "{failures:#?}");
        assert_eq!(tally.cases, 3000);
        assert!(tally.runs > 0 && tally.pongs > 0 && tally.decoded > tally.runs);
        let total: u64 = tally.outcomes().iter().map(|(_, n)| n).sum();
        assert_eq!(total, 3000);
        // Case 1234 alone is case 1234 of the run.
        let (one, _) = run_range(&corpus, 11, 1234..1235, &table, &plan, 1);
        let (again, _) = run_range(&corpus, 11, 1234..1235, &table, &plan, 1);
        assert_eq!(one, again);
        let (whole, _) = run_range(&corpus, 11, 0..3000, &table, &plan, 10);
        assert_eq!(whole, tally);
    }
}
