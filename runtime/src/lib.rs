//! The Edgent runtime: everything the deployed binaries (`edgent-device`, `edgent-edge`) need,
//! and nothing offline. Its modules follow the system:
//!
//! * [`model`] — the layer table, B-AlexNet built from it (burn), weights, CPU backends;
//! * [`engine`] — what runs slices of the exit chains: the generated kernels, or burn;
//! * [`plan`] — the (exit, partition) costs and Algorithm 1 (the decision per request);
//! * [`wire`] — the protocol (frames, header, error codes) and the ZeroMQ transport (CURVE, ZAP);
//! * [`device`] — the device client: link estimate, its half of the chain, local fallback;
//! * [`edge`] — the edge server, its workers, and the load-balancing broker;
//! * [`slowdown`] — the emulated slow device (a slice run layer by layer, each stretched);
//! * [`fuzz`] — the fuzzer's oracle: decoder and admission checked against PROTOCOL.md.
//!
//! Training lives in `trainer`, profiling and latency fitting in `toolchain`; neither is a
//! dependency of this crate.

pub mod broker;
pub mod device;
pub mod edge;
pub mod engine;
pub mod fuzz;
pub mod metrics;
pub mod model;
pub mod plan;
pub mod slowdown;
pub mod wire;

pub use engine::{Activation, BurnEngine, Engine, EngineKind, Isa, PackedNetwork};
pub use model::backend::Backend;
pub use model::layers::{ExitSpec, LayerKind, LayerParams, LayerSpec, LayerTable, NUM_EXITS};
pub use model::weights::{WeightMap, WeightsError};
pub use model::{BranchyAlexNet, BranchyAlexNetConfig, Features, Layer, ModelError};
