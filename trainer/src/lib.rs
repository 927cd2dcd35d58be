//! Joint training of all five exits of B-AlexNet (BranchyNet), per-exit evaluation with
//! BranchyNet's entropy-threshold mode, and export of weights and metrics.
//!
//! [`train`] is the whole job; `cargo xtask train` only parses flags into a [`TrainConfig`].

pub mod config;
pub mod evaluation;
pub mod export;
pub mod training;

pub use config::TrainConfig;
pub use evaluation::{EntropyPoint, Evaluation, ExitAccuracy};
pub use export::Metrics;
pub use training::{TrainError, train};
