//! `cargo xtask fuzz`: builds the binaries of the committed plan and runs `edgent-edge
//! fuzz` (xtask does not link the generated crate; see `cargo xtask bench`), which mutates
//! valid protocol messages and checks the decoder and the edge's admission against
//! PROTOCOL.md, in process or against a live edge (`--socket`).

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, ensure};
use clap::Args;

/// Flags of `cargo xtask fuzz` (those of `edgent-edge fuzz`).
#[derive(Args, Debug)]
pub struct FuzzArgs {
    /// Cases to run (default: 1,000,000 in process, 20,000 with --socket).
    #[arg(long)]
    iterations: Option<u64>,
    /// Seed of the run: the same seed gives the same cases.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Threads for the in-process run (default: one per core).
    #[arg(long, conflicts_with = "socket")]
    threads: Option<usize>,
    /// Directories of `.frames` files to mutate as well (e.g. fuzz/regressions).
    #[arg(long, value_name = "DIR")]
    corpus: Vec<PathBuf>,
    /// Where failing cases are saved (default: fuzz/regressions, which the tests replay).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Send the cases to a live `edgent-edge serve --insecure` on loopback.
    #[arg(long)]
    socket: bool,
    /// With --socket: a valid request checked every this many cases (default 500).
    #[arg(long, requires = "socket")]
    check_every: Option<u64>,
    /// With --socket: the oversized frame sent at the end, MiB (default 300; 0: none).
    #[arg(long, requires = "socket")]
    oversize_mib: Option<usize>,
    /// Print one JSON object instead of the report.
    #[arg(long)]
    json: bool,
}

pub fn run(args: FuzzArgs) -> anyhow::Result<()> {
    let bins = crate::lab::Binaries::build(None)?;
    let out = args
        .out
        .unwrap_or_else(|| crate::project_root().join("fuzz/regressions"));
    let mut command = Command::new(&bins.edge);
    command
        .arg("fuzz")
        .args(["--seed", &args.seed.to_string()])
        .arg("--out")
        .arg(&out);
    if let Some(t) = args.threads {
        command.args(["--threads", &t.to_string()]);
    }
    if let Some(n) = args.iterations {
        command.args(["--iterations", &n.to_string()]);
    }
    for dir in &args.corpus {
        command.arg("--corpus").arg(dir);
    }
    if args.socket {
        command.arg("--socket");
    }
    if let Some(k) = args.check_every {
        command.args(["--check-every", &k.to_string()]);
    }
    if let Some(mib) = args.oversize_mib {
        command.args(["--oversize-mib", &mib.to_string()]);
    }
    if args.json {
        command.arg("--json");
    }
    let status = command.status().context("cannot run edgent-edge fuzz")?;
    ensure!(
        status.success(),
        "the fuzzer found failing cases (saved under {})",
        out.display()
    );
    Ok(())
}
