//! The Edgent runtime: the B-AlexNet model and its layer table, weights, and (as the project
//! grows) latency models, the planner, the wire protocol, the device client and the edge server.

pub mod backend;
pub mod device;
pub mod edge;
pub mod entropy;
pub mod latency;
pub mod layers;
pub mod model;
pub mod planner;
pub mod profile;
pub mod protocol;
pub mod shaping;
pub mod timing;
pub mod transport;
pub mod weights;

pub use backend::Backend;
pub use layers::{ExitSpec, LayerKind, LayerParams, LayerSpec, LayerTable, NUM_EXITS};
pub use model::{Activation, BranchyAlexNet, BranchyAlexNetConfig, Layer, ModelError};
pub use weights::{WeightMap, WeightsError};
