//! The command line rejects bad flags and bad data with messages that say what is wrong.

use std::process::Command;

fn xtask(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn bad_flags_are_rejected_clearly() {
    for (args, expected) in [
        (
            &["train", "--dataset", "imagenet"][..],
            "unknown data set `imagenet`",
        ),
        (&["train", "--epochs", "0"][..], "--epochs"),
        (&["train", "--batch-size=-3"][..], "--batch-size"),
        (&["train", "--lr", "fast"][..], "--lr"),
        (&["train", "--backend", "tpu"][..], "unknown backend `tpu`"),
        (
            &["train", "--lr=-1", "--dataset", "synthetic"][..],
            "--lr must be a positive number",
        ),
    ] {
        let (ok, text) = xtask(args);
        assert!(!ok, "{args:?} succeeded");
        assert!(text.contains(expected), "{args:?}: {text}");
    }
}

#[test]
fn bad_data_files_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("train-images-idx3-ubyte"),
        [0u8, 0, 8, 1, 0, 0, 0, 1, 0, 0, 0, 28, 0, 0, 0, 28],
    )
    .unwrap();
    std::fs::write(
        dir.path().join("train-labels-idx1-ubyte"),
        [0u8, 0, 8, 1, 0, 0, 0, 0],
    )
    .unwrap();
    let (ok, text) = xtask(&[
        "train",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--out",
        dir.path().join("out").to_str().unwrap(),
        "--quiet",
    ]);
    assert!(!ok);
    assert!(
        text.contains("train-images-idx3-ubyte") && text.contains("wrong IDX magic"),
        "{text}"
    );

    let (ok, text) = xtask(&["train", "--dataset", "cifar10", "--quiet"]);
    assert!(!ok);
    assert!(text.contains("--data-dir"), "{text}");
}
