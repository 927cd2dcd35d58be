//! The deployable side of Edgent: the plan compiled in from `plan.json` (see
//! [`plan`]), the embedded weights, and what the `edgent-device` and `edgent-edge`
//! binaries share.

pub mod net;
pub mod units;

use anyhow::{Context, ensure};
use burn::prelude::Device;
use runtime::{BranchyAlexNet, BranchyAlexNetConfig, WeightMap};

codegen_macros::edgent_plan!("plan.json");

/// The weights the plan was made for, embedded in the binary (the file beside the plan).
pub const WEIGHTS: &[u8] = plan::WEIGHTS;

/// Loads the embedded weights onto `device`, checking them against the plan's digest.
pub fn load_model(device: &Device) -> anyhow::Result<BranchyAlexNet> {
    let weights = WeightMap::from_bytes(WEIGHTS, plan::WEIGHTS_FILE)?;
    let digest = weights.digest();
    ensure!(
        digest == plan::WEIGHTS_DIGEST,
        "the embedded weights (digest {digest}) are not the ones the plan was made for ({}): run `cargo xtask generate`",
        plan::WEIGHTS_DIGEST
    );
    let model = BranchyAlexNetConfig::new()
        .with_channels(plan::INPUT[0])
        .with_classes(plan::CLASSES)
        .init(device)
        .load_weights(&weights, device)
        .context("the embedded weights do not fit the model")?;
    Ok(model)
}

/// Normalises `u8` pixels (`[C, H, W]`) as the model was trained.
pub fn normalize(pixels: &[u8]) -> Vec<f32> {
    runtime::model::normalize(pixels, plan::NORMALIZATION_MEAN, plan::NORMALIZATION_STD)
}

/// Bytes of one input image.
pub fn image_len() -> usize {
    plan::INPUT.iter().product()
}

/// Reads an input image: a binary PGM (`P5`, 28×28 is padded to 32×32) for one-channel
/// models, or raw `u8` pixels in `[C, 32, 32]` order of exactly [`image_len`] bytes.
pub fn read_image(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    if bytes.starts_with(b"P5") {
        return parse_pgm(&bytes)
            .with_context(|| format!("{}: not a usable PGM image", path.display()));
    }
    ensure!(
        bytes.len() == image_len(),
        "{}: {} bytes is neither a PGM image nor raw pixels ({} bytes: {:?} u8)",
        path.display(),
        bytes.len(),
        image_len(),
        plan::INPUT
    );
    Ok(bytes)
}

fn parse_pgm(bytes: &[u8]) -> anyhow::Result<Vec<u8>> {
    ensure!(
        plan::INPUT[0] == 1,
        "the model takes {} channels; a PGM has one",
        plan::INPUT[0]
    );
    // Header: P5 <width> <height> <maxval> and one whitespace byte; `#` comments allowed.
    let mut fields = Vec::new();
    let mut i = 2;
    while fields.len() < 3 {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if i < bytes.len() && bytes[i] == b'#' {
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        ensure!(i > start, "malformed header");
        fields.push(std::str::from_utf8(&bytes[start..i])?.parse::<usize>()?);
    }
    let (w, h, max) = (fields[0], fields[1], fields[2]);
    ensure!(
        max == 255,
        "only 8-bit PGM (maxval 255) is supported, got maxval {max}"
    );
    let data = &bytes[(i + 1).min(bytes.len())..];
    ensure!(
        data.len() == w * h,
        "{}×{} image needs {} bytes, found {}",
        w,
        h,
        w * h,
        data.len()
    );
    let side = plan::INPUT[1];
    ensure!(
        w == h && w <= side && (side - w).is_multiple_of(2),
        "{w}×{h} image: expected {side}×{side} or a smaller square that pads evenly (28×28)"
    );
    let pad = (side - w) / 2;
    let mut out = vec![0u8; side * side];
    for (row, src) in data.chunks_exact(w).enumerate() {
        let start = (row + pad) * side + pad;
        out[start..start + w].copy_from_slice(src);
    }
    Ok(out)
}

/// The compiled-in plan as the device client uses it.
pub fn device_plan() -> runtime::device::DevicePlan {
    runtime::device::DevicePlan {
        digest: plan_digest(),
        tables: &plan::TABLES,
        by_accuracy: &plan::BY_ACCURACY,
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
    }
}

/// The plan digest as the 32 bytes the protocol carries.
pub fn plan_digest() -> [u8; 32] {
    runtime::wire::protocol::digest_bytes(plan::DIGEST).expect("the plan macro checked the digest")
}
