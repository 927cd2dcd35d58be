//! burn's forward as an engine: the reference the generated engine is tested against, and
//! the `--engine burn` of the binaries.

use std::ops::Range;

use burn::prelude::Device;

use super::{Activation, AfterLayer, Engine, EngineKind, check_slice};
use crate::model::layers::LayerTable;
use crate::model::{BranchyAlexNet, Features, ModelError};

/// B-AlexNet on a burn backend.
#[derive(Debug, Clone)]
pub struct BurnEngine {
    model: BranchyAlexNet,
    device: Device,
}

impl BurnEngine {
    /// The engine of `model`, whose weights live on `device`.
    pub fn new(model: BranchyAlexNet, device: Device) -> Self {
        Self { model, device }
    }

    /// The burn model.
    pub fn model(&self) -> &BranchyAlexNet {
        &self.model
    }

    /// The device the model runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }
}

impl Engine for BurnEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::Burn
    }

    fn describe(&self) -> String {
        format!("burn ({:?})", self.device)
    }

    fn table(&self) -> &LayerTable {
        self.model.layer_table()
    }

    fn run(
        &self,
        exit: usize,
        range: Range<usize>,
        x: &Activation,
        after_layer: AfterLayer<'_>,
    ) -> Result<Activation, ModelError> {
        check_slice(self.table(), exit, &range, x.dims())?;
        let mut y = Features::from_values(x.to_values(), x.dims(), &self.device)?;
        for index in range {
            y = self.model.forward_slice(exit, index..index + 1, y)?;
            // Lazy backends finish the layer before it is reported.
            let _ = self.device.sync();
            after_layer(index)?;
        }
        let dims = y.dims();
        Activation::from_values(y.to_values(), &dims)
    }

    /// The whole slice as one chain of burn operations, without waiting for the backend
    /// after every layer (nothing asks for per-layer times): a GPU backend queues all of
    /// it, and reading the result back is the one wait.
    fn forward_slice(
        &self,
        exit: usize,
        range: Range<usize>,
        x: &Activation,
    ) -> Result<Activation, ModelError> {
        let y = Features::from_values(x.to_values(), x.dims(), &self.device)?;
        let y = self.model.forward_slice(exit, range, y)?;
        let dims = y.dims();
        Activation::from_values(y.to_values(), &dims)
    }
}
