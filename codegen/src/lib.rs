//! Plan → Rust tokens for the `edgent_plan!` proc macro (DESIGN.md §6).
//!
//! This is the plain, unit-tested library behind the thin `codegen-macros` crate (the
//! `typify-impl`/`typify-macro` split): [`plan`] is the plan file's schema, [`envelope`]
//! the build-time lower envelopes, [`tokens`] the emitted module. [`resolve`] and [`load`]
//! find and read the plan file; their messages say what to do.
//!
//! No burn dependency, and none on `runtime`: this crate is compiled into a proc macro. The
//! emitted tokens name `::runtime::plan` items, which the invoking crate depends on.

use std::path::{Path, PathBuf};

pub mod envelope;
pub mod plan;
pub mod tokens;

use plan::{PLAN_VERSION, Plan};

/// The plan file's path: `literal`, relative to `manifest_dir` (the invoking crate's
/// `CARGO_MANIFEST_DIR`). Empty and absolute paths are refused (like sqlx's `resolve_path`):
/// a build must not depend on where the checkout lives.
pub fn resolve(manifest_dir: &Path, literal: &str) -> Result<PathBuf, String> {
    const HINT: &str = "give the plan's path relative to the crate's Cargo.toml, \
                        e.g. `edgent_plan!(\"generated/plan.json\")`";
    if literal.is_empty() {
        return Err(format!("the plan's path is empty: {HINT}"));
    }
    let path = Path::new(literal);
    if path.is_absolute() || path.has_root() {
        return Err(format!("`{literal}` is an absolute path: {HINT}"));
    }
    Ok(manifest_dir.join(path))
}

/// Reads and checks the plan file at `path`: every problem found (a missing file, bad
/// JSON, another schema version, or what [`Plan::validate`] reports), each saying what to
/// do. The messages do not name the file; callers add the name they were given.
pub fn load(path: &Path) -> Result<Plan, Vec<String>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(vec![
                "the plan file does not exist: run `cargo xtask generate` to write it".into(),
            ]);
        }
        Err(e) => return Err(vec![format!("cannot read the plan file: {e}")]),
    };
    let plan: Plan = match serde_json::from_str(&text) {
        Ok(plan) => plan,
        Err(e) => return Err(vec![parse_problem(&text, &e)]),
    };
    let problems = plan.validate();
    if problems.is_empty() {
        Ok(plan)
    } else {
        Err(problems)
    }
}

/// Just the version, to tell another schema version from a broken file.
#[derive(serde::Deserialize)]
struct VersionProbe {
    version: u32,
}

fn parse_problem(text: &str, error: &serde_json::Error) -> String {
    use serde_json::error::Category;
    match error.classify() {
        Category::Syntax | Category::Eof | Category::Io => {
            format!("the plan file is not valid JSON ({error}): run `cargo xtask generate`")
        }
        Category::Data => match serde_json::from_str::<VersionProbe>(text) {
            // Another schema version fails on its fields first: say the version instead.
            Ok(probe) if probe.version != PLAN_VERSION => format!(
                "plan schema version {} is not {PLAN_VERSION}: run `cargo xtask generate`",
                probe.version
            ),
            _ => format!(
                "the plan file does not match the plan schema ({error}): run `cargo xtask generate`"
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokens::tests::tiny_plan;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn resolve_joins_relative_paths() {
        let dir = Path::new("/crate");
        assert_eq!(
            resolve(dir, "generated/plan.json").unwrap(),
            Path::new("/crate/generated/plan.json")
        );
        assert_eq!(
            resolve(dir, "../plan.json").unwrap(),
            Path::new("/crate/../plan.json")
        );
    }

    #[test]
    fn resolve_refuses_empty_and_absolute_paths() {
        let dir = Path::new("/crate");
        let e = resolve(dir, "").unwrap_err();
        assert!(e.contains("relative to the crate's Cargo.toml"), "{e}");
        let e = resolve(dir, "/etc/plan.json").unwrap_err();
        assert!(
            e.contains("absolute") && e.contains("relative to the crate's Cargo.toml"),
            "{e}"
        );
    }

    #[test]
    fn load_reads_a_valid_plan() {
        let dir = tempfile::tempdir().unwrap();
        let plan = tiny_plan();
        let path = write(
            dir.path(),
            "plan.json",
            &serde_json::to_string_pretty(&plan).unwrap(),
        );
        assert_eq!(load(&path).unwrap(), plan);
    }

    #[test]
    fn a_plan_from_before_thread_counts_keeps_its_digest() {
        let dir = tempfile::tempdir().unwrap();
        let mut plan = tiny_plan();
        plan.device_threads = 0;
        plan.edge_threads = 0;
        let plan = plan.seal();
        let text = serde_json::to_string_pretty(&plan).unwrap();
        assert!(!text.contains("threads"), "{text}");
        let loaded = load(&write(dir.path(), "plan.json", &text)).unwrap();
        assert_eq!(loaded.compute_digest(), plan.digest);
        // A recorded count is part of the digest.
        let mut counted = loaded.clone();
        counted.device_threads = 1;
        assert_ne!(counted.compute_digest(), plan.digest);
    }

    #[test]
    fn load_reads_back_every_float_exactly() {
        // Without serde_json's `float_roundtrip`, some of these parse one ulp off and the
        // digest of a freshly generated plan would not match.
        let mut plan = crate::tokens::tests::sample_plan(5);
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        for exit in &mut plan.exits {
            for p in &mut exit.partitions {
                p.device_ms = next() * 250.0;
                p.edge_ms = next() * 3.7;
            }
            for l in &mut exit.layers {
                l.device_ms = next() * 40.0;
                l.edge_ms = next() / 3.0;
            }
        }
        let plan = plan.seal();
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "plan.json",
            &serde_json::to_string_pretty(&plan).unwrap(),
        );
        assert_eq!(load(&path), Ok(plan));
    }

    #[test]
    fn load_says_to_generate_a_missing_plan() {
        let dir = tempfile::tempdir().unwrap();
        let problems = load(&dir.path().join("plan.json")).unwrap_err();
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].contains("run `cargo xtask generate`"),
            "{problems:?}"
        );
        // No path in the message: the macro names the file as the user wrote it.
        assert!(
            !problems[0].contains(&*dir.path().to_string_lossy()),
            "{problems:?}"
        );
    }

    #[test]
    fn load_reports_bad_json_with_its_position() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "plan.json",
            "{\n  \"version\": 1,\n  \"digest\": \n}",
        );
        let problems = load(&path).unwrap_err();
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("not valid JSON"), "{problems:?}");
        assert!(problems[0].contains("line 4 column 1"), "{problems:?}");
    }

    #[test]
    fn load_reports_a_schema_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "plan.json",
            &format!(r#"{{"version": {PLAN_VERSION}, "digest": "x"}}"#),
        );
        let problems = load(&path).unwrap_err();
        assert!(
            problems[0].contains("missing field `dataset`"),
            "{problems:?}"
        );
    }

    #[test]
    fn load_names_another_schema_version_before_its_fields() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "plan.json", r#"{"version": 7, "layout": []}"#);
        let problems = load(&path).unwrap_err();
        assert_eq!(
            problems,
            [format!(
                "plan schema version 7 is not {PLAN_VERSION}: run `cargo xtask generate`"
            )]
        );
        // Same message when the rest does parse.
        let mut plan = tiny_plan();
        plan.version = 7;
        let path = write(
            dir.path(),
            "plan7.json",
            &serde_json::to_string(&plan).unwrap(),
        );
        assert_eq!(load(&path).unwrap_err(), problems);
    }

    #[test]
    fn load_collects_every_validation_problem() {
        let dir = tempfile::tempdir().unwrap();
        let mut plan = tiny_plan();
        plan.exits[0].layers[1].input = vec![9];
        plan.exits[1].accuracy = 1.5;
        let plan = plan.seal();
        let path = write(
            dir.path(),
            "plan.json",
            &serde_json::to_string(&plan).unwrap(),
        );
        let problems = load(&path).unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("exit 1: layer"), "{problems:?}");
        assert!(problems[1].contains("accuracy 1.5"), "{problems:?}");
    }
}
