//! Portable weights: `model.safetensors` and the weights digest.
//!
//! Tensor names are `{layer}.weight` and `{layer}.bias`, with layer names from the layer
//! table (`conv1`, `fc6`, `exit2.conv1`, `exit4.fc2`, …). Shapes follow PyTorch:
//! convolutions `[out, in, kh, kw]`, fully connected `[out, in]` (burn stores the transpose;
//! it is transposed on export and import). All tensors are `f32`, little-endian.
//!
//! The digest is the SHA-256 of, for each tensor in name order: the name, a zero byte, the
//! rank and each dimension as little-endian `u64`, then the values as little-endian `f32`.
//! It depends on the weights only, not on the file format.

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::Param;
use burn::prelude::*;
use sha2::{Digest, Sha256};

use crate::model::layers::NUM_EXITS;
use crate::model::{BranchyAlexNet, Layer};

/// A named tensor: shape and row-major values.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedTensor {
    /// Shape (PyTorch layout).
    pub shape: Vec<usize>,
    /// Values, row-major.
    pub values: Vec<f32>,
}

/// All weights of a model, by tensor name.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WeightMap(pub BTreeMap<String, NamedTensor>);

/// Errors reading or applying weights.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is not valid safetensors.
    #[error("{path}: not a valid safetensors file: {problem}")]
    Format {
        /// The file.
        path: String,
        /// What is wrong.
        problem: String,
    },
    /// The weights do not fit the model.
    #[error("weights do not fit the model: {0}")]
    Mismatch(String),
}

fn tensor_values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_into_vec_as::<f32>().unwrap_or_default()
}

impl WeightMap {
    /// Digest of the weights, as lowercase hex.
    pub fn digest(&self) -> String {
        let mut hasher = Sha256::new();
        for (name, tensor) in &self.0 {
            hasher.update(name.as_bytes());
            hasher.update([0]);
            hasher.update((tensor.shape.len() as u64).to_le_bytes());
            for &d in &tensor.shape {
                hasher.update((d as u64).to_le_bytes());
            }
            for v in &tensor.values {
                hasher.update(v.to_le_bytes());
            }
        }
        hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Writes the weights as a safetensors file, with `metadata` in its header.
    pub fn save(
        &self,
        path: &Path,
        metadata: BTreeMap<String, String>,
    ) -> Result<(), WeightsError> {
        let bytes: Vec<(String, Vec<u8>)> = self
            .0
            .iter()
            .map(|(n, t)| {
                (
                    n.clone(),
                    t.values.iter().flat_map(|v| v.to_le_bytes()).collect(),
                )
            })
            .collect();
        let views = bytes
            .iter()
            .zip(self.0.values())
            .map(|((name, data), t)| {
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, t.shape.clone(), data)
                    .map(|view| (name.clone(), view))
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| WeightsError::Mismatch(e.to_string()))?;
        let file = safetensors::serialize(views, Some(metadata.into_iter().collect()))
            .map_err(|e| WeightsError::Mismatch(e.to_string()))?;
        std::fs::write(path, file).map_err(|source| WeightsError::Io {
            path: path.display().to_string(),
            source,
        })
    }

    /// Reads a safetensors file of `f32` tensors.
    pub fn load(path: &Path) -> Result<Self, WeightsError> {
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| WeightsError::Io {
            path: shown.clone(),
            source,
        })?;
        Self::from_bytes(&bytes, &shown)
    }

    /// Parses safetensors bytes of `f32` tensors; `source` names them in errors.
    pub fn from_bytes(bytes: &[u8], source: &str) -> Result<Self, WeightsError> {
        let format = |problem: String| WeightsError::Format {
            path: source.to_string(),
            problem,
        };
        let file =
            safetensors::SafeTensors::deserialize(bytes).map_err(|e| format(e.to_string()))?;
        let mut map = BTreeMap::new();
        for (name, view) in file.tensors() {
            if view.dtype() != safetensors::Dtype::F32 {
                return Err(format(format!(
                    "tensor {name} is {:?}, expected F32",
                    view.dtype()
                )));
            }
            let values = view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            map.insert(
                name,
                NamedTensor {
                    shape: view.shape().to_vec(),
                    values,
                },
            );
        }
        Ok(Self(map))
    }
}

impl BranchyAlexNet {
    /// Unique layers of the network with their names, trunk first then each branch.
    fn named_layers(&self) -> Vec<(&str, &Layer)> {
        let table = self.layer_table();
        let mut out: Vec<(&str, &Layer)> = table.exits[NUM_EXITS - 1]
            .layers
            .iter()
            .map(|s| s.name.as_str())
            .zip(&self.trunk)
            .collect();
        for (spec, branch) in table.exits[..NUM_EXITS - 1].iter().zip(&self.branches) {
            let names = spec.layers[spec.trunk_layers..]
                .iter()
                .map(|s| s.name.as_str());
            out.extend(names.zip(branch));
        }
        out
    }

    /// All weights, in PyTorch layout.
    pub fn weights(&self) -> WeightMap {
        let mut map = BTreeMap::new();
        let mut put = |name: String, shape: Vec<usize>, values: Vec<f32>| {
            map.insert(name, NamedTensor { shape, values });
        };
        for (name, layer) in self.named_layers() {
            match layer {
                Layer::Conv(conv) => {
                    let w = conv.weight.val();
                    put(
                        format!("{name}.weight"),
                        w.dims().to_vec(),
                        tensor_values(w),
                    );
                    if let Some(b) = &conv.bias {
                        let b = b.val();
                        put(format!("{name}.bias"), b.dims().to_vec(), tensor_values(b));
                    }
                }
                Layer::Fc(linear) => {
                    let w = linear.weight.val().transpose();
                    put(
                        format!("{name}.weight"),
                        w.dims().to_vec(),
                        tensor_values(w),
                    );
                    if let Some(b) = &linear.bias {
                        let b = b.val();
                        put(format!("{name}.bias"), b.dims().to_vec(), tensor_values(b));
                    }
                }
                _ => {}
            }
        }
        WeightMap(map)
    }

    /// Replaces every weight with the one of the same name in `weights`; every tensor must be
    /// present with the right shape, and no tensor may be left over.
    pub fn load_weights(
        mut self,
        weights: &WeightMap,
        device: &Device,
    ) -> Result<Self, WeightsError> {
        let mut used = 0;
        let mut take = |name: String, shape: &[usize]| -> Result<Vec<f32>, WeightsError> {
            let t = weights
                .0
                .get(&name)
                .ok_or_else(|| WeightsError::Mismatch(format!("tensor {name} is missing")))?;
            if t.shape != shape {
                return Err(WeightsError::Mismatch(format!(
                    "tensor {name} has shape {:?}, the model needs {shape:?}",
                    t.shape
                )));
            }
            if t.values.iter().any(|v| !v.is_finite()) {
                return Err(WeightsError::Mismatch(format!(
                    "tensor {name} holds non-finite values"
                )));
            }
            used += 1;
            Ok(t.values.clone())
        };
        let names: Vec<String> = self
            .named_layers()
            .iter()
            .map(|(n, _)| n.to_string())
            .collect();
        let layers = self
            .trunk
            .iter_mut()
            .chain(self.branches.iter_mut().flatten());
        for (name, layer) in names.iter().zip(layers) {
            match layer {
                Layer::Conv(conv) => {
                    let dims = conv.weight.val().dims();
                    let values = take(format!("{name}.weight"), &dims)?;
                    conv.weight = Param::from_tensor(Tensor::from_data(
                        TensorData::new(values, dims),
                        device,
                    ));
                    if let Some(bias) = &mut conv.bias {
                        let dims = bias.val().dims();
                        let values = take(format!("{name}.bias"), &dims)?;
                        *bias = Param::from_tensor(Tensor::from_data(
                            TensorData::new(values, dims),
                            device,
                        ));
                    }
                }
                Layer::Fc(linear) => {
                    let [d_in, d_out] = linear.weight.val().dims();
                    let values = take(format!("{name}.weight"), &[d_out, d_in])?;
                    let w: Tensor<2> =
                        Tensor::from_data(TensorData::new(values, [d_out, d_in]), device);
                    linear.weight = Param::from_tensor(w.transpose());
                    if let Some(bias) = &mut linear.bias {
                        let dims = bias.val().dims();
                        let values = take(format!("{name}.bias"), &dims)?;
                        *bias = Param::from_tensor(Tensor::from_data(
                            TensorData::new(values, dims),
                            device,
                        ));
                    }
                }
                _ => {}
            }
        }
        if used != weights.0.len() {
            let known: Vec<String> = self.weights().0.into_keys().collect();
            let extra: Vec<&String> = weights.0.keys().filter(|k| !known.contains(k)).collect();
            return Err(WeightsError::Mismatch(format!("unknown tensors {extra:?}")));
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::BranchyAlexNetConfig;

    #[test]
    fn safetensors_round_trip_keeps_weights_and_digest() {
        let device = Device::flex();
        let model = BranchyAlexNetConfig::new().init_seeded(&device, 1);
        let weights = model.weights();
        assert_eq!(weights.0["fc8.weight"].shape, vec![10, 128]);
        assert_eq!(weights.0["conv1.weight"].shape, vec![32, 1, 5, 5]);
        assert_eq!(weights.0["exit4.fc1.weight"].shape, vec![128, 512]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        weights.save(&path, BTreeMap::new()).unwrap();
        let loaded = WeightMap::load(&path).unwrap();
        assert_eq!(loaded, weights);
        assert_eq!(loaded.digest(), weights.digest());

        let other = BranchyAlexNetConfig::new().init_seeded(&device, 2);
        assert_ne!(other.weights().digest(), weights.digest());
        let restored = other.load_weights(&loaded, &device).unwrap();
        assert_eq!(restored.weights().digest(), weights.digest());
    }

    #[test]
    fn wrong_weights_are_rejected_with_the_tensor_named() {
        let device = Device::flex();
        let model = BranchyAlexNetConfig::new().init(&device);
        let mut weights = model.weights();
        weights.0.get_mut("fc7.weight").unwrap().shape = vec![1, 2];
        let err = BranchyAlexNetConfig::new()
            .init(&device)
            .load_weights(&weights, &device)
            .unwrap_err()
            .to_string();
        assert!(err.contains("fc7.weight"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.safetensors");
        std::fs::write(&path, b"not a safetensors file").unwrap();
        let err = WeightMap::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("bad.safetensors") && err.contains("not a valid"),
            "{err}"
        );
    }
}
