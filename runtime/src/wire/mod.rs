//! What crosses the network between device and edge: the [`protocol`] (two frames per
//! message, a fixed header and a tensor payload; PROTOCOL.md) and the ZeroMQ [`transport`]
//! (CurveZMQ keys, the ZAP allow-list), and the structure-aware [`mutate`] engine the fuzzer
//! feeds the decoder with.

pub mod encoding;
pub mod mutate;
pub mod protocol;
pub mod transport;
