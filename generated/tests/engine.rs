//! The generated engine against burn, the reference: every slice of every exit chain of the
//! committed model — the device's prefixes `[0, p)` and the edge's suffixes `[p, N)` — at
//! every instruction set this CPU has, with activations as they come and scaled ×50 (where
//! LRN's α·Σx² is no longer small next to k, so a wrong α or β shows). And burn on wgpu
//! against burn on the CPU, the same way, one image and a batch.

use generated::{generated_engine, layer_table, load_model, weights};
use runtime::{Activation, Backend, BurnEngine, Engine, Isa, PackedNetwork};

/// Relative difference: max |a − b| / max |b|.
fn rel_diff(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b
        .iter()
        .fold(0.0f64, |m, v| m.max(f64::from(v.abs())))
        .max(1e-12);
    let diff = a
        .iter()
        .zip(b)
        .fold(0.0f64, |m, (x, y)| m.max(f64::from((x - y).abs())));
    diff / scale
}

/// A Fashion-MNIST-like input: a bright blob on a dark background, normalised.
fn image() -> Activation {
    let table = layer_table();
    let [c, h, w] = [table.input[0], table.input[1], table.input[2]];
    let pixels: Vec<u8> = (0..c * h * w)
        .map(|i| {
            let (y, x) = ((i / w) % h, i % w);
            let d = (y as i32 - 14).pow(2) + (x as i32 - 17).pow(2);
            if d < 90 {
                (250 - 2 * d) as u8
            } else {
                (i * 37 % 23) as u8
            }
        })
        .collect();
    let values = generated::normalize(&pixels);
    Activation::from_values(values, &[1, c, h, w]).unwrap()
}

fn scaled(x: &Activation, by: f32) -> Activation {
    let values = x.values().iter().map(|v| v * by).collect();
    Activation::from_values(values, x.dims()).unwrap()
}

/// `batch` images: [`image`] scaled by 1, 1.25, 1.5, …
fn images(batch: usize) -> Activation {
    let one = image();
    let values: Vec<f32> = (0..batch)
        .flat_map(|k| scaled(&one, 1.0 + 0.25 * k as f32).into_values())
        .collect();
    let mut dims = one.dims().to_vec();
    dims[0] = batch;
    Activation::from_values(values, &dims).unwrap()
}

/// Every prefix and suffix of every exit on `engine` against `reference`, on a batch of
/// `batch` images.
fn compare(engine: &dyn Engine, reference: &dyn Engine, batch: usize) {
    let image = images(batch);
    let mut worst = (0.0, String::new());
    for spec in &reference.table().exits {
        let n = spec.len();
        for p in 0..=n {
            let boundary = reference.forward_slice(spec.exit, 0..p, &image).unwrap();
            for by in [1.0, 50.0] {
                let x = scaled(&boundary, by);
                for range in [p..n, 0..p] {
                    let input = if range.start == 0 {
                        scaled(&image, by)
                    } else {
                        x.clone()
                    };
                    let want = reference
                        .forward_slice(spec.exit, range.clone(), &input)
                        .unwrap();
                    let got = engine
                        .forward_slice(spec.exit, range.clone(), &input)
                        .unwrap();
                    assert_eq!(got.dims(), want.dims());
                    let d = rel_diff(got.values(), want.values());
                    let at = format!(
                        "{}: exit {} layers [{}, {}) ×{by}, batch {batch}",
                        engine.describe(),
                        spec.exit,
                        range.start,
                        range.end
                    );
                    assert!(d <= 1e-4, "{at}: relative difference {d:e}");
                    if d > worst.0 {
                        worst = (d, at);
                    }
                }
            }
        }
    }
    println!("worst relative difference {:e} ({})", worst.0, worst.1);
}

fn burn() -> BurnEngine {
    let device = Backend::Flex.device();
    BurnEngine::new(load_model(&device).unwrap(), device)
}

#[test]
fn the_generated_engine_gives_burns_results_at_every_instruction_set() {
    let reference = burn();
    let isas = Isa::available();
    println!("instruction sets here: {isas:?}");
    for isa in isas {
        compare(&generated_engine(isa).unwrap(), &reference, 1);
    }
}

#[test]
fn the_interpreted_kernels_give_burns_results() {
    // What the toolchain profiles and checks before a plan exists.
    let reference = burn();
    let net = PackedNetwork::new(&layer_table(), &weights().unwrap(), Isa::detect().unwrap());
    compare(&net.unwrap(), &reference, 1);
}

#[test]
fn burn_on_wgpu_gives_the_cpu_results_one_image_and_batched() {
    // scripts/setup.sh installs Mesa's CPU Vulkan driver (lavapipe): under CI (`CI=true`) a
    // missing adapter is a failure, elsewhere a skip.
    let device = match Backend::Wgpu.open() {
        Ok(device) => device,
        Err(why) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI=true and scripts/setup.sh installs lavapipe, yet {why}")
        }
        Err(why) => {
            println!("SKIPPED: {why} (install mesa-vulkan-drivers for a CPU one)");
            return;
        }
    };
    println!("wgpu adapter: {}", Backend::Wgpu.adapter());
    let gpu = BurnEngine::new(load_model(&device).unwrap(), device);
    let reference = burn();
    for batch in [1, 8] {
        compare(&gpu, &reference, batch);
    }
}

#[test]
fn a_batch_runs_sample_by_sample() {
    let engine = generated_engine(Isa::detect().unwrap()).unwrap();
    let one = image();
    let two = scaled(&one, 0.5);
    let mut values = one.to_values();
    values.extend(two.values());
    let mut dims = one.dims().to_vec();
    dims[0] = 2;
    let batch = Activation::from_values(values, &dims).unwrap();
    let n = engine.exit_len(5).unwrap();
    let logits = engine.forward_slice(5, 0..n, &batch).unwrap();
    assert_eq!(logits.dims(), [2, 10]);
    let first = engine.forward_slice(5, 0..n, &one).unwrap();
    let second = engine.forward_slice(5, 0..n, &two).unwrap();
    assert_eq!(&logits.values()[..10], first.values());
    assert_eq!(&logits.values()[10..], second.values());
}

#[test]
fn convolutions_split_over_threads_give_the_same_logits() {
    // Two threads split 96 channels 48 + 48 (a pair and a single block each), three split
    // 32 channels into 16 + 16; every output is still summed in the same order.
    let engine = generated_engine(Isa::detect().unwrap()).unwrap();
    let image = image();
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            (1..=5)
                .map(|exit| {
                    let n = engine.exit_len(exit).unwrap();
                    engine
                        .forward_slice(exit, 0..n, &image)
                        .unwrap()
                        .into_values()
                })
                .collect::<Vec<_>>()
        })
    };
    let one = run(1);
    for threads in [2, 3, 4] {
        assert_eq!(run(threads), one, "{threads} threads");
    }
}

#[test]
fn bad_slices_and_shapes_are_errors() {
    let engine = generated_engine(Isa::Portable).unwrap();
    let image = image();
    let err = |e: runtime::ModelError| e.to_string();
    assert!(err(engine.forward_slice(6, 0..1, &image).unwrap_err()).contains("exit 6"));
    assert!(err(engine.forward_slice(1, 3..40, &image).unwrap_err()).contains("[3, 40)"));
    assert!(
        err(engine.forward_slice(1, 1..3, &image).unwrap_err()).contains("takes [N, 32, 32, 32]")
    );
    let empty = Activation::from_values(vec![], &[0, 1, 32, 32]).unwrap();
    assert!(engine.forward_slice(1, 0..3, &empty).is_err());
}
