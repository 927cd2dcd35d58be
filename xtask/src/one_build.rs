//! `cargo xtask one-build`: checks that the commands the README gives share one build of
//! burn, and that the deployed crates keep to DESIGN's arrows (no training or toolchain code,
//! no linfa or csv, in what `edgent-device` and `edgent-edge` link). Cargo unifies features per command (over the packages it builds), so a command
//! that selects other packages can resolve other features for a crate deep under burn, and
//! then compiles burn again (13 minutes on 2 cores). The `workspace-hack` crate keeps the
//! feature sets equal; this check catches a dependency change that breaks that.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};
use clap::Args;

/// Options of `cargo xtask one-build`.
#[derive(Args, Debug)]
pub struct OneBuildArgs {}

/// The workspace's test build, the README's command.
const WORKSPACE_TESTS: &[&str] = &["test", "--workspace", "--release", "--no-run"];

/// Crates whose own tests a developer runs alone (`cargo test --release -p CRATE`).
const CRATES: [&str; 5] = ["runtime", "toolchain", "trainer", "datasets", "generated"];

/// The README's commands as the cargo builds they make, then each crate's tests alone, then
/// the tests again: (what it is, cargo's arguments).
fn commands() -> Vec<(String, Vec<&'static str>)> {
    let mut commands = vec![
        (
            "the tests (cargo test --workspace --release)".to_string(),
            WORKSPACE_TESTS.to_vec(),
        ),
        (
            "cargo xtask".into(),
            vec!["build", "--release", "--package", "xtask"],
        ),
        (
            "cargo run --release -p generated --bin …".into(),
            vec!["build", "--release", "--package", "generated", "--bins"],
        ),
    ];
    for krate in CRATES {
        commands.push((
            format!("cargo test --release -p {krate}"),
            vec!["test", "--release", "--package", krate, "--no-run"],
        ));
    }
    commands.push(("the tests again".into(), WORKSPACE_TESTS.to_vec()));
    commands
}

/// Runs each build in turn and fails if any of them needs its own build of a burn crate:
/// one it compiles (every command follows a build of this xtask, which links burn), or one
/// whose artifact name differs from the tests' build. Cargo puts a hash of the resolved
/// features in the name, so the second check holds even where an earlier run left both
/// builds in `target/` and cargo finds each fresh.
pub fn run(_args: OneBuildArgs) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut failures = Vec::new();
    let mut reference: Option<BTreeMap<String, Vec<String>>> = None;
    for (what, args) in commands() {
        println!("cargo {} ({what})", args.join(" "));
        let mut child = Command::new(&cargo)
            .args(&args)
            .args(["--locked", "--message-format=json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot run cargo")?;
        let stdout = child.stdout.take().expect("piped");
        let mut rebuilt = Vec::new();
        let mut artifacts = BTreeMap::new();
        for line in BufReader::new(stdout).lines() {
            if let Some(artifact) = burn_artifact(&line?) {
                if !artifact.fresh {
                    rebuilt.push(artifact.name.clone());
                }
                artifacts.insert(artifact.name, artifact.files);
            }
        }
        let status = child.wait()?;
        if !status.success() {
            bail!("`cargo {}` failed ({status})", args.join(" "));
        }
        let other = match &reference {
            Some(reference) => other_builds(reference, &artifacts),
            None => Vec::new(),
        };
        if rebuilt.is_empty() && other.is_empty() {
            println!("  burn: fresh, the tests' build");
        } else {
            if !rebuilt.is_empty() {
                println!("  burn rebuilt: {}", rebuilt.join(", "));
                failures.push(format!("{what} rebuilt {}", rebuilt.join(", ")));
            }
            if !other.is_empty() {
                println!("  burn built with other features: {}", other.join(", "));
                failures.push(format!("{what} uses its own build of {}", other.join(", ")));
            }
        }
        reference.get_or_insert(artifacts);
    }
    if !failures.is_empty() {
        bail!(
            "the README's commands do not share one build of burn: {}. Their feature sets differ: compare `cargo tree -e features` of the commands and add the difference to workspace-hack/Cargo.toml",
            failures.join("; ")
        );
    }
    println!("every command shares one build of burn");
    for package in ["runtime", "generated"] {
        let out = Command::new(&cargo)
            .args(["tree", "--locked", "-e", "normal,build", "--prefix", "none"])
            .args(["-f", "{p}", "-p", package])
            .output()
            .context("cannot run cargo tree")?;
        if !out.status.success() {
            bail!(
                "`cargo tree -p {package}` failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let offline = offline_dependencies(&String::from_utf8_lossy(&out.stdout));
        if !offline.is_empty() {
            bail!(
                "{package} is deployed code but depends on {}: move what needs them to the toolchain (DESIGN.md's arrows)",
                offline.join(", ")
            );
        }
        println!("{package}: no training or toolchain code, no linfa or csv");
    }
    Ok(())
}

/// Crates only the offline toolchain may use.
const OFFLINE: [&str; 5] = ["trainer", "toolchain", "linfa", "linfa-linear", "csv"];

/// The offline crates among the packages `cargo tree -f {p} --prefix none` lists.
fn offline_dependencies(tree: &str) -> Vec<String> {
    let mut found: Vec<String> = tree
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| OFFLINE.contains(name))
        .map(str::to_string)
        .collect();
    found.sort();
    found.dedup();
    found
}

/// A burn crate cargo built or found fresh in one command.
#[derive(Debug, PartialEq)]
struct BurnArtifact {
    /// The crate's target name (`burn_flex`).
    name: String,
    /// Whether cargo found it built (not compiled now).
    fresh: bool,
    /// The files it produced; their names carry the hash of the features resolved.
    files: Vec<String>,
}

/// The burn crate a line of cargo's JSON output reports, if any.
fn burn_artifact(line: &str) -> Option<BurnArtifact> {
    let message: serde_json::Value = serde_json::from_str(line).ok()?;
    if message["reason"] != "compiler-artifact" {
        return None;
    }
    let name = message["target"]["name"].as_str()?;
    if !name.starts_with("burn") {
        return None;
    }
    let files = message["filenames"]
        .as_array()
        .map(|files| {
            files
                .iter()
                .filter_map(|file| file.as_str())
                .filter_map(|file| file.rsplit('/').next())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    Some(BurnArtifact {
        name: name.to_string(),
        fresh: message["fresh"] == true,
        files,
    })
}

/// The burn crates this command built under other names (other features) than the tests did.
fn other_builds(
    reference: &BTreeMap<String, Vec<String>>,
    artifacts: &BTreeMap<String, Vec<String>>,
) -> Vec<String> {
    artifacts
        .iter()
        .filter(|(name, files)| reference.get(*name).is_some_and(|seen| seen != *files))
        .map(|(name, _)| name.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(name: &str, fresh: bool, file: &str) -> String {
        format!(
            r#"{{"reason":"compiler-artifact","fresh":{fresh},"target":{{"name":"{name}"}},"filenames":["/t/release/deps/{file}"]}}"#
        )
    }

    #[test]
    fn burn_artifacts_are_read_with_their_file_names() {
        assert_eq!(
            burn_artifact(&line("burn_flex", false, "libburn_flex-1a.rlib")),
            Some(BurnArtifact {
                name: "burn_flex".into(),
                fresh: false,
                files: vec!["libburn_flex-1a.rlib".into()],
            })
        );
        assert!(burn_artifact(&line("burn_flex", true, "x")).unwrap().fresh);
        assert_eq!(burn_artifact(&line("runtime", false, "x")), None);
        assert_eq!(burn_artifact(r#"{"reason":"build-finished"}"#), None);
        assert_eq!(burn_artifact("Compiling burn"), None);
    }

    #[test]
    fn a_fresh_build_under_another_hash_is_another_build() {
        let build = |lines: &[String]| {
            lines
                .iter()
                .filter_map(|line| burn_artifact(line))
                .map(|artifact| (artifact.name, artifact.files))
                .collect::<BTreeMap<_, _>>()
        };
        let tests = build(&[
            line("burn_core", true, "libburn_core-aa.rlib"),
            line("burn_nn", true, "libburn_nn-bb.rlib"),
        ]);
        let same = build(&[line("burn_nn", true, "libburn_nn-bb.rlib")]);
        let other = build(&[
            line("burn_core", true, "libburn_core-cc.rlib"),
            line("burn_nn", true, "libburn_nn-bb.rlib"),
        ]);
        assert!(other_builds(&tests, &same).is_empty());
        assert_eq!(other_builds(&tests, &other), ["burn_core"]);
    }

    #[test]
    fn offline_crates_are_found_by_name() {
        let tree = "generated v0.1.0 (/x)\nruntime v0.1.0 (/x)\ncsv v1.3.1\ncsv-core v0.1.12\nlinfa v0.8.0\ncsv v1.3.1\n";
        assert_eq!(offline_dependencies(tree), ["csv", "linfa"]);
        assert!(offline_dependencies("runtime v0.1.0\nburn v0.22.1\n").is_empty());
    }
}
