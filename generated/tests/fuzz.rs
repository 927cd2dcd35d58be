//! The fuzzer on the committed plan: every saved case replays cleanly through the decoder
//! and the edge's admission, a fixed-seed run of the structured mutator holds every
//! invariant and reaches every outcome, and a short socket-level run against a live edge
//! matches admission reply for reply.

use std::path::PathBuf;

use generated::fuzz::{FuzzArgs, in_process};
use runtime::fuzz::{Outcome, check, load_frames};
use runtime::wire::mutate::Mutation;
use runtime::wire::protocol::ErrorCode;

const EDGE: &str = env!("CARGO_BIN_EXE_edgent-edge");

fn regressions() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions")
}

/// `frames` with the header's plan digest set to `digest`, when the first frame is a
/// header (80 bytes starting with the magic).
fn addressed_to(frames: &[Vec<u8>], digest: &[u8; 32]) -> Vec<Vec<u8>> {
    let mut frames = frames.to_vec();
    if let Some(h) = frames
        .first_mut()
        .filter(|h| h.len() == 80 && h.starts_with(b"EDGT"))
    {
        h[8..40].copy_from_slice(digest);
    }
    frames
}

#[test]
fn every_saved_case_replays_cleanly() {
    let table = generated::layer_table();
    let plan = generated::served_plan();
    let cases = load_frames(&regressions()).unwrap();
    // The hand-written cases, with what the edge must make of them.
    let expected = [
        (
            "shape-overflow-65536x4",
            Outcome::Refused(ErrorCode::BadLength),
        ),
        (
            "shape-over-limit-1024x1024x1024",
            Outcome::Refused(ErrorCode::BadLength),
        ),
        (
            "result-sent-to-the-edge",
            Outcome::Refused(ErrorCode::BadType),
        ),
        ("ping-with-deadline", Outcome::Refused(ErrorCode::BadField)),
        ("ping-padding-2d", Outcome::Refused(ErrorCode::BadShape)),
        ("infer-with-queue-us", Outcome::Refused(ErrorCode::BadField)),
        ("three-frames", Outcome::Refused(ErrorCode::BadFrames)),
        ("no-frames", Outcome::Refused(ErrorCode::BadFrames)),
        ("exit5-image", Outcome::Run),
        ("nan-activation", Outcome::Refused(ErrorCode::NonFinite)),
        // Version 2. The first two broke the oracle, not the edge: a frame with a 2 GiB
        // window is valid zstd (the oracle's streaming decoder refused windows over
        // 2^27); a frame declaring 8 bytes that holds an empty last block is corrupt
        // (libzstd's streaming decoder let it through block by block).
        ("zstd-window-2gib", Outcome::Run),
        (
            "zstd-frame-short-of-its-declared-size",
            Outcome::Refused(ErrorCode::BadCompression),
        ),
        (
            "zstd-bomb-16mib",
            Outcome::Refused(ErrorCode::BadCompression),
        ),
        (
            "q8c-zero-scale",
            Outcome::Refused(ErrorCode::BadQuantization),
        ),
        // Found by the socket run: a q8c scale of f32::MAX is finite and above 0, yet its
        // codes stand for infinities; admitted, the edge sent back NaN logits.
        ("q8c-scale-f32-max", Outcome::Refused(ErrorCode::NonFinite)),
        ("f16-infinity", Outcome::Refused(ErrorCode::NonFinite)),
        ("version-1-q8", Outcome::Refused(ErrorCode::BadDtype)),
        ("version-1-image", Outcome::Run),
        ("image-u8-zstd", Outcome::Run),
    ];
    for (name, outcome) in expected {
        let (path, frames) = cases
            .iter()
            .find(|(p, _)| p.file_stem().is_some_and(|s| s == name))
            .unwrap_or_else(|| panic!("fuzz/regressions/{name}.frames is missing"));
        // Written for the plan of their day: addressed to today's, so that the rule each
        // one shows is reached, not `unknown_plan`.
        let frames = addressed_to(frames, &plan.digest);
        let checked =
            check(&frames, &table, &plan).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(checked.outcome, outcome, "{}", path.display());
    }
    for (path, frames) in &cases {
        if let Err(e) = check(frames, &table, &plan) {
            panic!("{}: {e}", path.display());
        }
    }
}

#[test]
fn twenty_thousand_structured_cases_hold_every_invariant() {
    let out = tempfile::tempdir().unwrap();
    let flags = |threads: &str| {
        FuzzArgs::from_flags([
            "--iterations",
            "20000",
            "--seed",
            "2024",
            "--threads",
            threads,
            "--out",
            out.path().to_str().unwrap(),
        ])
        .unwrap()
    };
    let run = in_process(&flags("2")).unwrap();
    assert_eq!(run.tally.failures, 0, "{:#?}", run.failures);
    assert!(run.failures.is_empty() && run.panics.is_empty());
    assert_eq!(run.tally.cases, 20_000);
    // The mutator reaches every outcome admission has: runs, pongs, and every error code
    // but those only the queue, workers or broker give (busy, internal, unavailable,
    // expired).
    let outcomes = run.tally.outcomes();
    for name in ["run", "pong"]
        .into_iter()
        .chain(ErrorCode::ALL.iter().map(|c| c.name()))
        .filter(|n| !["busy", "internal", "unavailable", "expired"].contains(n))
    {
        assert!(
            outcomes.iter().any(|(o, n)| *o == name && *n > 0),
            "no case ended in {name}: {outcomes:?}"
        );
    }
    // Version 2's checks in good numbers: streams that do not inflate to their tensor,
    // quantisation scales that are not finite and above 0.
    for (name, least) in [("bad_compression", 500), ("bad_quantization", 100)] {
        let n = outcomes.iter().find(|(o, _)| *o == name).map_or(0, |o| o.1);
        assert!(n >= least, "{name}: {n} cases of 20,000");
    }
    assert_eq!(
        run.tally.mutation_counts().len(),
        Mutation::ALL.len(),
        "every mutation is used"
    );
    // The same seed gives the same run, whatever the threads.
    let again = in_process(&flags("1")).unwrap();
    assert_eq!(again.tally, run.tally);
    assert_eq!(
        std::fs::read_dir(out.path()).unwrap().count(),
        0,
        "nothing saved"
    );
}

#[test]
fn the_socket_run_matches_admission_and_survives_an_oversized_frame() {
    let out = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(EDGE)
        .args([
            "fuzz",
            "--socket",
            "--json",
            "--iterations",
            "1500",
            "--seed",
            "5",
        ])
        .args(["--check-every", "250", "--oversize-mib", "64", "--out"])
        .arg(out.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(report["failures"].as_array().unwrap().len(), 0, "{report}");
    assert!(report["cases"].as_u64().unwrap() > 1400);
    assert!(report["outcomes"]["run"].as_u64().unwrap() > 0);
    assert_eq!(report["probes"], report["probes_answered"]);
    assert_eq!(report["oversize_dropped"], true);
    assert_eq!(report["fresh_connection_answered"], true);
    assert_eq!(report["alive"], true);
    let rss = &report["rss_kib"];
    let kib = |k: &str| rss[k].as_u64().unwrap();
    let grown = kib("after_oversize").saturating_sub(kib("before_oversize"));
    assert!(
        grown < 32 << 10,
        "the edge grew by {grown} KiB after a 64 MiB frame"
    );
}
