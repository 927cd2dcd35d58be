//! The wire protocol between `edgent-device` and `edgent-edge` (PROTOCOL.md).
//!
//! Every message is two ZeroMQ frames: an 80-byte little-endian [`Header`] and a payload
//! (tensor bytes, or UTF-8 text for errors). Decoding validates everything and answers with
//! an [`ErrorCode`] a peer can send back; it never panics on bytes from the network.
//!
//! Version 2 adds encodings of the tensor ([`super::encoding`]): `f16`, 8-bit quantised
//! `q8`/`q8c` and a lossless (zstd) stage flagged in the dtype byte. A version-1 message is
//! a version-2 message without them, and is still served: replies carry the request's
//! version.

use std::fmt;

use super::encoding::{self, Encoding, InflateError, Quantized, Values};

/// First four bytes of every header.
pub const MAGIC: [u8; 4] = *b"EDGT";
/// Protocol version this build speaks (and sends).
pub const VERSION: u8 = 2;
/// The oldest version still served: version 1 has only `u8` and `f32` tensors.
pub const OLDEST_VERSION: u8 = 1;
/// Bit of the `dtype` byte saying the payload went through the lossless stage (version 2).
pub const COMPRESSED: u8 = 0x80;
/// Length of the header frame, bytes.
pub const HEADER_LEN: usize = 80;
/// Most dimensions a tensor may have.
pub const MAX_DIMS: usize = 4;
/// Largest payload any decoder accepts, bytes. Servers use a tighter [`Accept`]: the
/// plan's largest tensor (128 KiB for B-AlexNet).
pub const MAX_PAYLOAD: usize = 16 << 20;

/// What a decoder takes: which message types, and how large a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accept {
    /// Types accepted; any other is `bad_type`, checked right after the type byte.
    pub kinds: &'static [MessageType],
    /// Largest payload, bytes; a larger one (or a shape that needs more) is `bad_length`.
    pub max_payload: usize,
}

impl Accept {
    /// Every type, up to [`MAX_PAYLOAD`] (clients reading replies, tools).
    pub const ANY: Accept = Accept {
        kinds: &[
            MessageType::Infer,
            MessageType::Result,
            MessageType::Error,
            MessageType::Ping,
            MessageType::Pong,
        ],
        max_payload: MAX_PAYLOAD,
    };

    /// What an edge (or a broker's front end) takes from devices: Infer and Ping, with
    /// payloads up to `max_payload` bytes.
    pub fn requests(max_payload: usize) -> Accept {
        Accept {
            kinds: &[MessageType::Infer, MessageType::Ping],
            max_payload: max_payload.min(MAX_PAYLOAD),
        }
    }
}

/// What a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum MessageType {
    /// Device → edge: run layers `[partition, N)` of `exit` on the payload.
    Infer = 1,
    /// Edge → device: the logits, with edge compute and queue time.
    Result = 2,
    /// Edge → device: the request failed; `code` says why, the payload is text.
    Error = 3,
    /// Device → edge: measure the link; the payload (any `u8` bytes) is discarded.
    Ping = 4,
    /// Edge → device: answer to a ping, empty payload.
    Pong = 5,
}

impl MessageType {
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Infer,
            2 => Self::Result,
            3 => Self::Error,
            4 => Self::Ping,
            5 => Self::Pong,
            _ => return None,
        })
    }
}

/// Element type of the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Dtype {
    /// No tensor (errors, pongs): `ndim` is 0.
    None = 0,
    /// Unsigned bytes (the raw image at partition 0, ping padding).
    U8 = 1,
    /// IEEE-754 binary32, little-endian.
    F32 = 2,
    /// IEEE-754 binary16, little-endian (version 2).
    F16 = 3,
    /// 8-bit affine quantisation, one scale and zero point (version 2).
    Q8 = 4,
    /// 8-bit affine quantisation, a scale and zero point per channel (version 2).
    Q8c = 5,
    /// 4-bit affine quantisation, two codes a byte, one scale and zero point (version 2).
    Q4 = 6,
    /// 4-bit affine quantisation, two codes a byte, a scale and zero point per channel
    /// (version 2).
    Q4c = 7,
}

impl Dtype {
    /// The dtype of a `dtype` byte without its [`COMPRESSED`] bit, if it is one.
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => Self::None,
            1 => Self::U8,
            2 => Self::F32,
            3 => Self::F16,
            4 => Self::Q8,
            5 => Self::Q8c,
            6 => Self::Q4,
            7 => Self::Q4c,
            _ => return None,
        })
    }

    /// How these values are encoded (`None` for no tensor).
    pub fn values(self) -> Option<Values> {
        Some(match self {
            Self::None => return None,
            Self::U8 => Values::U8,
            Self::F32 => Values::F32,
            Self::F16 => Values::F16,
            Self::Q8 => Values::Q8,
            Self::Q8c => Values::Q8c,
            Self::Q4 => Values::Q4,
            Self::Q4c => Values::Q4c,
        })
    }

    /// The dtype of encoded values.
    pub fn of(values: Values) -> Self {
        match values {
            Values::U8 => Self::U8,
            Values::F32 => Self::F32,
            Values::F16 => Self::F16,
            Values::Q8 => Self::Q8,
            Values::Q8c => Self::Q8c,
            Values::Q4 => Self::Q4,
            Values::Q4c => Self::Q4c,
        }
    }

    /// Whether version 1 has this dtype.
    pub fn in_version_1(self) -> bool {
        matches!(self, Self::None | Self::U8 | Self::F32)
    }
}

/// Why a message was refused; sent back in an [`MessageType::Error`] header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum ErrorCode {
    /// Not exactly two frames (header, payload).
    BadFrames = 1,
    /// The header frame is not 80 bytes.
    BadHeaderLength = 2,
    /// The header does not start with `EDGT`.
    BadMagic = 3,
    /// A protocol version this edge does not speak.
    BadVersion = 4,
    /// Unknown message type, or one a device may not send.
    BadType = 5,
    /// Unknown dtype, or the wrong dtype for the message.
    BadDtype = 6,
    /// `ndim` over 4, a zero dimension, or non-zero unused dimensions.
    BadShape = 7,
    /// Payload length differs from the shape × dtype size, or is over the limit.
    BadLength = 8,
    /// The tensor holds NaN or infinity (for `q8`/`q8c`: the values its codes stand for).
    NonFinite = 9,
    /// The plan digest is not the one this edge serves.
    UnknownPlan = 10,
    /// Exit outside 1..=5.
    BadExit = 11,
    /// Partition outside `0..N` for the exit (the edge must run at least one layer).
    BadPartition = 12,
    /// The tensor's shape is not the activation entering the partition's layer.
    WrongShape = 13,
    /// The edge's queue is full; try again or run locally.
    Busy = 14,
    /// The edge failed while running the request.
    Internal = 15,
    /// Non-zero reserved bytes or fields a request must leave zero.
    BadField = 16,
    /// No edge can take the request: the edge holding it stopped answering (a broker
    /// noticed by heartbeats), or none is connected. Run locally; retrying later may work.
    Unavailable = 17,
    /// The request waited past its `deadline_us` before a worker took it, so it was not run.
    Expired = 18,
    /// A compressed payload is not a zstd stream, is truncated or corrupt, or inflates to
    /// another size than the tensor's (decoding stops at the tensor's size).
    BadCompression = 19,
    /// A quantisation scale is not a finite number above 0.
    BadQuantization = 20,
}

impl ErrorCode {
    /// Every code, for documentation and tests.
    pub const ALL: [ErrorCode; 20] = [
        Self::BadFrames,
        Self::BadHeaderLength,
        Self::BadMagic,
        Self::BadVersion,
        Self::BadType,
        Self::BadDtype,
        Self::BadShape,
        Self::BadLength,
        Self::NonFinite,
        Self::UnknownPlan,
        Self::BadExit,
        Self::BadPartition,
        Self::WrongShape,
        Self::Busy,
        Self::Internal,
        Self::BadField,
        Self::Unavailable,
        Self::Expired,
        Self::BadCompression,
        Self::BadQuantization,
    ];

    /// The code for a number, if it is one.
    pub fn from_u16(v: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|c| *c as u16 == v)
    }

    /// Short name, as PROTOCOL.md writes it.
    pub fn name(self) -> &'static str {
        match self {
            Self::BadFrames => "bad_frames",
            Self::BadHeaderLength => "bad_header_length",
            Self::BadMagic => "bad_magic",
            Self::BadVersion => "bad_version",
            Self::BadType => "bad_type",
            Self::BadDtype => "bad_dtype",
            Self::BadShape => "bad_shape",
            Self::BadLength => "bad_length",
            Self::NonFinite => "non_finite",
            Self::UnknownPlan => "unknown_plan",
            Self::BadExit => "bad_exit",
            Self::BadPartition => "bad_partition",
            Self::WrongShape => "wrong_shape",
            Self::Busy => "busy",
            Self::Internal => "internal",
            Self::BadField => "bad_field",
            Self::Unavailable => "unavailable",
            Self::Expired => "expired",
            Self::BadCompression => "bad_compression",
            Self::BadQuantization => "bad_quantization",
        }
    }
}

/// A refused message: the code to send back and a human-readable reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError {
    /// Machine-readable reason.
    pub code: ErrorCode,
    /// What was wrong, for the peer's operator.
    pub text: String,
    /// The request id, when the header got far enough to carry one (else 0).
    pub request_id: u64,
    /// The protocol version of the refused message when it is one this build speaks (the
    /// reply is written in it), else [`VERSION`].
    pub version: u8,
}

impl ProtocolError {
    fn new(code: ErrorCode, text: impl Into<String>) -> Self {
        Self {
            code,
            text: text.into(),
            request_id: 0,
            version: VERSION,
        }
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.code.name(),
            self.code as u16,
            self.text
        )
    }
}

impl std::error::Error for ProtocolError {}

/// The fixed header frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Protocol version, [`OLDEST_VERSION`] to [`VERSION`]; a reply has its request's.
    pub version: u8,
    /// What the message is.
    pub kind: MessageType,
    /// Element type of the payload.
    pub dtype: Dtype,
    /// Whether the payload went through the lossless stage (the `dtype` byte's top bit).
    pub compressed: bool,
    /// SHA-256 of the plan both sides were generated from.
    pub plan_digest: [u8; 32],
    /// Chosen by the device; echoed in the reply.
    pub request_id: u64,
    /// Exit, 1 to 5 (0 when not an inference).
    pub exit: u8,
    /// Partition point `p`: the edge runs `[p, N)`.
    pub partition: u8,
    /// Error code for [`MessageType::Error`], else 0.
    pub code: u16,
    /// Infer: the device's latency requirement, µs (informational); 0 in other messages.
    /// Bytes 52–55; a Result holds [`Header::batch`] there instead.
    pub deadline_us: u32,
    /// Result: how many requests the edge ran in one batch with this one, itself included
    /// (1 unbatched; 0 from an edge that predates batching). Bytes 52–55 of a Result.
    pub batch: u32,
    /// Reply: time the edge spent running layers, µs.
    pub edge_us: u32,
    /// Reply: time the request waited for a worker, µs.
    pub queue_us: u32,
    /// Tensor shape per sample, `ndim` dimensions (no batch dimension).
    pub shape: Vec<u32>,
}

impl Header {
    /// A header of `kind` with everything else zero.
    pub fn new(kind: MessageType, plan_digest: [u8; 32], request_id: u64) -> Self {
        Self {
            version: VERSION,
            kind,
            dtype: Dtype::None,
            compressed: false,
            plan_digest,
            request_id,
            exit: 0,
            partition: 0,
            code: 0,
            deadline_us: 0,
            batch: 0,
            edge_us: 0,
            queue_us: 0,
            shape: Vec::new(),
        }
    }

    /// Elements the shape holds (0 when there is no tensor: `ndim` 0); `None` when the
    /// product overflows `usize` (a hostile header: `[65536; 4]` is 2^64).
    pub fn elements(&self) -> Option<usize> {
        self.shape
            .iter()
            .try_fold(usize::from(!self.shape.is_empty()), |n, &d| {
                n.checked_mul(d as usize)
            })
    }

    /// How the tensor is encoded (`None` for no tensor).
    pub fn encoding(&self) -> Option<Encoding> {
        Some(Encoding::new(self.dtype.values()?, self.compressed))
    }

    /// Sets dtype and lossless flag for `encoding`.
    pub fn set_encoding(&mut self, encoding: Encoding) {
        self.dtype = Dtype::of(encoding.values);
        self.compressed = encoding.lossless;
    }

    /// Bytes of the tensor's body (before the lossless stage): `None` on overflow, 0 for
    /// no tensor.
    pub fn body_len(&self) -> Option<usize> {
        let elements = self.elements()?;
        match self.dtype.values() {
            None => Some(0),
            Some(values) => {
                let shape: Vec<usize> = self.shape.iter().map(|&d| d as usize).collect();
                values.body_len(elements, values.groups(&shape))
            }
        }
    }

    /// The 80 header bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        assert!(
            self.shape.len() <= MAX_DIMS,
            "at most {MAX_DIMS} dimensions"
        );
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&MAGIC);
        b[4] = self.version;
        b[5] = self.kind as u8;
        b[6] = self.dtype as u8 | if self.compressed { COMPRESSED } else { 0 };
        b[7] = self.shape.len() as u8;
        b[8..40].copy_from_slice(&self.plan_digest);
        b[40..48].copy_from_slice(&self.request_id.to_le_bytes());
        b[48] = self.exit;
        b[49] = self.partition;
        b[50..52].copy_from_slice(&self.code.to_le_bytes());
        let word52 = if self.kind == MessageType::Result {
            self.batch
        } else {
            self.deadline_us
        };
        b[52..56].copy_from_slice(&word52.to_le_bytes());
        b[56..60].copy_from_slice(&self.edge_us.to_le_bytes());
        b[60..64].copy_from_slice(&self.queue_us.to_le_bytes());
        for (i, d) in self.shape.iter().enumerate() {
            b[64 + 4 * i..68 + 4 * i].copy_from_slice(&d.to_le_bytes());
        }
        b
    }

    /// Parses and checks a header frame (magic, version, type, dtype, shape).
    pub fn decode(b: &[u8]) -> Result<Self, ProtocolError> {
        Self::decode_with(b, &Accept::ANY)
    }

    /// [`Header::decode`], refusing types `accept` does not list as `bad_type` (before the
    /// dtype and shape checks, in the order of PROTOCOL.md's codes).
    pub fn decode_with(b: &[u8], accept: &Accept) -> Result<Self, ProtocolError> {
        if b.len() != HEADER_LEN {
            return Err(ProtocolError::new(
                ErrorCode::BadHeaderLength,
                format!("header frame is {} bytes, expected {HEADER_LEN}", b.len()),
            ));
        }
        if b[0..4] != MAGIC {
            return Err(ProtocolError::new(
                ErrorCode::BadMagic,
                format!("header starts with {:02x?}, expected \"EDGT\"", &b[0..4]),
            ));
        }
        let request_id = u64::from_le_bytes(b[40..48].try_into().expect("8 bytes"));
        let version = b[4];
        if !(OLDEST_VERSION..=VERSION).contains(&version) {
            return Err(ProtocolError {
                code: ErrorCode::BadVersion,
                text: format!(
                    "protocol version {version} is not supported (this build speaks {OLDEST_VERSION} to {VERSION})"
                ),
                request_id,
                version: VERSION,
            });
        }
        let fail = |code, text: String| ProtocolError {
            code,
            text,
            request_id,
            version,
        };
        let kind = MessageType::from_u8(b[5])
            .ok_or_else(|| fail(ErrorCode::BadType, format!("unknown message type {}", b[5])))?;
        if !accept.kinds.contains(&kind) {
            return Err(fail(
                ErrorCode::BadType,
                format!(
                    "{kind:?} is not accepted here (send one of {:?})",
                    accept.kinds
                ),
            ));
        }
        let compressed = b[6] & COMPRESSED != 0;
        let dtype = Dtype::from_u8(b[6] & !COMPRESSED)
            .ok_or_else(|| fail(ErrorCode::BadDtype, format!("unknown dtype {}", b[6])))?;
        if version == 1 && (compressed || !dtype.in_version_1()) {
            return Err(fail(
                ErrorCode::BadDtype,
                format!(
                    "dtype byte {:#04x} needs protocol version 2 (version 1 has only u8 and f32, uncompressed)",
                    b[6]
                ),
            ));
        }
        if compressed && dtype == Dtype::None {
            return Err(fail(
                ErrorCode::BadDtype,
                "only a tensor can be compressed, not text or an empty payload".into(),
            ));
        }
        // The dtype checks (code 6) before the shape checks (code 7).
        let ndim = b[7] as usize;
        if (dtype == Dtype::None) != (ndim == 0) {
            return Err(fail(
                ErrorCode::BadDtype,
                format!(
                    "dtype {dtype:?} with {ndim} dimensions: a tensor needs a dtype and dimensions, text neither"
                ),
            ));
        }
        match (kind, dtype) {
            (MessageType::Ping, Dtype::None | Dtype::U8) | (MessageType::Pong, Dtype::None)
                if !compressed => {}
            (MessageType::Ping | MessageType::Pong, _) => {
                return Err(fail(
                    ErrorCode::BadDtype,
                    format!(
                        "a {kind:?} carries no tensor or (Ping) uncompressed u8 padding, not {dtype:?}{}",
                        if compressed { " compressed" } else { "" }
                    ),
                ));
            }
            _ => {}
        }
        if let Some(values) = dtype.values().filter(|v| !v.fits(ndim)) {
            return Err(fail(
                ErrorCode::BadDtype,
                format!(
                    "{} has a scale per channel: it needs 2 or more dimensions, not {ndim}",
                    values.name()
                ),
            ));
        }
        if ndim > MAX_DIMS {
            return Err(fail(
                ErrorCode::BadShape,
                format!("ndim {ndim} is over {MAX_DIMS}"),
            ));
        }
        let word = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        let dims: Vec<u32> = (0..MAX_DIMS).map(|i| word(64 + 4 * i)).collect();
        if dims[..ndim].contains(&0) || dims[ndim..].iter().any(|&d| d != 0) {
            return Err(fail(
                ErrorCode::BadShape,
                format!("shape {dims:?} with ndim {ndim}: used dimensions must be > 0, unused 0"),
            ));
        }
        if kind == MessageType::Ping && ndim > 1 {
            return Err(fail(
                ErrorCode::BadShape,
                format!("a Ping's padding has shape [n], got {ndim} dimensions"),
            ));
        }
        Ok(Self {
            version,
            kind,
            dtype,
            compressed,
            plan_digest: b[8..40].try_into().expect("32 bytes"),
            request_id,
            exit: b[48],
            partition: b[49],
            code: u16::from_le_bytes([b[50], b[51]]),
            deadline_us: if kind == MessageType::Result {
                0
            } else {
                word(52)
            },
            batch: if kind == MessageType::Result {
                word(52)
            } else {
                0
            },
            edge_us: word(56),
            queue_us: word(60),
            shape: dims[..ndim].to_vec(),
        })
    }
}

/// A message's payload, decoded by its dtype (and inflated when it was compressed).
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// Text (errors) or nothing (pongs): dtype none.
    Text(String),
    /// `u8` tensor.
    U8(Vec<u8>),
    /// `f32` tensor.
    F32(Vec<f32>),
    /// `f16` tensor, as binary16 bits.
    F16(Vec<u16>),
    /// Quantised tensor (`q8`/`q4`: one group; `q8c`/`q4c`: one per channel).
    Quantized(Quantized),
}

impl Payload {
    /// `values` (an activation) encoded as `values_kind` for a tensor of `shape`; the lossless
    /// stage is the header's business. `U8` takes the values as bytes (they must be 0–255).
    pub fn encode_f32(values: &[f32], values_kind: Values, shape: &[usize]) -> Self {
        match values_kind {
            Values::U8 => Self::U8(values.iter().map(|&v| v as u8).collect()),
            Values::F32 => Self::F32(values.to_vec()),
            Values::F16 => Self::F16(encoding::to_f16(values)),
            Values::Q8 | Values::Q8c | Values::Q4 | Values::Q4c => {
                Self::Quantized(Quantized::quantize(
                    values,
                    values_kind.groups(shape),
                    values_kind.bits().unwrap_or(8),
                ))
            }
        }
    }

    /// The tensor's values as `f32` (dequantised, widened); `None` for text and `u8`.
    pub fn to_f32(&self) -> Option<Vec<f32>> {
        match self {
            Self::Text(_) | Self::U8(_) => None,
            Self::F32(v) => Some(v.clone()),
            Self::F16(bits) => Some(encoding::from_f16(bits)),
            Self::Quantized(q) => Some(q.dequantize()),
        }
    }

    /// The body bytes (before any lossless stage).
    fn body(&self) -> Vec<u8> {
        match self {
            Self::Text(t) => t.as_bytes().to_vec(),
            Self::U8(v) => v.clone(),
            Self::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Self::F16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Self::Quantized(q) => q.to_bytes(),
        }
    }
}

/// A whole decoded message.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// The header.
    pub header: Header,
    /// The payload.
    pub payload: Payload,
}

impl Message {
    /// The two frames of this message; the payload goes through the lossless stage when
    /// the header says `compressed`.
    pub fn encode(&self) -> [Vec<u8>; 2] {
        let body = self.payload.body();
        let payload = if self.header.compressed {
            encoding::compress(&body)
        } else {
            body
        };
        [self.header.encode().to_vec(), payload]
    }

    /// Decodes and validates the frames of one message (without any routing envelope).
    pub fn decode<F: AsRef<[u8]>>(frames: &[F]) -> Result<Self, ProtocolError> {
        Self::decode_with(frames, &Accept::ANY)
    }

    /// [`Message::decode`] taking only what `accept` allows. Checks run in the order of
    /// the error codes (PROTOCOL.md): frames, header length, magic, version, type, dtype,
    /// shape, length, finiteness; the first failure is reported.
    pub fn decode_with<F: AsRef<[u8]>>(
        frames: &[F],
        accept: &Accept,
    ) -> Result<Self, ProtocolError> {
        let header = Self::check_framing(frames, accept)?;
        let fail = |code, text: String| ProtocolError {
            code,
            text,
            request_id: header.request_id,
            version: header.version,
        };
        let inflated;
        let bytes = if header.compressed {
            let expected = header.body_len().expect("checked by check_framing");
            inflated = encoding::decompress(frames[1].as_ref(), expected)
                .map_err(|e: InflateError| fail(ErrorCode::BadCompression, e.to_string()))?;
            inflated.as_slice()
        } else {
            frames[1].as_ref()
        };
        let finite = |values: &[f32]| match values.iter().position(|v| !v.is_finite()) {
            Some(i) => Err(fail(
                ErrorCode::NonFinite,
                format!("element {i} is {} (tensors must be finite)", values[i]),
            )),
            None => Ok(()),
        };
        let payload = match header.dtype {
            Dtype::None => Payload::Text(
                String::from_utf8(bytes.to_vec())
                    .map_err(|_| fail(ErrorCode::BadLength, "text payload is not UTF-8".into()))?,
            ),
            Dtype::U8 => Payload::U8(bytes.to_vec()),
            Dtype::F32 => {
                let values: Vec<f32> = bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                    .collect();
                finite(&values)?;
                Payload::F32(values)
            }
            Dtype::F16 => {
                let bits: Vec<u16> = bytes
                    .chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]))
                    .collect();
                finite(&encoding::from_f16(&bits))?;
                Payload::F16(bits)
            }
            Dtype::Q8 | Dtype::Q8c | Dtype::Q4 | Dtype::Q4c => {
                let shape: Vec<usize> = header.shape.iter().map(|&d| d as usize).collect();
                let values = header.dtype.values().expect("a tensor dtype");
                let quantized = Quantized::from_bytes(
                    bytes,
                    values.groups(&shape),
                    shape.iter().product(),
                    values.bits().expect("a quantised dtype"),
                )
                .map_err(|why| fail(ErrorCode::BadQuantization, why))?;
                if let Some(why) = quantized.invalid() {
                    return Err(fail(ErrorCode::BadQuantization, why));
                }
                // A valid scale may still be too large for its codes: (255 − 0) · f32::MAX.
                if let Some(i) = quantized.values().position(|v| !v.is_finite()) {
                    return Err(fail(
                        ErrorCode::NonFinite,
                        format!(
                            "element {i} is (q − zero point) · scale = infinity (tensors must be finite)"
                        ),
                    ));
                }
                Payload::Quantized(quantized)
            }
        };
        Ok(Self { header, payload })
    }

    /// The checks of [`Message::decode_with`] that need no pass over the payload: frames,
    /// header, and the payload's length against the shape and the limit (codes 1–8, but
    /// not text's UTF-8 or tensors' finiteness). Returns the header. A broker uses it to
    /// refuse what is malformed without reading tensors it only forwards.
    pub fn check_framing<F: AsRef<[u8]>>(
        frames: &[F],
        accept: &Accept,
    ) -> Result<Header, ProtocolError> {
        if frames.len() != 2 {
            let mut err = ProtocolError::new(
                ErrorCode::BadFrames,
                format!(
                    "{} frames, expected 2 (an {HEADER_LEN}-byte header and a payload)",
                    frames.len()
                ),
            );
            if let Some(Ok(h)) = frames.first().map(|f| Header::decode(f.as_ref())) {
                err.request_id = h.request_id;
                err.version = h.version;
            }
            return Err(err);
        }
        let header = Header::decode_with(frames[0].as_ref(), accept)?;
        let bytes = frames[1].as_ref();
        let fail = |code, text: String| ProtocolError {
            code,
            text,
            request_id: header.request_id,
            version: header.version,
        };
        let limit = accept.max_payload;
        if bytes.len() > limit {
            return Err(fail(
                ErrorCode::BadLength,
                format!(
                    "payload of {} bytes is over the {limit}-byte limit",
                    bytes.len()
                ),
            ));
        }
        match header.dtype {
            Dtype::None if header.kind != MessageType::Error && !bytes.is_empty() => {
                return Err(fail(
                    ErrorCode::BadLength,
                    format!(
                        "a {:?} without a tensor has an empty payload, got {} bytes",
                        header.kind,
                        bytes.len()
                    ),
                ));
            }
            Dtype::None => {}
            dtype => {
                let expected = header.body_len().filter(|&n| n <= limit).ok_or_else(|| {
                    fail(
                        ErrorCode::BadLength,
                        format!(
                            "shape {:?} of {dtype:?} needs more than the {limit}-byte limit",
                            header.shape
                        ),
                    )
                })?;
                if header.compressed {
                    if bytes.is_empty() {
                        return Err(fail(
                            ErrorCode::BadLength,
                            "a compressed payload is never empty".into(),
                        ));
                    }
                } else if bytes.len() != expected {
                    return Err(fail(
                        ErrorCode::BadLength,
                        format!(
                            "payload is {} bytes; shape {:?} of {dtype:?} needs {expected}",
                            bytes.len(),
                            header.shape
                        ),
                    ));
                }
            }
        }
        Ok(header)
    }

    /// An inference request.
    pub fn infer(
        plan_digest: [u8; 32],
        request_id: u64,
        exit: u8,
        partition: u8,
        deadline_us: u32,
        shape: &[usize],
        payload: Payload,
    ) -> Self {
        let mut header = Header::new(MessageType::Infer, plan_digest, request_id);
        header.exit = exit;
        header.partition = partition;
        header.deadline_us = deadline_us;
        header.shape = shape.iter().map(|&d| d as u32).collect();
        header.dtype = match &payload {
            Payload::U8(_) => Dtype::U8,
            Payload::F32(_) => Dtype::F32,
            Payload::F16(_) => Dtype::F16,
            Payload::Quantized(q) => {
                let per_channel = shape.len() > 1 && shape.first() == Some(&q.scales.len());
                match (q.bits, per_channel) {
                    (4, false) => Dtype::Q4,
                    (4, true) => Dtype::Q4c,
                    (_, false) => Dtype::Q8,
                    (_, true) => Dtype::Q8c,
                }
            }
            Payload::Text(_) => Dtype::None,
        };
        Self { header, payload }
    }

    /// This message in protocol version `version` (a reply takes its request's).
    pub fn in_version(mut self, version: u8) -> Self {
        self.header.version = version;
        self
    }

    /// An error reply to `request_id`.
    pub fn error(plan_digest: [u8; 32], request_id: u64, code: ErrorCode, text: &str) -> Self {
        let mut header = Header::new(MessageType::Error, plan_digest, request_id);
        header.code = code as u16;
        Self {
            header,
            payload: Payload::Text(text.to_string()),
        }
    }
}

/// The payload frame of an Infer carrying `values`, a tensor of `shape` (per sample), sent
/// as `encoding`: exactly what a device puts on the wire (for `u8`, the values are the
/// pixels).
pub fn encode_tensor(values: &[f32], shape: &[usize], encoding: Encoding) -> Vec<u8> {
    let mut msg = Message::infer(
        [0; 32],
        0,
        1,
        0,
        0,
        shape,
        Payload::encode_f32(values, encoding.values, shape),
    );
    msg.header.set_encoding(encoding);
    let [_, payload] = msg.encode();
    payload
}

/// The values of a tensor of `shape` received as `encoding` in `payload`, through every
/// check an edge makes (length, bounded inflation, scales, finiteness); `u8` gives the
/// pixels as values.
pub fn decode_tensor(
    payload: &[u8],
    shape: &[usize],
    encoding: Encoding,
) -> Result<Vec<f32>, ProtocolError> {
    let mut header = Header::new(MessageType::Infer, [0; 32], 0);
    header.set_encoding(encoding);
    header.shape = shape.iter().map(|&d| d as u32).collect();
    let frames = [header.encode().to_vec(), payload.to_vec()];
    match Message::decode(&frames)?.payload {
        Payload::U8(pixels) => Ok(pixels.into_iter().map(f32::from).collect()),
        tensor => Ok(tensor.to_f32().expect("a tensor dtype")),
    }
}

/// Parses a 64-hex-digit plan digest.
pub fn digest_bytes(hex_digest: &str) -> Result<[u8; 32], String> {
    let bytes = hex::decode(hex_digest).map_err(|e| format!("plan digest `{hex_digest}`: {e}"))?;
    bytes
        .try_into()
        .map_err(|b: Vec<u8>| format!("plan digest has {} bytes, expected 32", b.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn request() -> Message {
        Message::infer(
            [7; 32],
            42,
            3,
            5,
            300_000,
            &[2, 2],
            Payload::F32(vec![1.0, -2.5, 0.0, 3.25]),
        )
    }

    #[test]
    fn header_layout_is_the_documented_one() {
        let [h, p] = request().encode();
        assert_eq!(h.len(), HEADER_LEN);
        assert_eq!(&h[0..4], b"EDGT");
        assert_eq!(h[4..8], [2, 1, 2, 2]); // version, infer, f32, ndim
        assert_eq!(h[40..48], 42u64.to_le_bytes());
        assert_eq!(h[48..50], [3, 5]);
        assert_eq!(h[52..56], 300_000u32.to_le_bytes());
        assert_eq!(h[64..72], [2, 0, 0, 0, 2, 0, 0, 0]);
        assert_eq!(p.len(), 16);
        assert_eq!(p[4..8], (-2.5f32).to_le_bytes());
    }

    #[test]
    fn a_result_holds_its_batch_where_a_request_holds_its_deadline() {
        let mut h = Header::new(MessageType::Result, [0; 32], 9);
        h.batch = 7;
        h.deadline_us = 123; // not a Result's: not written
        let bytes = h.encode();
        assert_eq!(bytes[52..56], 7u32.to_le_bytes());
        let back = Header::decode(&bytes).unwrap();
        assert_eq!((back.batch, back.deadline_us), (7, 0));
        let [request, _] = request().encode();
        let back = Header::decode(&request).unwrap();
        assert_eq!((back.batch, back.deadline_us), (0, 300_000));
    }

    #[test]
    fn each_kind_of_damage_has_its_code() {
        let [h, p] = request().encode();
        let code = |frames: &[Vec<u8>]| Message::decode(frames).unwrap_err().code;
        assert_eq!(code(std::slice::from_ref(&h)), ErrorCode::BadFrames);
        assert_eq!(
            code(&[h.clone(), p.clone(), p.clone()]),
            ErrorCode::BadFrames
        );
        assert_eq!(
            code(&[h[..79].to_vec(), p.clone()]),
            ErrorCode::BadHeaderLength
        );
        let patched = |at: usize, v: u8| {
            let mut h = h.clone();
            h[at] = v;
            vec![h, p.clone()]
        };
        assert_eq!(code(&patched(0, b'X')), ErrorCode::BadMagic);
        assert_eq!(code(&patched(4, 9)), ErrorCode::BadVersion);
        assert_eq!(code(&patched(5, 77)), ErrorCode::BadType);
        assert_eq!(code(&patched(6, 9)), ErrorCode::BadDtype);
        assert_eq!(code(&patched(7, 5)), ErrorCode::BadShape);
        assert_eq!(code(&patched(64, 0)), ErrorCode::BadShape);
        assert_eq!(code(&patched(72, 1)), ErrorCode::BadShape);
        assert_eq!(code(&[h.clone(), p[..12].to_vec()]), ErrorCode::BadLength);
        let mut nan = p.clone();
        nan[8..12].copy_from_slice(&f32::NAN.to_le_bytes());
        assert_eq!(code(&[h.clone(), nan]), ErrorCode::NonFinite);
        let err = Message::decode(&[h, p[..4].to_vec()]).unwrap_err();
        assert_eq!(err.request_id, 42, "errors carry the request id when known");
    }

    #[test]
    fn a_shape_whose_product_overflows_is_refused_not_wrapped() {
        // [65536; 4] is 2^64 elements: wrapping made it 0, so an empty payload "fit".
        let mut h = Header::new(MessageType::Infer, [0; 32], 5);
        h.dtype = Dtype::U8;
        h.shape = vec![65536; 4];
        assert_eq!(h.elements(), None);
        let err = Message::decode(&[h.encode().to_vec(), Vec::new()]).unwrap_err();
        assert_eq!((err.code, err.request_id), (ErrorCode::BadLength, 5));
        h.shape = vec![2, 3];
        assert_eq!(h.elements(), Some(6));
        h.shape.clear();
        assert_eq!(h.elements(), Some(0));
    }

    #[test]
    fn a_shape_over_the_limit_is_bad_length_as_the_spec_says() {
        let mut h = Header::new(MessageType::Infer, [0; 32], 1);
        h.dtype = Dtype::F32;
        h.shape = vec![1024, 1024, 1024];
        let err = Message::decode(&[h.encode().to_vec(), Vec::new()]).unwrap_err();
        assert_eq!(err.code, ErrorCode::BadLength);
        // A server's tighter limit: the plan's largest tensor.
        h.shape = vec![300];
        let frames = [h.encode().to_vec(), vec![0; 1200]];
        assert!(Message::decode(&frames).is_ok());
        let err = Message::decode_with(&frames, &Accept::requests(1024)).unwrap_err();
        assert_eq!(err.code, ErrorCode::BadLength);
    }

    #[test]
    fn a_type_the_server_does_not_take_is_bad_type_before_any_payload_check() {
        // A Result with a payload of the wrong length: bad_type (5) comes before bad_length (8).
        let mut h = Header::new(MessageType::Result, [0; 32], 3);
        h.dtype = Dtype::F32;
        h.shape = vec![10];
        let frames = [h.encode().to_vec(), vec![0; 7]];
        assert_eq!(
            Message::decode(&frames).unwrap_err().code,
            ErrorCode::BadLength
        );
        let accept = Accept::requests(MAX_PAYLOAD);
        assert_eq!(
            Message::decode_with(&frames, &accept).unwrap_err().code,
            ErrorCode::BadType
        );
        // ... and before a bad dtype.
        let mut b = h.encode();
        b[6] = 9;
        assert_eq!(
            Message::decode_with(&[b.to_vec(), Vec::new()], &accept)
                .unwrap_err()
                .code,
            ErrorCode::BadType
        );
    }

    #[test]
    fn framing_checks_refuse_what_decode_refuses_short_of_reading_values() {
        let accept = Accept::requests(MAX_PAYLOAD);
        let [h, p] = request().encode();
        assert_eq!(
            Message::check_framing(&[h.clone(), p.clone()], &accept).unwrap(),
            request().header
        );
        for frames in [
            vec![h.clone()],
            vec![h.clone(), p[..12].to_vec()],
            vec![h[..79].to_vec(), p.clone()],
        ] {
            assert_eq!(
                Message::check_framing(&frames, &accept).unwrap_err().code,
                Message::decode_with(&frames, &accept).unwrap_err().code
            );
        }
        // Values are the decoder's (and the edge's) business.
        let mut nan = p.clone();
        nan[..4].copy_from_slice(&f32::NAN.to_le_bytes());
        let frames = [h, nan];
        assert!(Message::check_framing(&frames, &accept).is_ok());
        assert_eq!(
            Message::decode_with(&frames, &accept).unwrap_err().code,
            ErrorCode::NonFinite
        );
    }

    #[test]
    fn a_ping_carries_nothing_or_u8_padding() {
        let ping = |dtype: Dtype, shape: Vec<u32>, payload: Vec<u8>| {
            let mut h = Header::new(MessageType::Ping, [0; 32], 8);
            h.dtype = dtype;
            h.shape = shape;
            Message::decode(&[h.encode().to_vec(), payload]).map_err(|e| e.code)
        };
        assert!(ping(Dtype::None, vec![], vec![]).is_ok());
        assert!(ping(Dtype::U8, vec![3], vec![1, 2, 3]).is_ok());
        assert_eq!(
            ping(Dtype::F32, vec![1], vec![0; 4]),
            Err(ErrorCode::BadDtype)
        );
        assert_eq!(
            ping(Dtype::U8, vec![2, 2], vec![0; 4]),
            Err(ErrorCode::BadShape)
        );
        assert_eq!(
            ping(Dtype::None, vec![], b"hi".to_vec()),
            Err(ErrorCode::BadLength)
        );
    }

    #[test]
    fn error_codes_round_trip() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_u16(code as u16), Some(code));
        }
        assert_eq!(ErrorCode::from_u16(0), None);
        let msg = Message::error([1; 32], 9, ErrorCode::WrongShape, "shape é");
        assert_eq!(Message::decode(&msg.encode()).unwrap(), msg);
    }

    fn arb_message() -> impl Strategy<Value = Message> {
        let shape = prop::collection::vec(1u32..5, 2..=MAX_DIMS);
        (
            any::<[u8; 32]>(),
            any::<u64>(),
            any::<u8>(),
            any::<u8>(),
            any::<u32>(),
            shape,
            prop::sample::select(
                Encoding::ACTIVATIONS
                    .iter()
                    .chain(&Encoding::INPUTS)
                    .copied()
                    .collect::<Vec<_>>(),
            ),
        )
            .prop_flat_map(|(digest, id, exit, p, deadline, shape, encoding)| {
                let n: usize = shape.iter().map(|&d| d as usize).product();
                let shape: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
                let values = if encoding.values == Values::U8 {
                    prop::collection::vec((0u8..=255).prop_map(f32::from), n).boxed()
                } else {
                    prop::collection::vec(-1e4f32..1e4, n).boxed()
                };
                values.prop_map(move |values| {
                    let payload = Payload::encode_f32(&values, encoding.values, &shape);
                    let mut msg = Message::infer(digest, id, exit, p, deadline, &shape, payload);
                    msg.header.set_encoding(encoding);
                    msg
                })
            })
    }

    /// An Infer of `values` as `encoding`, shape `shape`.
    fn encoded(values: &[f32], shape: &[usize], encoding: Encoding) -> Message {
        let payload = Payload::encode_f32(values, encoding.values, shape);
        let mut msg = Message::infer([7; 32], 9, 2, 4, 0, shape, payload);
        msg.header.set_encoding(encoding);
        msg
    }

    #[test]
    fn every_encoding_decodes_to_the_values_within_its_precision() {
        let shape = [4, 8, 8];
        let values: Vec<f32> = (0..256)
            .map(|i| ((i as f32 * 0.11).cos() * 3.0).max(0.0)) // a ReLU's output
            .collect();
        for encoding in Encoding::ACTIVATIONS {
            let frames = encoded(&values, &shape, encoding).encode();
            let back = Message::decode(&frames).unwrap();
            assert_eq!(back.header.encoding(), Some(encoding));
            let got = back.payload.to_f32().unwrap();
            // f16 keeps 11 bits; quantised codes are within half a step of a range of 3.
            let tolerance = match encoding.values.bits() {
                _ if encoding.values == Values::F32 => 0.0,
                _ if encoding.values == Values::F16 => 3.0 / 1024.0,
                Some(bits) => 3.0 / ((1u32 << bits) - 1) as f32 / 2.0 + 1e-6,
                None => unreachable!("every activation's values are exact, f16 or quantised"),
            };
            for (a, b) in values.iter().zip(&got) {
                assert!((a - b).abs() <= tolerance, "{encoding}: {a} vs {b}");
            }
            if encoding.lossless {
                let plain = Encoding::new(encoding.values, false);
                let plain_len = encoded(&values, &shape, plain).encode()[1].len();
                assert!(frames[1].len() < plain_len, "{encoding} does not compress");
            }
        }
        let q8c = encoded(&values, &shape, Encoding::new(Values::Q8c, false)).encode();
        assert_eq!(
            q8c[1].len(),
            256 + 5 * 4,
            "a scale and zero point per channel"
        );
    }

    #[test]
    fn a_version_1_message_is_still_served_and_version_2_dtypes_need_version_2() {
        let mut msg = request();
        msg.header.version = 1;
        let frames = msg.encode();
        assert_eq!(frames[0][4], 1);
        assert_eq!(Message::decode(&frames).unwrap(), msg);
        for encoding in ["f16", "q8", "f32+zstd"] {
            let mut msg = encoded(&[1.0; 4], &[2, 2], encoding.parse().unwrap());
            msg.header.version = 1;
            let err = Message::decode(&msg.encode()).unwrap_err();
            assert_eq!(
                (err.code, err.version),
                (ErrorCode::BadDtype, 1),
                "{encoding}"
            );
            assert!(err.text.contains("version 2"), "{}", err.text);
        }
        let mut bad = frames[0].clone();
        bad[4] = 3;
        let err = Message::decode(&[bad, frames[1].clone()]).unwrap_err();
        assert_eq!((err.code, err.version), (ErrorCode::BadVersion, VERSION));
    }

    #[test]
    fn a_compressed_payload_must_inflate_to_exactly_its_tensor() {
        let shape = [2, 4, 4];
        let msg = encoded(&[0.5; 32], &shape, "f32+zstd".parse().unwrap());
        let [h, p] = msg.encode();
        let code = |payload: Vec<u8>| Message::decode(&[h.clone(), payload]).unwrap_err().code;
        // A bomb: a few bytes that would inflate to 1 MiB.
        assert_eq!(
            code(encoding::compress(&vec![0; 1 << 20])),
            ErrorCode::BadCompression
        );
        assert_eq!(
            code(encoding::compress(&[0; 127])),
            ErrorCode::BadCompression
        );
        assert_eq!(code(p[..p.len() - 3].to_vec()), ErrorCode::BadCompression);
        assert_eq!(code(b"garbage!".to_vec()), ErrorCode::BadCompression);
        assert_eq!(code(Vec::new()), ErrorCode::BadLength);
        // Over the limit before inflating anything.
        let err = Message::decode_with(&[h.clone(), p.clone()], &Accept::requests(64)).unwrap_err();
        assert_eq!(err.code, ErrorCode::BadLength);
        // Inflating to NaN is still caught.
        let nan: Vec<u8> = [f32::NAN; 32]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert_eq!(code(encoding::compress(&nan)), ErrorCode::NonFinite);
    }

    #[test]
    fn a_bad_scale_or_a_non_finite_half_is_refused() {
        let shape = [2, 2, 2];
        for scale in [0.0f32, -1.0, f32::NAN, f32::INFINITY] {
            let [h, mut p] = encoded(&[1.0; 8], &shape, "q8c".parse().unwrap()).encode();
            p[4..8].copy_from_slice(&scale.to_le_bytes());
            let err = Message::decode(&[h, p]).unwrap_err();
            assert_eq!(err.code, ErrorCode::BadQuantization, "{scale}");
        }
        // A finite scale above 0 whose values overflow holds infinities.
        let [h, mut p] = encoded(&[1.0; 8], &shape, "q8".parse().unwrap()).encode();
        p[0..4].copy_from_slice(&f32::MAX.to_le_bytes());
        assert_eq!(
            Message::decode(&[h, p]).unwrap_err().code,
            ErrorCode::NonFinite
        );
        let [h, mut p] = encoded(&[1.0; 8], &shape, "f16".parse().unwrap()).encode();
        p[2..4].copy_from_slice(&0x7c00u16.to_le_bytes());
        assert_eq!(
            Message::decode(&[h, p]).unwrap_err().code,
            ErrorCode::NonFinite
        );
        let mut h = encoded(&[1.0; 8], &[8], "q8".parse().unwrap()).encode()[0].clone();
        h[6] = Dtype::Q8c as u8;
        let err = Header::decode(&h).unwrap_err();
        assert_eq!(err.code, ErrorCode::BadDtype, "q8c needs channels");
    }

    /// PROTOCOL.md, whose worked examples the next test checks.
    const PROTOCOL_MD: &str = include_str!("../../../PROTOCOL.md");

    /// The bytes PROTOCOL.md lists in the first code block after the line holding `marker`:
    /// on each line, after a `header` or `payload` label, the two-digit hex words up to the
    /// first other word (the comment); the digest placeholder as `digest`.
    fn documented(marker: &str, digest: [u8; 32]) -> Vec<u8> {
        let at = PROTOCOL_MD
            .find(marker)
            .unwrap_or_else(|| panic!("PROTOCOL.md has no `{marker}`"));
        let block = PROTOCOL_MD[at..]
            .lines()
            .skip_while(|l| !l.starts_with("```"))
            .skip(1)
            .take_while(|l| !l.starts_with("```"));
        let mut bytes = Vec::new();
        for line in block {
            if line
                .trim_start()
                .starts_with("<32 bytes of the plan digest>")
            {
                bytes.extend(digest);
                continue;
            }
            let words = line
                .split_whitespace()
                .skip_while(|w| ["header", "payload"].contains(w));
            for word in words {
                if word.len() != 2 || !word.bytes().all(|c| c.is_ascii_hexdigit()) {
                    break;
                }
                bytes.push(u8::from_str_radix(word, 16).expect("two hex digits"));
            }
        }
        bytes
    }

    #[test]
    fn the_worked_examples_are_the_bytes_this_encoder_writes() {
        let digest = [0xAB; 32];
        // The image: black but for an 8×8 square of 200 at rows and columns 12 to 19.
        let mut pixels = vec![0u8; 32 * 32];
        for row in 12..20 {
            pixels[32 * row + 12..32 * row + 20].fill(200);
        }
        let image = |encoding: &str| {
            let payload = Payload::U8(pixels.clone());
            let mut msg = Message::infer(digest, 7, 4, 0, 300_000, &[1, 32, 32], payload);
            msg.header.set_encoding(encoding.parse().unwrap());
            msg.encode()
        };
        let [h, _] = image("u8");
        assert_eq!(documented("Exit 4 (18 layers)", digest), h);
        let [h, p] = image("u8+zstd");
        assert_eq!(
            documented("**`u8+zstd`**", digest),
            [&h[..8], &p[..]].concat()
        );
        assert!(PROTOCOL_MD.contains(&format!("**`u8+zstd`** ({} bytes", p.len())));
        let back = Message::decode(&[h, p]).unwrap();
        assert_eq!(back.payload, Payload::U8(pixels.clone()));
        // The activation [2, 2, 2] in each encoding; the full header with the first.
        let values = [0.0, 0.5, 0.0, 1.5, -0.5, 0.0, 1.0, 2.0];
        for name in [
            "f32", "f16", "q8", "q8c", "q4", "q4c", "f32+zstd", "f16+zstd",
        ] {
            let encoding: Encoding = name.parse().unwrap();
            let payload = Payload::encode_f32(&values, encoding.values, &[2, 2, 2]);
            let mut msg = Message::infer(digest, 7, 1, 3, 0, &[2, 2, 2], payload);
            msg.header.set_encoding(encoding);
            let [h, p] = msg.encode();
            let header = if name == "f32" { &h[..] } else { &h[..8] };
            let marker = format!("**`{name}`** ({} bytes", p.len());
            assert_eq!(
                documented(&marker, digest),
                [header, &p[..]].concat(),
                "{name}"
            );
            let back = Message::decode(&[h, p]).unwrap();
            assert_eq!(
                back.payload.to_f32().unwrap(),
                values,
                "{name} is exact here"
            );
        }
    }

    proptest! {
        #[test]
        fn encode_then_decode_is_identity(msg in arb_message()) {
            prop_assert_eq!(Message::decode(&msg.encode()).unwrap(), msg);
        }

        #[test]
        fn random_frames_never_panic(frames in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 0..4)) {
            let _ = Message::decode(&frames);
        }

        #[test]
        fn corrupting_any_header_byte_never_panics(msg in arb_message(), at in 0..HEADER_LEN, v in any::<u8>()) {
            let [mut h, p] = msg.encode();
            h[at] = v;
            if let Ok(m) = Message::decode(&[h, p]) {
                // Whatever decodes must re-encode to a valid message.
                prop_assert!(Message::decode(&m.encode()).is_ok());
            }
        }
    }
}
