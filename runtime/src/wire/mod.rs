//! What crosses the network between device and edge: the [`protocol`] (two frames per
//! message, a fixed header and a tensor payload; PROTOCOL.md) and the ZeroMQ [`transport`]
//! (CurveZMQ keys, the ZAP allow-list).

pub mod protocol;
pub mod transport;
