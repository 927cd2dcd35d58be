//! `cargo xtask one-build`: checks that the commands the README gives share one build of
//! burn, and that the deployed crates keep to DESIGN's arrows (no training or toolchain code,
//! no linfa or csv, in what `edgent-device` and `edgent-edge` link). Cargo unifies features per command (over the packages it builds), so a command
//! that selects other packages can resolve other features for a crate deep under burn, and
//! then compiles burn again (13 minutes on 2 cores). The `workspace-hack` crate keeps the
//! feature sets equal; this check catches a dependency change that breaks that.

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

/// Runs each build in turn and fails if any of them compiles a burn crate: every one
/// follows a build of this xtask (which links burn), so each should find burn fresh.
pub fn run(_args: OneBuildArgs) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut failures = Vec::new();
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
        for line in BufReader::new(stdout).lines() {
            if let Some(name) = rebuilt_burn_crate(&line?) {
                rebuilt.push(name);
            }
        }
        let status = child.wait()?;
        if !status.success() {
            bail!("`cargo {}` failed ({status})", args.join(" "));
        }
        if rebuilt.is_empty() {
            println!("  burn: fresh");
        } else {
            println!("  burn rebuilt: {}", rebuilt.join(", "));
            failures.push(format!("{what} rebuilt {}", rebuilt.join(", ")));
        }
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

/// The burn crate a line of cargo's JSON output says was compiled (not found fresh).
fn rebuilt_burn_crate(line: &str) -> Option<String> {
    let message: serde_json::Value = serde_json::from_str(line).ok()?;
    if message["reason"] != "compiler-artifact" || message["fresh"] != false {
        return None;
    }
    let name = message["target"]["name"].as_str()?;
    name.starts_with("burn").then(|| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_compiled_burn_crates_count() {
        let line = |name: &str, fresh: bool| {
            format!(
                r#"{{"reason":"compiler-artifact","fresh":{fresh},"target":{{"name":"{name}"}}}}"#
            )
        };
        assert_eq!(
            rebuilt_burn_crate(&line("burn_flex", false)).as_deref(),
            Some("burn_flex")
        );
        assert_eq!(rebuilt_burn_crate(&line("burn_flex", true)), None);
        assert_eq!(rebuilt_burn_crate(&line("runtime", false)), None);
        assert_eq!(rebuilt_burn_crate(r#"{"reason":"build-finished"}"#), None);
        assert_eq!(rebuilt_burn_crate("Compiling burn"), None);
    }

    #[test]
    fn offline_crates_are_found_by_name() {
        let tree = "generated v0.1.0 (/x)\nruntime v0.1.0 (/x)\ncsv v1.3.1\ncsv-core v0.1.12\nlinfa v0.8.0\ncsv v1.3.1\n";
        assert_eq!(offline_dependencies(tree), ["csv", "linfa"]);
        assert!(offline_dependencies("runtime v0.1.0\nburn v0.22.1\n").is_empty());
    }
}
