//! Edgent's offline toolchain (DESIGN.md §4–5): what runs before deployment and never ships
//! in the binaries.
//!
//! * [`profile`] — times every layer kind over a sweep of configurations on one role, and
//!   checks fitted models against the real model's slices;
//! * [`latency`] — per-(role, layer kind) linear latency models fitted with linfa, the
//!   paper's models, and the chain calibration;
//! * [`batching`] — how the edge's time for each suffix grows with batch size;
//! * [`costs`] — every (exit, partition) pair's predicted costs, the planner's input;
//! * [`encodings`] — bytes, accuracy and codec time of every encoding of the tensor at
//!   every split, measured on the model and its test set;
//! * [`shaping`] — tc-shaped links between network namespaces, for experiments and tests.

pub mod batching;
pub mod costs;
pub mod encodings;
pub mod latency;
pub mod profile;
pub mod shaping;
