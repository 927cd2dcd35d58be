//! End-to-end training: reproducibility, learning on synthetic data, outputs, real data.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use datasets::{Augmentation, DatasetKind};
use runtime::{BranchyAlexNetConfig, WeightMap};
use trainer::{TrainConfig, train};

fn small(out: &Path, seed: u64) -> TrainConfig {
    TrainConfig {
        dataset: DatasetKind::Synthetic,
        epochs: 1,
        batch_size: 32,
        seed,
        limit: Some(192),
        test_limit: Some(64),
        out: out.to_path_buf(),
        progress: false,
        // The small runs learn fastest on the images as they are (the synthetic classes
        // are not mirror-symmetric); the reproducibility test turns augmentation on.
        augmentation: Augmentation::NONE,
        ..TrainConfig::default()
    }
}

#[test]
fn same_seed_and_config_give_the_same_digest() {
    let dir = tempfile::tempdir().unwrap();
    // With the default augmentation, whose draws must repeat with the seed as well.
    let augmented = |out: &str, seed| TrainConfig {
        augmentation: Augmentation::LIGHT,
        ..small(&dir.path().join(out), seed)
    };
    let a = train(&augmented("a", 7)).unwrap();
    let b = train(&augmented("b", 7)).unwrap();
    let c = train(&augmented("c", 8)).unwrap();
    assert_eq!(a.digest, b.digest);
    assert_eq!(a.exits, b.exits);
    assert_ne!(a.digest, c.digest);
    // The files hold the weights the digest names.
    let weights = WeightMap::load(&dir.path().join("a/model.safetensors")).unwrap();
    assert_eq!(weights.digest(), a.digest);
}

/// burn's generator is process-wide: models created on another thread while a run trains
/// (as the other tests here do) must not change what it trains.
#[test]
fn models_created_meanwhile_do_not_change_a_seeded_run() {
    let dir = tempfile::tempdir().unwrap();
    let alone = train(&small(&dir.path().join("alone"), 11)).unwrap();
    let stop = AtomicBool::new(false);
    let busy = std::thread::scope(|scope| {
        scope.spawn(|| {
            let device = burn::prelude::Device::flex();
            loop {
                let model = BranchyAlexNetConfig::new().init(&device);
                std::hint::black_box(model.weights());
                if stop.load(Ordering::Relaxed) {
                    break;
                }
            }
        });
        let busy = train(&small(&dir.path().join("busy"), 11));
        stop.store(true, Ordering::Relaxed);
        busy.unwrap()
    });
    assert_eq!(alone.digest, busy.digest);
    assert_eq!(alone.exits, busy.exits);
}

#[test]
fn outputs_are_complete_and_weights_reload() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let metrics = train(&small(&out, 1)).unwrap();
    for file in [
        "model.safetensors",
        "model.bpk",
        "config.json",
        "metrics.json",
    ] {
        assert!(out.join(file).is_file(), "{file} missing");
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(json["dataset"], "synthetic");
    assert_eq!(json["digest"], metrics.digest.as_str());
    let exits = json["exits"].as_array().unwrap();
    assert_eq!(exits.len(), 5);
    for (i, e) in exits.iter().enumerate() {
        assert_eq!(e["exit"], i + 1);
        let acc = e["accuracy"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&acc));
    }
    let device = burn::prelude::Device::flex();
    let weights = WeightMap::load(&out.join("model.safetensors")).unwrap();
    let model = BranchyAlexNetConfig::new()
        .init(&device)
        .load_weights(&weights, &device)
        .unwrap();
    assert_eq!(model.weights().digest(), metrics.digest);
}

#[test]
fn learns_the_synthetic_classes() {
    let dir = tempfile::tempdir().unwrap();
    let config = TrainConfig {
        epochs: 2,
        limit: Some(1500),
        test_limit: Some(500),
        ..small(dir.path(), 3)
    };
    let metrics = train(&config).unwrap();
    for exit in &metrics.exits {
        // Chance is 10 %.
        assert!(
            exit.accuracy > 0.6,
            "exit {} reached only {:.3}",
            exit.exit,
            exit.accuracy
        );
    }
}

#[test]
fn bad_settings_and_missing_data_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let config = TrainConfig {
        epochs: 0,
        ..small(dir.path(), 1)
    };
    assert!(train(&config).unwrap_err().to_string().contains("--epochs"));
    let config = TrainConfig {
        dataset: DatasetKind::Cifar10,
        data_dir: Some(dir.path().join("nowhere")),
        ..small(dir.path(), 1)
    };
    let err = train(&config).unwrap_err().to_string();
    assert!(
        err.contains("nowhere") && err.contains("does not exist"),
        "{err}"
    );
}

#[test]
fn trains_on_real_fashion_mnist() {
    let Some(dir) = DatasetKind::FashionMnist
        .default_dir()
        .filter(|d| Path::new(d).is_dir())
    else {
        eprintln!("skipped: Fashion-MNIST is not installed (run scripts/setup.sh)");
        return;
    };
    let out = tempfile::tempdir().unwrap();
    let config = TrainConfig {
        dataset: DatasetKind::FashionMnist,
        data_dir: Some(dir.into()),
        limit: Some(2000),
        test_limit: Some(1000),
        ..small(out.path(), 5)
    };
    let metrics = train(&config).unwrap();
    assert_eq!(metrics.train_images, 2000);
    // One epoch on 2,000 real images: every exit is well above chance (10 %); the shallow
    // exit, with the fewest layers to train, learns fastest.
    let accuracies: Vec<f64> = metrics.exits.iter().map(|e| e.accuracy).collect();
    assert!(accuracies.iter().all(|&a| a > 0.25), "{accuracies:?}");
    assert!(accuracies[0] > 0.6, "{accuracies:?}");
}
