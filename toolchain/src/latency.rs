//! Per-layer-kind linear latency models (DESIGN.md §4): fitting them with linfa-linear on
//! profile samples, predicting a layer's or a chain's time, and the paper's built-in models.
//!
//! Each (role, kind) gets a model on the paper's Table I features and, where it helps, one on
//! richer features (multiply-adds); both are kept with their held-out R² and mean absolute
//! percentage error, and predictions use the one with the lower held-out error. The held-out
//! samples are a quarter of each kind's configurations, picked by a hash of the
//! configuration ([`configuration_hash`]): spread over the whole sweep, not one corner of it,
//! and the same on every run and machine and for every row order.

use std::collections::BTreeMap;

use linfa::prelude::*;
use linfa_linear::LinearRegression;
use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};

use crate::profile::{Features, MODEL_LOAD, Role, Sample};
use runtime::EngineKind;
use runtime::model::backend::threads_in_words;
use runtime::model::layers::{LayerKind, LayerSpec};

/// Samples (layers, or chain slices when calibrating) faster than this count as this fast
/// when weighting a relative fit, so that timer noise on sub-microsecond times cannot
/// dominate it.
pub const RELATIVE_FLOOR_MS: f64 = 0.000_5;

/// Version of the latency-model JSON schema.
pub const SCHEMA_VERSION: u32 = 1;

/// Table I features of a kind (sizes in bytes).
pub fn feature_names(kind: &str) -> Option<&'static [&'static str]> {
    Some(match kind {
        "conv" => &["input_bytes", "kernel_filters"],
        "relu" | "lrn" | "dropout" => &["input_bytes"],
        "pool" | "fc" => &["input_bytes", "output_bytes"],
        MODEL_LOAD => &["model_bytes"],
        _ => return None,
    })
}

/// Richer features of a kind on an engine (`generated` or `burn`), where there are any.
pub fn rich_feature_names(kind: &str, engine: &str) -> Option<&'static [&'static str]> {
    match (kind, engine) {
        // The generated engine convolves directly: its time is the multiply-adds (the
        // kernels run near the FMA bound), the outputs (bias, ReLU, stores; a tile's fixed
        // cost, which sets the time of a layer with few input channels such as the first),
        // the input (copied once into the padded buffer) and the weights streamed per tile.
        ("conv", "generated") => Some(&["macs", "output_bytes", "input_bytes", "model_bytes"]),
        // Parameter bytes let small maps, where streaming the weights dominates, differ from
        // large ones, where the multiply-adds do. burn's convolution also unfolds its input
        // (im2col) for the matrix product, copying a run of input channels per output
        // position and kernel offset: with few input channels (the first layer) the runs
        // and positions, not the multiply-adds, set its time. (burn-flex convolves ≤ 4
        // input and ≤ 16 output channels directly, without unfolding: 16 of the 192
        // configurations of the sweep, none of the model's layers.)
        ("conv", _) => Some(&[
            "macs",
            "model_bytes",
            "input_bytes",
            "output_bytes",
            "im2col_bytes",
            "positions",
            "unfold_runs",
        ]),
        ("fc", _) => Some(&["macs", "model_bytes", "input_bytes", "output_bytes"]),
        _ => None,
    }
}

/// A fitted linear model `ms = intercept + Σ coefficient·feature`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinearModel {
    /// Feature names, in coefficient order.
    pub features: Vec<String>,
    /// One coefficient per feature (ms per unit).
    pub coefficients: Vec<f64>,
    /// Intercept (ms).
    pub intercept: f64,
    /// R² on held-out samples (absent for built-in models).
    pub r2: Option<f64>,
    /// Mean absolute percentage error on held-out samples, in percent.
    pub mape: Option<f64>,
    /// Samples used for fitting.
    pub train_samples: usize,
    /// Held-out samples.
    pub test_samples: usize,
}

impl LinearModel {
    /// Predicted milliseconds for `features` (never negative).
    pub fn predict(&self, features: &Features) -> f64 {
        let sum: f64 = self
            .features
            .iter()
            .zip(&self.coefficients)
            .map(|(name, c)| c * features.get(name).unwrap_or(0.0))
            .sum();
        (self.intercept + sum).max(0.0)
    }
}

/// The models of one layer kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KindModels {
    /// The model on the paper's Table I features.
    pub table1: LinearModel,
    /// The model on richer features, if fitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rich: Option<LinearModel>,
    /// Which one predictions use: `table1` or `rich`.
    pub selected: String,
}

impl KindModels {
    /// The model predictions use.
    pub fn selected(&self) -> &LinearModel {
        match (&self.rich, self.selected.as_str()) {
            (Some(rich), "rich") => rich,
            _ => &self.table1,
        }
    }
}

/// The models of one role.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoleModels {
    /// Where the profile came from: the backend it was measured on, or `paper`.
    pub source: String,
    /// Emulated slowdown the profile was taken with.
    pub slowdown: f64,
    /// CPU threads the profile's layers ran on (0: one per core).
    #[serde(default)]
    pub threads: usize,
    /// The engine the profile was taken on: `generated` or `burn` (models made before the
    /// field were burn's).
    #[serde(default = "burn_engine")]
    pub engine: String,
    /// Models by kind name (`conv`, …, `model_load`).
    pub kinds: BTreeMap<String, KindModels>,
    /// Correction measured on the real model's chains (`cargo xtask fit --check`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<Calibration>,
}

/// Models made before the engine was recorded were burn's.
fn burn_engine() -> String {
    "burn".into()
}

/// Correction of the per-layer models from timed runs of the real model's exit chains:
/// a layer of kind `k` run inside a chain takes `scale(k) × predicted + per_layer_ms`.
/// Layers timed alone in the sweep run back to back with hot caches and reused inputs; in a
/// chain each layer finds another layer's weights in the cache and a fresh tensor, which
/// costs convolutions (weights and im2col buffers) a different share than element-wise
/// layers, so each kind gets its own scale where the measured chains tell it apart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// Factor on the per-layer prediction of kinds without their own scale.
    pub scale: f64,
    /// Factor on the per-layer prediction of these kinds.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub kind_scales: BTreeMap<String, f64>,
    /// Fixed cost per layer call, ms.
    pub per_layer_ms: f64,
    /// Number of measured slices it was fitted on.
    pub slices: usize,
}

/// One measured slice of an exit chain, for fitting a [`Calibration`].
#[derive(Debug, Clone, PartialEq)]
pub struct ChainPoint {
    /// Layers in the slice.
    pub layers: usize,
    /// The per-layer models' predictions of the slice's layers, summed by kind, ms.
    pub predicted_by_kind: BTreeMap<String, f64>,
    /// Measured time of the slice, ms.
    pub measured_ms: f64,
}

impl Calibration {
    /// A kind's own scale must lie in this range; outside it (the chains cannot tell the
    /// kind apart from the others), the kind shares the common scale.
    pub const PLAUSIBLE_SCALE: std::ops::RangeInclusive<f64> = 0.25..=4.0;

    /// The factor on `kind`'s predictions.
    pub fn scale_of(&self, kind: &str) -> f64 {
        self.kind_scales.get(kind).copied().unwrap_or(self.scale)
    }

    /// The corrected time of one layer of `kind` predicted at `predicted_ms`.
    pub fn apply(&self, kind: &str, predicted_ms: f64) -> f64 {
        self.scale_of(kind) * predicted_ms + self.per_layer_ms
    }

    /// The corrected time of a measured slice's layers.
    pub fn apply_chain(&self, point: &ChainPoint) -> f64 {
        point
            .predicted_by_kind
            .iter()
            .map(|(kind, ms)| self.scale_of(kind) * ms)
            .sum::<f64>()
            + self.per_layer_ms * point.layers as f64
    }

    /// Fits the scales and `per_layer_ms ≥ 0` to measured slices, minimising the squared
    /// relative error (absolute below [`RELATIVE_FLOOR_MS`]): every kind gets its own scale,
    /// then kinds whose scale is implausible share one common scale. `None` without usable
    /// points.
    pub fn fit(points: &[ChainPoint]) -> Option<Self> {
        let points: Vec<&ChainPoint> = points
            .iter()
            .filter(|p| p.measured_ms > 0.0 && p.measured_ms.is_finite())
            .collect();
        let mut own: Vec<String> = points
            .iter()
            .flat_map(|p| p.predicted_by_kind.iter())
            .filter(|(_, ms)| **ms > 0.0)
            .map(|(kind, _)| kind.clone())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        if own.is_empty() {
            return None;
        }
        let mut per_layer = true;
        loop {
            let shared_ms = |p: &ChainPoint| -> f64 {
                p.predicted_by_kind
                    .iter()
                    .filter(|(kind, _)| !own.contains(kind))
                    .map(|(_, ms)| ms)
                    .sum()
            };
            let shared = points.iter().any(|p| shared_ms(p) > 0.0);
            // Columns: one per own kind, then the shared kinds, then the layer count.
            let columns = own.len() + usize::from(shared) + usize::from(per_layer);
            let column = |p: &ChainPoint, j: usize| -> f64 {
                if j < own.len() {
                    p.predicted_by_kind.get(&own[j]).copied().unwrap_or(0.0)
                } else if shared && j == own.len() {
                    shared_ms(p)
                } else {
                    p.layers as f64
                }
            };
            let weight = |p: &ChainPoint| 1.0 / p.measured_ms.max(RELATIVE_FLOOR_MS);
            let x = Array2::from_shape_fn((points.len(), columns), |(i, j)| {
                column(points[i], j) * weight(points[i])
            });
            let y: Array1<f64> = points.iter().map(|p| p.measured_ms * weight(p)).collect();
            let coefficients = weighted_least_squares(x, y).ok()?;
            if per_layer && coefficients[columns - 1] < 0.0 {
                per_layer = false;
                continue;
            }
            // The kind whose own scale is furthest outside the plausible range goes shared.
            let implausible = own
                .iter()
                .zip(&coefficients)
                .filter(|(_, c)| !Self::PLAUSIBLE_SCALE.contains(c))
                .max_by(|a, b| {
                    let off = |c: f64| c.max(1e-9).ln().abs();
                    off(*a.1).total_cmp(&off(*b.1))
                })
                .map(|(kind, _)| kind.clone());
            if let Some(kind) = implausible {
                own.retain(|k| *k != kind);
                continue;
            }
            if shared
                && !own.is_empty()
                && !Self::PLAUSIBLE_SCALE.contains(&coefficients[own.len()])
            {
                // The shared kinds cannot be told apart from the others either: one scale.
                own.clear();
                continue;
            }
            let scale = if shared {
                coefficients[own.len()]
            } else {
                // Every kind has its own scale; the common one (for kinds the chains did
                // not contain) is their mean.
                coefficients[..own.len()].iter().sum::<f64>() / own.len() as f64
            };
            if !(scale > 0.0 && scale.is_finite()) {
                return None;
            }
            return Some(Self {
                scale,
                kind_scales: own
                    .iter()
                    .cloned()
                    .zip(coefficients.iter().copied())
                    .collect(),
                per_layer_ms: if per_layer {
                    coefficients[columns - 1]
                } else {
                    0.0
                },
                slices: points.len(),
            });
        }
    }
}

/// Latency models of both roles: the output of `cargo xtask fit`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencyModels {
    /// Schema version ([`SCHEMA_VERSION`]).
    pub version: u32,
    /// Unit of sizes in features.
    pub unit: String,
    /// Models by role.
    pub roles: BTreeMap<Role, RoleModels>,
}

/// Why fitting failed.
#[derive(Debug, thiserror::Error)]
pub enum FitError {
    /// Not enough samples of a kind.
    #[error(
        "too few samples for {role} {kind}: {found}, need at least {needed}; profile more configurations"
    )]
    TooFew {
        /// Role.
        role: &'static str,
        /// Kind.
        kind: String,
        /// Samples found.
        found: usize,
        /// Samples needed.
        needed: usize,
    },
    /// A kind no model exists for.
    #[error(
        "unknown layer kind `{0}` in the profile: expected conv, relu, pool, lrn, dropout, fc or model_load"
    )]
    UnknownKind(String),
    /// Nothing to fit.
    #[error("the profile holds no samples")]
    Empty,
    /// Samples of one role from different settings.
    #[error("{0}")]
    Mixed(String),
    /// linfa refused the data.
    #[error("fitting {kind} failed: {problem}")]
    Linfa {
        /// Kind.
        kind: String,
        /// linfa's message.
        problem: String,
    },
    /// The JSON is not a latency-model file.
    #[error("not a latency-model file: {0}")]
    Format(String),
}

/// Least squares without an intercept on rows already divided by their weights: returns
/// one coefficient per column of `x`, 0 for a column the others determine (otherwise the
/// solve returns huge opposite coefficients that cancel).
fn weighted_least_squares(x: Array2<f64>, y: Array1<f64>) -> Result<Vec<f64>, String> {
    let columns = x.ncols();
    // Scale columns to comparable magnitudes for a well-conditioned solve; undo afterwards.
    let scales: Vec<f64> = (0..columns)
        .map(|j| {
            x.column(j)
                .iter()
                .fold(0.0f64, |m, v| m.max(v.abs()))
                .max(1e-12)
        })
        .collect();
    let scaled = Array2::from_shape_fn(x.dim(), |(i, j)| x[[i, j]] / scales[j]);
    let kept = independent_columns(&scaled);
    let fitted = LinearRegression::new()
        .with_intercept(false)
        .fit(&Dataset::new(scaled.select(ndarray::Axis(1), &kept), y))
        .map_err(|e| e.to_string())?;
    let mut params = vec![0.0; columns];
    for (&j, p) in kept.iter().zip(fitted.params()) {
        params[j] = p / scales[j];
    }
    Ok(params)
}

/// Fits one linear model on `train`, evaluates it on `test`.
///
/// The fit minimises the squared *relative* error Σ((ŷ − y)/y)², not the absolute one:
/// the samples span four orders of magnitude (a 2 µs ReLU to a 20 ms convolution) and the
/// planner sums many small layers, so an ordinary fit — which lets the largest samples
/// decide and misses microsecond layers by several hundred percent — predicts chains worse.
/// Dividing each row (a 1 for the intercept, the features, and the target) by its target
/// turns this into an ordinary least-squares problem with target 1 (less for the rare rows
/// faster than [`RELATIVE_FLOOR_MS`]) and no separate intercept.
fn fit_one(
    kind: &str,
    names: &[&str],
    train: &[&Sample],
    test: &[&Sample],
) -> Result<LinearModel, FitError> {
    let weight = |s: &Sample| 1.0 / s.ms.max(RELATIVE_FLOOR_MS);
    // Column 0 is the intercept's, first so that a feature constant over the samples is the
    // one dropped as collinear, not the intercept.
    let column = |s: &Sample, j: usize| {
        if j == 0 {
            1.0
        } else {
            s.features().get(names[j - 1]).unwrap_or(0.0)
        }
    };
    let columns = names.len() + 1;
    let x = Array2::from_shape_fn((train.len(), columns), |(i, j)| {
        column(train[i], j) * weight(train[i])
    });
    let y: Array1<f64> = train.iter().map(|s| s.ms * weight(s)).collect();
    let params = weighted_least_squares(x, y).map_err(|problem| FitError::Linfa {
        kind: kind.into(),
        problem,
    })?;
    let mut model = LinearModel {
        features: names.iter().map(ToString::to_string).collect(),
        coefficients: params[1..].to_vec(),
        intercept: params[0],
        r2: None,
        mape: None,
        train_samples: train.len(),
        test_samples: test.len(),
    };
    let (r2, mape) = evaluate(&model, test);
    model.r2 = Some(r2);
    model.mape = Some(mape);
    Ok(model)
}

/// Indices of the columns of `x` that are not (nearly) linear combinations of earlier ones,
/// by Gram–Schmidt.
fn independent_columns(x: &Array2<f64>) -> Vec<usize> {
    let mut basis: Vec<Array1<f64>> = Vec::new();
    let mut kept = Vec::new();
    for j in 0..x.ncols() {
        let column = x.column(j).to_owned();
        let norm = column.dot(&column).sqrt();
        let mut residual = column;
        for b in &basis {
            let along = residual.dot(b);
            residual.scaled_add(-along, b);
        }
        let left = residual.dot(&residual).sqrt();
        if norm > 0.0 && left > 1e-6 * norm {
            basis.push(residual / left);
            kept.push(j);
        }
    }
    kept
}

/// R² and mean absolute percentage error (percent) of `model` on `samples`.
pub fn evaluate(model: &LinearModel, samples: &[&Sample]) -> (f64, f64) {
    let n = samples.len().max(1) as f64;
    let mean = samples.iter().map(|s| s.ms).sum::<f64>() / n;
    let (mut ss_res, mut ss_tot, mut ape) = (0.0, 0.0, 0.0);
    for s in samples {
        let p = model.predict(&s.features());
        ss_res += (s.ms - p).powi(2);
        ss_tot += (s.ms - mean).powi(2);
        ape += (s.ms - p).abs() / s.ms.max(1e-6);
    }
    let r2 = if ss_tot > 0.0 {
        1.0 - ss_res / ss_tot
    } else {
        1.0
    };
    (r2, 100.0 * ape / n)
}

/// A hash (64-bit FNV-1a) of a sample's configuration: its kind, its configuration in words
/// and its features (so that profiles without configuration names still spread), nothing
/// else: the same on every run and machine.
pub fn configuration_hash(sample: &Sample) -> u64 {
    let f = sample.features();
    let features = [
        f.input_bytes,
        f.output_bytes,
        f.kernel_filters,
        f.macs,
        f.model_bytes,
        f.im2col_bytes,
        f.positions,
        f.unfold_runs,
    ];
    let bytes = sample
        .kind
        .bytes()
        .chain([0])
        .chain(sample.config.bytes())
        .chain([0])
        .chain(features.iter().flat_map(|v| v.to_bits().to_le_bytes()));
    bytes.fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Splits one kind's samples into (training, held-out): the quarter of them (rounded up)
/// with the lowest [`configuration_hash`] are held out, at least `min_test` of them and
/// leaving at least `min_train` (`rows.len() ≥ min_test + min_train`). The hash spreads the
/// held-out configurations over the whole sweep; it depends on the configuration alone, so
/// the split depends on which configurations were profiled, never on their order, and a
/// configuration profiled twice stays on one side.
fn split_held_out<'a>(
    rows: &[&'a Sample],
    min_train: usize,
    min_test: usize,
) -> (Vec<&'a Sample>, Vec<&'a Sample>) {
    let mut ranked: Vec<(u64, &'a Sample)> =
        rows.iter().map(|s| (configuration_hash(s), *s)).collect();
    // The same configuration twice is ordered by its times, not by row order.
    ranked.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.ms.total_cmp(&b.1.ms)));
    let most = rows.len().saturating_sub(min_train);
    let mut held = rows.len().div_ceil(4).max(min_test).min(most);
    while held > 0 && held < most && ranked[held].0 == ranked[held - 1].0 {
        held += 1;
    }
    let (test, train) = ranked.split_at(held);
    let samples = |part: &[(u64, &'a Sample)]| part.iter().map(|(_, s)| *s).collect();
    (samples(train), samples(test))
}

/// Fits every (role, kind) present in `samples`. A quarter of each kind's samples, picked
/// by a hash of their configuration ([`configuration_hash`]), are held out: the R² and error
/// on them are the models' figures and choose between the Table I and the rich model. A
/// kind needs four times as many samples as its larger model has coefficients.
pub fn fit(samples: &[Sample]) -> Result<LatencyModels, FitError> {
    if samples.is_empty() {
        return Err(FitError::Empty);
    }
    let mut roles = BTreeMap::new();
    for role in Role::ALL {
        let of_role: Vec<&Sample> = samples.iter().filter(|s| s.role == role).collect();
        if of_role.is_empty() {
            continue;
        }
        let mut kinds = BTreeMap::new();
        let engine = of_role[0].engine.as_str();
        let mut names: Vec<&str> = of_role.iter().map(|s| s.kind.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        for kind in names {
            let table1 = feature_names(kind).ok_or_else(|| FitError::UnknownKind(kind.into()))?;
            let rows: Vec<&Sample> = of_role.iter().copied().filter(|s| s.kind == kind).collect();
            let coefficients =
                (table1.len() + 1).max(rich_feature_names(kind, engine).map_or(0, |r| r.len() + 1));
            let needed = 4 * coefficients;
            if rows.len() < needed {
                return Err(FitError::TooFew {
                    role: role.name(),
                    kind: kind.into(),
                    found: rows.len(),
                    needed,
                });
            }
            let (train, test) = split_held_out(&rows, 3 * coefficients, coefficients);
            let table1 = fit_one(kind, table1, &train, &test)?;
            let rich = rich_feature_names(kind, engine)
                .map(|names| fit_one(kind, names, &train, &test))
                .transpose()?;
            let selected = match &rich {
                Some(r) if r.mape < table1.mape => "rich",
                _ => "table1",
            };
            kinds.insert(
                kind.to_string(),
                KindModels {
                    table1,
                    rich,
                    selected: selected.into(),
                },
            );
        }
        let first = of_role[0];
        if let Some(odd) = of_role.iter().find(|s| {
            (&s.engine, &s.backend, s.slowdown, s.threads)
                != (&first.engine, &first.backend, first.slowdown, first.threads)
        }) {
            return Err(FitError::Mixed(format!(
                "{} samples were taken on {} ({}) with slowdown {} on {} and on {} ({}) with slowdown {} on {}: profile each setting into its own file",
                role.name(),
                first.engine,
                first.backend,
                first.slowdown,
                threads_in_words(first.threads),
                odd.engine,
                odd.backend,
                odd.slowdown,
                threads_in_words(odd.threads)
            )));
        }
        roles.insert(
            role,
            RoleModels {
                source: first.backend.clone(),
                slowdown: first.slowdown,
                threads: first.threads,
                engine: first.engine.clone(),
                kinds,
                calibration: None,
            },
        );
    }
    Ok(LatencyModels {
        version: SCHEMA_VERSION,
        unit: "bytes".into(),
        roles,
    })
}

impl LatencyModels {
    /// Predicted milliseconds of `layer` on `role`, calibrated where the role has a
    /// [`Calibration`]. Dropout is the identity at inference and costs only the layer call;
    /// a kind without a model is an error.
    pub fn layer_ms(&self, role: Role, layer: &LayerSpec) -> Result<f64, String> {
        let ms = self.uncalibrated_layer_ms(role, layer)?;
        Ok(match &self.roles[&role].calibration {
            Some(c) => c.apply(layer.kind.name(), ms),
            None => ms,
        })
    }

    /// Predicted milliseconds of `layer` on `role` by its kind's model alone.
    pub fn uncalibrated_layer_ms(&self, role: Role, layer: &LayerSpec) -> Result<f64, String> {
        let models = self
            .roles
            .get(&role)
            .ok_or_else(|| format!("no latency models for the {} role", role.name()))?;
        if layer.kind == LayerKind::Dropout {
            return Ok(0.0);
        }
        let kind = models
            .kinds
            .get(layer.kind.name())
            .ok_or_else(|| format!("no {} latency model for {}", role.name(), layer.kind.name()))?;
        Ok(kind.selected().predict(&Features::of(layer)))
    }

    /// Whether layer `i` of a slice `layers` run on `role` costs nothing of its own: on the
    /// generated engine, a ReLU right after a convolution or fully connected layer of the
    /// same slice is fused into it (a ReLU that starts a slice runs alone).
    fn fused(&self, role: Role, layers: &[LayerSpec], i: usize) -> bool {
        self.roles
            .get(&role)
            .is_some_and(|m| m.engine == EngineKind::Generated.name())
            && runtime::engine::fused_relu(layers, i)
    }

    /// The uncalibrated predictions of a slice of layers run on `role`, summed by kind.
    pub fn chain_by_kind(
        &self,
        role: Role,
        layers: &[LayerSpec],
    ) -> Result<BTreeMap<String, f64>, String> {
        let mut by_kind = BTreeMap::new();
        for (i, layer) in layers.iter().enumerate() {
            let ms = if self.fused(role, layers, i) {
                0.0
            } else {
                self.uncalibrated_layer_ms(role, layer)?
            };
            *by_kind.entry(layer.kind.name().to_string()).or_insert(0.0) += ms;
        }
        Ok(by_kind)
    }

    /// Predicted milliseconds of a slice of layers run on `role` (a fused ReLU is free).
    pub fn chain_ms(&self, role: Role, layers: &[LayerSpec]) -> Result<f64, String> {
        (0..layers.len())
            .filter(|&i| !self.fused(role, layers, i))
            .map(|i| self.layer_ms(role, &layers[i]))
            .sum()
    }

    /// Checks that the file is a latency-model file this build understands.
    pub fn from_json(text: &str) -> Result<Self, FitError> {
        let models: Self =
            serde_json::from_str(text).map_err(|e| FitError::Format(e.to_string()))?;
        if models.version != SCHEMA_VERSION {
            return Err(FitError::Format(format!(
                "schema version {} is not {SCHEMA_VERSION}: refit with this build's `cargo xtask fit`",
                models.version
            )));
        }
        Ok(models)
    }

    /// The paper's fitted models (Raspberry Pi 3 device, desktop edge), DESIGN.md §4.
    pub fn paper() -> Self {
        let model = |features: &[&str], coefficients: &[f64], intercept: f64| KindModels {
            table1: LinearModel {
                features: features.iter().map(ToString::to_string).collect(),
                coefficients: coefficients.to_vec(),
                intercept,
                r2: None,
                mape: None,
                train_samples: 0,
                test_samples: 0,
            },
            rich: None,
            selected: "table1".into(),
        };
        let role = |rows: [(&str, &[f64], f64); 7]| RoleModels {
            source: "paper".into(),
            slowdown: 1.0,
            threads: 0,
            engine: "paper".into(),
            kinds: rows
                .into_iter()
                .map(|(kind, c, b)| (kind.to_string(), model(feature_names(kind).unwrap(), c, b)))
                .collect(),
            calibration: None,
        };
        let device = role([
            ("conv", &[6.13e-3, 2.67e-2], -9.909),
            ("relu", &[1.5e-5], 0.488),
            ("pool", &[1.33e-4, 3.31e-5], 1.657),
            ("lrn", &[5.19e-4], 0.589),
            ("dropout", &[2.34e-6], 0.0525),
            ("fc", &[9.18e-4, 3.99e-3], 1.169),
            (MODEL_LOAD, &[4.49e-6], 842.136),
        ]);
        let edge = role([
            ("conv", &[6.03e-5, 1.24e-4], 0.189),
            ("relu", &[5.6e-6], 5.69e-2),
            ("pool", &[1.63e-5, 4.07e-6], 0.211),
            ("lrn", &[6.59e-5], 7.80e-2),
            ("dropout", &[5.23e-6], 4.64e-3),
            ("fc", &[1.07e-4, -1.83e-4], 0.164),
            (MODEL_LOAD, &[1.33e-6], 2.182),
        ]);
        Self {
            version: SCHEMA_VERSION,
            unit: "bytes".into(),
            roles: BTreeMap::from([(Role::Device, device), (Role::Edge, edge)]),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn chain_point(layers: usize, by_kind: &[(&str, f64)], measured_ms: f64) -> ChainPoint {
        ChainPoint {
            layers,
            predicted_by_kind: by_kind.iter().map(|(k, ms)| (k.to_string(), *ms)).collect(),
            measured_ms,
        }
    }

    #[test]
    fn calibration_recovers_kind_scales_and_per_layer_cost() {
        // Chains of n layers: conv time grows with n², fc time about with n.
        let points: Vec<ChainPoint> = (1..20)
            .map(|n| {
                let (conv, fc) = (0.01 * (n * n) as f64, 0.3 * n as f64 + 0.1 * (n % 3) as f64);
                let measured = 1.8 * conv + 0.7 * fc + 0.02 * n as f64;
                chain_point(n, &[("conv", conv), ("fc", fc)], measured)
            })
            .collect();
        let c = Calibration::fit(&points).unwrap();
        assert!((c.scale_of("conv") - 1.8).abs() < 1e-6, "{c:?}");
        assert!((c.scale_of("fc") - 0.7).abs() < 1e-6, "{c:?}");
        assert!((c.per_layer_ms - 0.02).abs() < 1e-6, "{c:?}");
        assert_eq!(c.slices, 19);
        assert!((c.apply("fc", 1.0) - 0.72).abs() < 1e-6);
        assert!((c.apply_chain(&points[0]) - points[0].measured_ms).abs() < 1e-9);
        assert!(Calibration::fit(&[]).is_none());
    }

    #[test]
    fn calibration_shares_a_scale_the_chains_cannot_tell_apart() {
        // relu is always 1 % of conv: its own scale is undetermined, so it shares conv's.
        let points: Vec<ChainPoint> = (1..10)
            .map(|n| {
                let conv = n as f64;
                chain_point(
                    2 * n,
                    &[("conv", conv), ("relu", 0.01 * conv)],
                    1.5 * 1.01 * conv,
                )
            })
            .collect();
        let c = Calibration::fit(&points).unwrap();
        assert!(c.kind_scales.is_empty(), "{c:?}");
        assert!((c.scale_of("relu") - 1.5).abs() < 1e-6, "{c:?}");
        assert!((c.scale_of("conv") - 1.5).abs() < 1e-6, "{c:?}");
        // A negative per-layer cost would predict negative times: clamped to 0.
        let points = [
            chain_point(1, &[("fc", 1.0)], 0.5),
            chain_point(10, &[("fc", 10.0)], 4.0),
        ];
        assert_eq!(Calibration::fit(&points).unwrap().per_layer_ms, 0.0);
    }

    fn sample(role: Role, kind: &str, f: Features, ms: f64) -> Sample {
        Sample {
            role,
            kind: kind.into(),
            config: String::new(),
            input_bytes: f.input_bytes,
            output_bytes: f.output_bytes,
            kernel_filters: f.kernel_filters,
            macs: f.macs,
            model_bytes: f.model_bytes,
            im2col_bytes: f.im2col_bytes,
            positions: f.positions,
            unfold_runs: f.unfold_runs,
            engine: "generated".into(),
            backend: "flex".into(),
            slowdown: 1.0,
            threads: 1,
            ms,
        }
    }

    #[test]
    fn fit_recovers_known_coefficients_from_exact_data() {
        let mut samples = Vec::new();
        for i in 0..40 {
            let f = Features {
                input_bytes: 1000.0 * (i % 7 + 1) as f64,
                kernel_filters: 16.0 * (i % 5 + 1) as f64,
                output_bytes: 500.0 * (i % 3 + 1) as f64,
                macs: 1e5 * ((i * 13) % 11 + 1) as f64,
                ..Features::default()
            };
            let ms = 0.002 * f.input_bytes + 0.05 * f.kernel_filters + 1.5;
            samples.push(sample(Role::Edge, "conv", f, ms));
            let relu_ms = 3e-5 * f.input_bytes + 0.01;
            samples.push(sample(Role::Device, "relu", f, relu_ms));
        }
        let models = fit(&samples).unwrap();
        let conv = &models.roles[&Role::Edge].kinds["conv"].table1;
        approx::assert_abs_diff_eq!(conv.coefficients[0], 0.002, epsilon = 1e-9);
        approx::assert_abs_diff_eq!(conv.coefficients[1], 0.05, epsilon = 1e-9);
        approx::assert_abs_diff_eq!(conv.intercept, 1.5, epsilon = 1e-6);
        assert!(conv.r2.unwrap() > 0.999_999);
        assert!(conv.mape.unwrap() < 1e-6);
        let relu = &models.roles[&Role::Device].kinds["relu"].table1;
        approx::assert_abs_diff_eq!(relu.coefficients[0], 3e-5, epsilon = 1e-12);
        approx::assert_abs_diff_eq!(relu.intercept, 0.01, epsilon = 1e-9);
    }

    #[test]
    fn a_feature_the_others_determine_gets_no_coefficient() {
        // Pooling halves each side: the output is always a quarter of the input.
        let samples: Vec<Sample> = (1..=40)
            .map(|i| {
                let input = 4096.0 * f64::from(i);
                let f = Features {
                    input_bytes: input,
                    output_bytes: input / 4.0,
                    ..Features::default()
                };
                sample(Role::Edge, "pool", f, 1e-5 * input + 0.02)
            })
            .collect();
        let pool = &fit(&samples).unwrap().roles[&Role::Edge].kinds["pool"].table1;
        approx::assert_abs_diff_eq!(pool.coefficients[0], 1e-5, epsilon = 1e-12);
        assert_eq!(pool.coefficients[1], 0.0, "{pool:?}");
        approx::assert_abs_diff_eq!(pool.intercept, 0.02, epsilon = 1e-9);
    }

    #[test]
    fn the_fit_minimises_the_relative_error_over_magnitudes() {
        // ReLUs from 64 B to 4 MB with ±10 % noise: an ordinary least-squares fit lets the
        // largest samples set the intercept and misses the small ones by ~50 % on average.
        let samples: Vec<Sample> = (0..80)
            .map(|i| {
                let input = 64.0 * 1.15f64.powi(i);
                let noise = 1.0 + 0.1 * (f64::from((i * 7919) % 13) / 6.0 - 1.0);
                let f = Features {
                    input_bytes: input,
                    ..Features::default()
                };
                sample(Role::Device, "relu", f, (2e-6 * input + 0.001) * noise)
            })
            .collect();
        let relu = &fit(&samples).unwrap().roles[&Role::Device].kinds["relu"].table1;
        assert!(relu.mape.unwrap() < 10.0, "{relu:?}");
        approx::assert_relative_eq!(relu.coefficients[0], 2e-6, max_relative = 0.05);
    }

    /// The sweep of `kind` as samples named like the profiler names them.
    fn sweep_samples(kind: LayerKind) -> Vec<Sample> {
        crate::profile::sweep(kind)
            .iter()
            .enumerate()
            .map(|(i, layer)| {
                let mut s = sample(
                    Role::Device,
                    kind.name(),
                    Features::of(layer),
                    1.0 + i as f64,
                );
                s.config = crate::profile::describe(layer);
                s
            })
            .collect()
    }

    /// The configurations [`split_held_out`] holds out of `samples`, checking that it keeps
    /// every sample on exactly one side.
    fn held_out(samples: &[Sample], coefficients: usize) -> BTreeSet<String> {
        let rows: Vec<&Sample> = samples.iter().collect();
        let (train, test) = split_held_out(&rows, 3 * coefficients, coefficients);
        assert_eq!(train.len() + test.len(), rows.len());
        let test: BTreeSet<String> = test.iter().map(|s| s.config.clone()).collect();
        assert!(train.iter().all(|s| !test.contains(&s.config)));
        test
    }

    #[test]
    fn the_held_out_samples_spread_over_the_sweep_whatever_the_order() {
        // conv: 192 configurations, the rich model has 8 coefficients.
        let conv = sweep_samples(LayerKind::Conv);
        let test = held_out(&conv, 8);
        println!("conv: {} of {} held out: {test:?}", test.len(), conv.len());
        assert_eq!(test.len(), 48);
        let part = |config: &str, i: usize| config.split('-').nth(i).unwrap().to_string();
        let kernels: BTreeSet<String> = test.iter().map(|c| part(c, 1)).collect();
        assert_eq!(kernels, BTreeSet::from(["k3".into(), "k5".into()]));
        let sides: BTreeSet<String> = test
            .iter()
            .map(|c| part(c, 0).split('x').nth(1).unwrap().to_string())
            .collect();
        assert!(sides.len() >= 3, "{sides:?}");
        let filters: BTreeSet<String> = test.iter().map(|c| part(c, 2)).collect();
        assert!(filters.len() >= 3, "{filters:?}");

        // relu: the held-out part is not (only) the 32×32 maps.
        let relu = sweep_samples(LayerKind::Relu);
        let test = held_out(&relu, 2);
        println!("relu: {} of {} held out: {test:?}", test.len(), relu.len());
        let maps32: BTreeSet<String> = relu
            .iter()
            .map(|s| s.config.clone())
            .filter(|c| c.ends_with("x32x32"))
            .collect();
        assert_ne!(test, maps32);
        assert!(test.iter().any(|c| !c.ends_with("x32x32")), "{test:?}");
        assert!(maps32.iter().any(|c| !test.contains(c)), "{test:?}");
        // A configuration profiled twice stays on one side (`held_out` checks it).
        assert_eq!(held_out(&[relu.clone(), relu.clone()].concat(), 2), test);

        // The same split for any row order.
        for samples in [conv, relu] {
            let coefficients = if samples[0].kind == "conv" { 8 } else { 2 };
            let mut shuffled = samples.clone();
            shuffled.reverse();
            shuffled.rotate_left(7);
            assert_eq!(
                held_out(&shuffled, coefficients),
                held_out(&samples, coefficients)
            );
        }

        // A kind with just enough samples still holds out a quarter of them.
        let few: Vec<Sample> = (1..=8)
            .map(|i| {
                let f = Features {
                    input_bytes: 1000.0 * f64::from(i),
                    ..Features::default()
                };
                sample(Role::Edge, "relu", f, 1e-4 * f.input_bytes + 0.01)
            })
            .collect();
        let relu = &fit(&few).unwrap().roles[&Role::Edge].kinds["relu"].table1;
        assert_eq!((relu.train_samples, relu.test_samples), (6, 2));
    }

    #[test]
    fn too_few_samples_and_unknown_kinds_are_errors() {
        let few: Vec<Sample> = (0..3)
            .map(|i| {
                sample(
                    Role::Edge,
                    "relu",
                    Features {
                        input_bytes: i as f64,
                        ..Features::default()
                    },
                    1.0,
                )
            })
            .collect();
        let err = fit(&few).unwrap_err().to_string();
        assert!(err.contains("too few samples for edge relu: 3"), "{err}");
        let odd = vec![sample(Role::Edge, "softmax", Features::default(), 1.0)];
        assert!(
            fit(&odd)
                .unwrap_err()
                .to_string()
                .contains("unknown layer kind `softmax`")
        );
        assert!(matches!(fit(&[]), Err(FitError::Empty)));
        // One profile per setting: the thread count is part of it.
        let mut mixed: Vec<Sample> = (0..8)
            .map(|i| {
                let f = Features {
                    input_bytes: f64::from(i),
                    ..Features::default()
                };
                sample(Role::Edge, "relu", f, 1.0 + f64::from(i))
            })
            .collect();
        mixed[5].threads = 0;
        let err = fit(&mixed).unwrap_err().to_string();
        assert!(
            err.contains("on generated (flex) with slowdown 1 on 1 thread and on generated (flex) with slowdown 1 on every core"),
            "{err}"
        );
    }

    #[test]
    fn paper_models_round_trip_and_charge_no_dropout() {
        let paper = LatencyModels::paper();
        let text = serde_json::to_string(&paper).unwrap();
        assert_eq!(LatencyModels::from_json(&text).unwrap(), paper);
        let table = runtime::model::layers::b_alexnet(3, 10);
        let trunk = &table.exits[4].layers;
        let drop = trunk.iter().find(|l| l.kind == LayerKind::Dropout).unwrap();
        assert_eq!(paper.layer_ms(Role::Device, drop).unwrap(), 0.0);
        // The Raspberry Pi is slower than the desktop on the whole network.
        let device = paper.chain_ms(Role::Device, trunk).unwrap();
        let edge = paper.chain_ms(Role::Edge, trunk).unwrap();
        assert!(device > 10.0 * edge, "device {device} ms, edge {edge} ms");
        let bad = text.replace("\"version\":1", "\"version\":9");
        assert!(
            LatencyModels::from_json(&bad)
                .unwrap_err()
                .to_string()
                .contains("schema version 9")
        );
        assert!(LatencyModels::from_json("{").is_err());
    }
}
