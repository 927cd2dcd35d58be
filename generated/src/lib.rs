//! The deployable side of Edgent: the plan compiled in from `plan.json` (see
//! [`plan`]), the embedded weights, and what the `edgent-device` and `edgent-edge`
//! binaries share.

pub mod fuzz;
pub mod net;
pub mod output;
pub mod units;

use std::sync::Arc;

use anyhow::{Context, ensure};
use burn::prelude::Device;
use runtime::{
    Backend, BranchyAlexNet, BranchyAlexNetConfig, BurnEngine, Engine, EngineKind, Isa, LayerTable,
    PackedNetwork, WeightMap,
};

codegen_macros::edgent_plan!("plan.json");

/// The embedded weights, checked against the plan's digest.
pub fn weights() -> anyhow::Result<WeightMap> {
    let weights = WeightMap::from_bytes(plan::WEIGHTS, plan::WEIGHTS_FILE)?;
    let digest = weights.digest();
    ensure!(
        digest == plan::WEIGHTS_DIGEST,
        "the embedded weights (digest {digest}) are not the ones the plan was made for ({}): run `cargo xtask generate`",
        plan::WEIGHTS_DIGEST
    );
    Ok(weights)
}

/// The layer table of the plan's network.
pub fn layer_table() -> LayerTable {
    BranchyAlexNetConfig::new()
        .with_channels(plan::INPUT[0])
        .with_classes(plan::CLASSES)
        .layer_table()
}

/// Loads the embedded weights onto `device` as a burn model.
pub fn load_model(device: &Device) -> anyhow::Result<BranchyAlexNet> {
    let weights = weights()?;
    let model = BranchyAlexNetConfig::new()
        .with_channels(plan::INPUT[0])
        .with_classes(plan::CLASSES)
        .init(device)
        .load_weights(&weights, device)
        .context("the embedded weights do not fit the model")?;
    Ok(model)
}

/// The generated engine: the embedded weights packed for the kernels, run through
/// `plan::engine::layer` (every layer's kernel with its shapes as constants) with `isa`.
/// Checks first that the network is the one the plan was generated for.
pub fn generated_engine(isa: Isa) -> anyhow::Result<PackedNetwork> {
    let table = layer_table();
    ensure!(
        table.exits.len() == plan::EXITS,
        "the network has {} exits, the plan {}: run `cargo xtask generate`",
        table.exits.len(),
        plan::EXITS
    );
    for (spec, (names, shapes)) in table
        .exits
        .iter()
        .zip(plan::LAYER_NAMES.iter().zip(&plan::engine::SHAPES))
    {
        let same = spec.layers.len() == names.len()
            && spec.layers.iter().zip(names.iter().zip(shapes.iter())).all(
                |(layer, (name, (input, output)))| {
                    layer.name == *name && layer.input == *input && layer.output == *output
                },
            );
        ensure!(
            same,
            "exit {}'s layers are not the ones the plan was generated for: run `cargo xtask generate`",
            spec.exit
        );
    }
    let net = PackedNetwork::new(&table, &weights()?, isa)
        .context("the embedded weights do not fit the generated engine")?;
    Ok(net.with_layer_fn(plan::engine::layer, "generated"))
}

/// The engine a binary runs: the generated one with the CPU's best instruction set (capped
/// by `EDGENT_ISA`), or burn on `backend`.
pub fn load_engine(kind: EngineKind, backend: Backend) -> anyhow::Result<Arc<dyn Engine>> {
    Ok(match kind {
        EngineKind::Generated => {
            let isa = Isa::detect().map_err(anyhow::Error::msg)?;
            Arc::new(generated_engine(isa)?)
        }
        EngineKind::Burn => {
            let device = backend
                .open()
                .map_err(|why| anyhow::anyhow!("backend {backend}: {why}"))?;
            Arc::new(BurnEngine::new(load_model(&device)?, device))
        }
    })
}

/// The engine a plan's role names (`plan::DEVICE_ENGINE`, `plan::EDGE_ENGINE`): the
/// generated one unless the plan says burn.
pub fn planned_engine(planned: &str) -> EngineKind {
    planned.parse().unwrap_or_default()
}

/// The binaries' engine flags.
#[derive(clap::Args, Debug, Clone)]
pub struct EngineArgs {
    /// What runs the layers: generated (the kernels compiled from the plan) or burn
    /// (burn-flex, for comparison). Default: the engine the plan's latency models were
    /// profiled on.
    #[arg(long)]
    pub engine: Option<EngineKind>,
    /// Burn backend with `--engine burn`: flex, ndarray or wgpu (a GPU, or Mesa's CPU
    /// Vulkan driver).
    #[arg(long, default_value = "flex")]
    pub backend: Backend,
}

impl EngineArgs {
    /// The engine chosen, or `planned` (`plan::DEVICE_ENGINE` or `plan::EDGE_ENGINE`).
    pub fn kind(&self, planned: &str) -> EngineKind {
        self.engine.unwrap_or_else(|| planned_engine(planned))
    }

    /// Loads the engine chosen (see [`EngineArgs::kind`]).
    pub fn load(&self, planned: &str) -> anyhow::Result<Arc<dyn Engine>> {
        load_engine(self.kind(planned), self.backend)
    }
}

/// Normalises `u8` pixels (`[C, H, W]`) as the model was trained.
pub fn normalize(pixels: &[u8]) -> Vec<f32> {
    runtime::model::normalize(pixels, plan::NORMALIZATION_MEAN, plan::NORMALIZATION_STD)
}

/// Bytes of one input image.
pub fn image_len() -> usize {
    plan::INPUT.iter().product()
}

/// Largest width or height of an input image file accepted; larger files are refused before
/// they are decoded.
const MAX_IMAGE_SIDE: u32 = 4096;

/// Reads an input image: a PNG or PNM file (PGM, PPM; the `image` crate decodes it)
/// converted to the model's channels (grey for one, RGB for three), a smaller square padded
/// evenly with zeros (Fashion-MNIST's 28×28 becomes 32×32); or raw `u8` pixels in
/// `[C, H, W]` order of exactly [`image_len`] bytes.
pub fn read_image(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let format = match image::guess_format(&bytes) {
        Ok(format) => format,
        Err(_) if bytes.len() == image_len() => return Ok(bytes),
        Err(_) => anyhow::bail!(
            "{}: {} bytes is neither a PNG or PNM image nor raw pixels ({} bytes: {:?} u8)",
            path.display(),
            bytes.len(),
            image_len(),
            plan::INPUT
        ),
    };
    let mut reader = image::ImageReader::with_format(std::io::Cursor::new(&bytes), format);
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    reader.limits(limits);
    let decoded = reader
        .decode()
        .with_context(|| format!("{}: not a readable {format:?} image", path.display()))?;
    model_input(&decoded).with_context(|| format!("{}: not a usable input", path.display()))
}

/// The model's input pixels `[C, side, side]` from a decoded image.
fn model_input(decoded: &image::DynamicImage) -> anyhow::Result<Vec<u8>> {
    let (channels, side) = (plan::INPUT[0], plan::INPUT[1]);
    let (w, h) = (decoded.width() as usize, decoded.height() as usize);
    ensure!(
        w == h && w <= side && (side - w).is_multiple_of(2),
        "{w}×{h} image: expected {side}×{side} or a smaller square that pads evenly (28×28)"
    );
    let planes: Vec<Vec<u8>> = match channels {
        1 => vec![decoded.to_luma8().into_raw()],
        3 => {
            let rgb = decoded.to_rgb8();
            (0..3)
                .map(|c| rgb.pixels().map(|p| p[c]).collect())
                .collect()
        }
        other => anyhow::bail!(
            "the model takes {other} channels: only grey (1) and RGB (3) images can be read"
        ),
    };
    let pad = (side - w) / 2;
    let mut out = vec![0u8; channels * side * side];
    for (c, plane) in planes.iter().enumerate() {
        for (row, src) in plane.chunks_exact(w).enumerate() {
            let start = c * side * side + (row + pad) * side + pad;
            out[start..start + w].copy_from_slice(src);
        }
    }
    Ok(out)
}

/// The compiled-in plan as the device client uses it.
pub fn device_plan() -> runtime::device::DevicePlan {
    runtime::device::DevicePlan {
        digest: plan_digest(),
        tables: &plan::TABLES,
        by_accuracy: &plan::BY_ACCURACY,
        families: &plan::FAMILIES,
        families_by_accuracy: &plan::FAMILIES_BY_ACCURACY,
        mean: plan::NORMALIZATION_MEAN,
        std: plan::NORMALIZATION_STD,
        input: &plan::INPUT,
    }
}

/// The compiled-in plan as the edge server checks requests against it.
pub fn served_plan() -> runtime::edge::ServedPlan {
    runtime::edge::ServedPlan {
        digest: plan_digest(),
        mean: plan::NORMALIZATION_MEAN.to_vec(),
        std: plan::NORMALIZATION_STD.to_vec(),
        max_payload: runtime::edge::largest_tensor_bytes(&layer_table()),
    }
}

/// The plan digest as the 32 bytes the protocol carries.
pub fn plan_digest() -> [u8; 32] {
    runtime::wire::protocol::digest_bytes(plan::DIGEST).expect("the plan macro checked the digest")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &std::path::Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn pgm_png_and_raw_read_alike() {
        let dir = tempfile::tempdir().unwrap();
        let side = plan::INPUT[1];
        let pixels: Vec<u8> = (0..28 * 28).map(|i| (i % 251) as u8).collect();
        let mut pgm = b"P5\n# a comment\n28 28\n255\n".to_vec();
        pgm.extend(&pixels);
        let from_pgm = read_image(&write(dir.path(), "a.pgm", &pgm)).unwrap();
        let png_path = dir.path().join("a.png");
        image::GrayImage::from_raw(28, 28, pixels.clone())
            .unwrap()
            .save(&png_path)
            .unwrap();
        let from_png = read_image(&png_path).unwrap();
        assert_eq!(from_pgm, from_png);
        assert_eq!(from_pgm.len(), image_len());
        // 28×28 sits in the middle of the 32×32 input, zeros around it.
        assert_eq!(from_pgm[0], 0);
        assert_eq!(from_pgm[2 * side + 2], pixels[0]);
        let raw = read_image(&write(dir.path(), "a.raw", &from_pgm)).unwrap();
        assert_eq!(raw, from_pgm);
    }

    #[test]
    fn bad_images_say_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let err = |name: &str, bytes: &[u8]| {
            format!(
                "{:#}",
                read_image(&write(dir.path(), name, bytes)).unwrap_err()
            )
        };
        assert!(err("short", b"abc").contains("neither a PNG or PNM image nor raw pixels"));
        assert!(err("truncated.pgm", b"P5\n28 28\n255\nxyz").contains("not a readable"));
        let mut wide = b"P5\n30 20\n255\n".to_vec();
        wide.extend(vec![0u8; 600]);
        assert!(err("wide.pgm", &wide).contains("expected 32×32"));
        // A header claiming a huge image is refused before anything that size is allocated.
        assert!(err("huge.pgm", b"P5\n100000 100000\n255\n").contains("not a readable"));
    }
}
