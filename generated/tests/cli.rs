//! The binaries' command lines: each subcommand lists only the flags it uses, and output
//! into a closed pipe ends the program quietly.

use std::process::{Command, Stdio};

const DEVICE: &str = env!("CARGO_BIN_EXE_edgent-device");
const EDGE: &str = env!("CARGO_BIN_EXE_edgent-edge");

/// The `--help` text of `binary subcommand`.
fn help(binary: &str, subcommand: &str) -> String {
    let out = Command::new(binary)
        .args([subcommand, "--help"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{binary} {subcommand} --help");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn each_subcommand_lists_the_flags_it_uses() {
    for (binary, subcommand, present, absent) in [
        (
            DEVICE,
            "keygen",
            &["--name"][..],
            &["--threads", "--allow"][..],
        ),
        (DEVICE, "plan", &["--bandwidth"], &["--threads", "--allow"]),
        (DEVICE, "info", &[], &["--threads"]),
        (
            DEVICE,
            "run",
            &["--threads", "--key", "--server-key", "--insecure"],
            &["--allow"],
        ),
        (DEVICE, "eval", &["--threads", "--server-key"], &["--allow"]),
        (
            DEVICE,
            "local",
            &["--threads", "--slowdown"],
            &["--allow", "--key"],
        ),
        (EDGE, "keygen", &["--name"], &["--threads", "--allow"]),
        (EDGE, "info", &["--engine", "--backend"], &["--threads"]),
        (
            EDGE,
            "serve",
            &["--threads", "--key", "--allow", "--server-key", "--broker"],
            &[],
        ),
        (
            EDGE,
            "broker",
            &[
                "--key",
                "--allow",
                "--allow-edges",
                "--heartbeat-ms",
                "--insecure",
            ],
            &["--threads", "--server-key"],
        ),
        (
            EDGE,
            "fuzz",
            &["--iterations", "--seed", "--corpus", "--out", "--socket"],
            &["--key", "--allow", "--server-key", "--workers"],
        ),
    ] {
        let text = help(binary, subcommand);
        for flag in present {
            assert!(
                text.contains(flag),
                "{binary} {subcommand} lacks {flag}:\n{text}"
            );
        }
        for flag in absent {
            assert!(
                !text.contains(flag),
                "{binary} {subcommand} lists {flag}:\n{text}"
            );
        }
    }
}

#[test]
fn flags_of_one_mode_are_refused_in_the_other() {
    for (args, expected) in [
        (
            vec!["serve", "--broker", "tcp://127.0.0.1:1", "--allow", "x.pub"],
            "--allow",
        ),
        (vec!["serve", "--server-key", "x.pub"], "--broker"),
        (vec!["serve", "--insecure", "--key", "x.key"], "--key"),
        (vec!["fuzz", "--oversize-mib", "5"], "--socket"),
        (vec!["fuzz", "--socket", "--threads", "2"], "--threads"),
    ] {
        let out = Command::new(EDGE).args(&args).output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expected), "{args:?}: {err}");
    }
}

#[test]
fn a_closed_pipe_ends_the_output_quietly() {
    for binary in [DEVICE, EDGE] {
        let mut child = Command::new(binary)
            .arg("info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Close the reading end before the program writes, as `| head -0` would.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{binary}: {err}");
        assert!(out.status.success(), "{binary}: {:?} {err}", out.status);
    }
}
