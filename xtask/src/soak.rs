//! `cargo xtask soak`: a bounded run of the whole serving side under faults, on loopback,
//! with CURVE. A broker, two edges behind it and sixteen devices (`edgent-device eval
//! --duration`); one edge is killed with SIGKILL and restarted every `--kill-every`
//! seconds; a newcomer device starts at a third of the run, refused (its key is not
//! listed), and halfway the devices' allow-list changes (the newcomer's key added, one
//! device's key removed) without restarting anything. It prints the requests, the
//! answers, those in time, duplicate and mismatched replies, and the broker's and the
//! surviving edge's memory (RSS) after warm-up and at the end, and fails when an answer
//! was late or wrong, a reply came twice, or memory grew by more than 10 %.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use clap::Args;
use serde_json::{Value, json};

use crate::lab::{Binaries, Reaped};

/// Flags of `cargo xtask soak`.
#[derive(Args, Debug)]
pub struct SoakArgs {
    /// How long the devices run, minutes.
    #[arg(long, default_value_t = 10.0)]
    minutes: f64,
    /// Devices (each its own process and key).
    #[arg(long, default_value_t = 16)]
    devices: usize,
    /// Seconds between SIGKILLs of the first edge (each followed by a restart).
    #[arg(long, default_value_t = 60)]
    kill_every: u64,
    /// Each device's deadline per image, ms.
    #[arg(long, default_value_t = 300)]
    deadline_ms: u64,
    /// The devices' emulated slowdown (`edgent-device --slowdown`). The emulation
    /// busy-waits like a busy slow processor, so sixteen emulated devices at the plan's
    /// 1600× would take this machine's two cores from the edges; 1 (real speed) keeps the
    /// devices' local answers, and so their deadlines, about the serving side.
    #[arg(long, default_value_t = 1.0)]
    device_slowdown: f64,
    /// Where the keys, traces and stats go (default: target/soak).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// A free TCP port on loopback.
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Resident memory of a process, KiB (`VmRSS`).
fn rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Runs `edgent-edge ARGS` in the background, its stderr to `log`, at a lower priority
/// (`nice -n 10`, which execs it: same pid): devices and servers share this machine's
/// cores, and a restarted edge's start-up (packing weights, warming up) must not delay the
/// devices' clocks, as it could not on separate machines.
fn start_edge_process(bins: &Binaries, args: &[String], log: &Path) -> anyhow::Result<Reaped> {
    // Appended: a restarted edge's lives share one log.
    let log = std::fs::File::options()
        .create(true)
        .append(true)
        .open(log)?;
    let child = Command::new("nice")
        .args(["-n", "10"])
        .arg(&bins.edge)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .context("cannot start edgent-edge")?;
    Ok(Reaped::new(child))
}

/// SIGTERM, then the JSON stats the process prints on its way out.
fn stop(mut process: Reaped) -> anyhow::Result<Value> {
    let pid = process.0.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status()?;
    let until = Instant::now() + Duration::from_secs(20);
    while process.0.try_wait()?.is_none() {
        ensure!(Instant::now() < until, "process {pid} ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut out = String::new();
    use std::io::Read;
    if let Some(mut stdout) = process.0.stdout.take() {
        stdout.read_to_string(&mut out)?;
    }
    serde_json::from_str(out.trim()).with_context(|| format!("final stats of {pid}: `{out}`"))
}

fn keygen(bins: &Binaries, dir: &Path, name: &str) -> anyhow::Result<String> {
    let status = Command::new(&bins.edge)
        .args(["keygen", "--name", name, "--out"])
        .arg(dir)
        .stdout(Stdio::null())
        .status()?;
    ensure!(status.success(), "keygen {name} failed");
    Ok(std::fs::read_to_string(dir.join(format!("{name}.pub")))?)
}

/// Writes an allow-list atomically (the servers reload it when it changes).
fn write_list(path: &Path, keys: &[&String]) -> anyhow::Result<()> {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, keys.iter().map(|k| k.as_str()).collect::<String>())?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

pub fn run(args: SoakArgs) -> anyhow::Result<()> {
    ensure!(
        args.minutes > 0.0 && args.devices >= 2,
        "--minutes > 0 and --devices ≥ 2"
    );
    let bins = Binaries::build(None)?;
    let dir = args
        .out
        .unwrap_or_else(|| crate::project_root().join("target/soak"));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    let p = |name: &str| dir.join(name).display().to_string();
    for name in ["broker", "edge1", "edge2"] {
        keygen(&bins, &dir, name)?;
    }
    let names: Vec<String> = (0..args.devices)
        .map(|i| format!("device{i}"))
        .chain(["newcomer".to_string()])
        .collect();
    let keys: Vec<String> = names
        .iter()
        .map(|n| keygen(&bins, &dir, n))
        .collect::<anyhow::Result<_>>()?;
    let (newcomer, removed) = (args.devices, args.devices - 1);
    let devices_list = dir.join("devices.pub");
    write_list(
        &devices_list,
        &keys[..args.devices].iter().collect::<Vec<_>>(),
    )?;
    std::fs::write(
        dir.join("edges.pub"),
        std::fs::read_to_string(dir.join("edge1.pub"))?
            + &std::fs::read_to_string(dir.join("edge2.pub"))?,
    )?;

    let (front, back, metrics) = (free_port()?, free_port()?, free_port()?);
    let broker_args: Vec<String> = [
        "broker",
        "--front",
        &format!("tcp://127.0.0.1:{front}"),
        "--back",
        &format!("tcp://127.0.0.1:{back}"),
        "--key",
        &p("broker.key"),
        "--allow",
        &p("devices.pub"),
        "--allow-edges",
        &p("edges.pub"),
        "--stats",
        &p("broker.json"),
        "--metrics",
        &format!("127.0.0.1:{metrics}"),
    ]
    .map(String::from)
    .to_vec();
    let edge_args = |name: &str| -> Vec<String> {
        [
            "serve",
            "--broker",
            &format!("tcp://127.0.0.1:{back}"),
            "--workers",
            "1",
            "--key",
            &p(&format!("{name}.key")),
            "--server-key",
            &p("broker.pub"),
            "--stats",
            &p(&format!("{name}.json")),
        ]
        .map(String::from)
        .to_vec()
    };
    let broker = start_edge_process(&bins, &broker_args, &dir.join("broker.log"))?;
    let mut edge1 = start_edge_process(&bins, &edge_args("edge1"), &dir.join("edge1.log"))?;
    let edge2 = start_edge_process(&bins, &edge_args("edge2"), &dir.join("edge2.log"))?;
    std::thread::sleep(Duration::from_secs(2));

    let total = Duration::from_secs_f64(args.minutes * 60.0);
    let device = |i: usize, run_for: Duration| -> anyhow::Result<Reaped> {
        let child = Command::new(&bins.device)
            .args(["eval", "--json", "--deadline"])
            .arg(format!("{}ms", args.deadline_ms))
            .arg("--duration")
            .arg(format!("{}ms", run_for.as_millis()))
            .args(["--slowdown", &args.device_slowdown.to_string()])
            .args(["--edge", &format!("tcp://127.0.0.1:{front}")])
            .args(["--key", &p(&format!("{}.key", names[i]))])
            .args(["--server-key", &p("broker.pub")])
            .args(["--trace", &p(&format!("{}.jsonl", names[i]))])
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(
                dir.join(format!("{}.log", names[i])),
            )?)
            .spawn()
            .context("cannot start edgent-device")?;
        Ok(Reaped::new(child))
    };
    let started = Instant::now();
    let mut devices: Vec<Reaped> = (0..args.devices)
        .map(|i| device(i, total))
        .collect::<anyhow::Result<_>>()?;

    let bar = indicatif::ProgressBar::new(total.as_secs()).with_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} s {msg}")?,
    );
    let warm_up = Duration::from_secs(30).min(total / 4);
    let (mut rss_start, mut kills, mut changed_at) = (None, 0u32, None);
    let mut newcomer_started: Option<Duration> = None;
    let mut next_kill = Duration::from_secs(args.kill_every);
    while started.elapsed() < total {
        std::thread::sleep(Duration::from_millis(200));
        let now = started.elapsed();
        if rss_start.is_none() && now >= warm_up {
            rss_start = Some((rss_kib(broker.0.id()), rss_kib(edge2.0.id())));
        }
        // (None in the last 5 s: a restarted edge must be up before the final stats.)
        if now >= next_kill && now + Duration::from_secs(5) < total {
            drop(edge1); // SIGKILL
            kills += 1;
            edge1 = start_edge_process(&bins, &edge_args("edge1"), &dir.join("edge1.log"))?;
            next_kill += Duration::from_secs(args.kill_every);
        }
        if changed_at.is_none() && now >= total / 2 {
            // The newcomer's key in, the last device's key out: no restart.
            let mut listed: Vec<&String> = keys[..args.devices].iter().collect();
            listed.remove(removed);
            listed.push(&keys[newcomer]);
            write_list(&devices_list, &listed)?;
            changed_at = Some(now);
        }
        // The newcomer starts before its key is listed: refused at the handshake, it
        // answers locally, and reconnects once it has heard nothing for 10 s.
        if newcomer_started.is_none() && now >= total / 3 {
            devices.push(device(newcomer, total.saturating_sub(now))?);
            newcomer_started = Some(now);
        }
        bar.set_position(now.as_secs());
        bar.set_message(format!("{kills} edge kills"));
    }
    bar.finish_and_clear();
    let rss_end = (rss_kib(broker.0.id()), rss_kib(edge2.0.id()));

    // The devices stop by themselves (--duration) and print their reports.
    let mut reports = Vec::new();
    for (i, mut d) in devices.into_iter().enumerate() {
        let until = Instant::now() + Duration::from_secs(60);
        while d.0.try_wait()?.is_none() {
            ensure!(Instant::now() < until, "device {i} did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut out = String::new();
        use std::io::Read;
        d.0.stdout
            .take()
            .context("no stdout")?
            .read_to_string(&mut out)?;
        reports.push(
            serde_json::from_str::<Value>(out.trim())
                .with_context(|| format!("report of {}: `{out}`", names[i]))?,
        );
    }
    let edge1_stats = stop(edge1)?;
    let edge2_stats = stop(edge2)?;
    let broker_stats = stop(broker)?;

    let changed_s = changed_at.map_or(f64::NAN, |d| d.as_secs_f64());
    let traces: Vec<Vec<Value>> = names
        .iter()
        .map(|n| read_jsonl(&dir.join(format!("{n}.jsonl"))))
        .collect::<anyhow::Result<_>>()?;
    // When the newcomer was first served by an edge (its trace's clock starts after its
    // start-up, so this is a little early), and whether the removed device was served
    // after the change.
    let newcomer_offset = newcomer_started.map_or(0.0, |d| d.as_secs_f64());
    let first_edge = |lines: &[Value]| {
        lines
            .iter()
            .find(|l| l["source"] == "edge")
            .and_then(|l| l["t_s"].as_f64())
    };
    let newcomer_first_s = first_edge(&traces[newcomer]).map(|t| t + newcomer_offset);
    let removed_after: usize = traces[removed]
        .iter()
        .filter(|l| l["source"] == "edge" && l["t_s"].as_f64().unwrap_or(0.0) > changed_s + 1.0)
        .count();
    let sum = |key: &str| -> u64 { reports.iter().filter_map(|r| r[key].as_u64()).sum() };
    let images = sum("images");
    let answers: u64 = traces.iter().map(|t| t.len() as u64).sum();
    let met: f64 = reports
        .iter()
        .map(|r| {
            r["deadline_hit_rate"].as_f64().unwrap_or(0.0) * r["images"].as_f64().unwrap_or(0.0)
        })
        .sum();
    let correct: f64 = reports
        .iter()
        .map(|r| r["accuracy"].as_f64().unwrap_or(0.0) * r["images"].as_f64().unwrap_or(0.0))
        .sum();
    let growth = |start: Option<u64>, end: Option<u64>| match (start, end) {
        (Some(s), Some(e)) if s > 0 => Some(e as f64 / s as f64 - 1.0),
        _ => None,
    };
    let (rss_broker0, rss_edge0) = rss_start.unwrap_or((None, None));
    let summary = json!({
        "minutes": args.minutes,
        "device_slowdown": args.device_slowdown,
        "devices": args.devices + 1,
        "edge_kills": kills,
        "requests": images,
        // One trace line per answer the device returned.
        "answers": answers,
        "answers_in_deadline": met.round() as u64,
        "accuracy": correct / images.max(1) as f64,
        "from_edge": sum("from_edge"),
        "fallbacks": sum("fallbacks"),
        "device_only": sum("device_only"),
        "late_replies": sum("late_replies"),
        "duplicate_replies": sum("duplicate_replies"),
        "mismatched_replies": sum("mismatched_replies"),
        "allow_list_changed_at_s": changed_s,
        "newcomer_first_edge_answer_s": newcomer_first_s,
        "removed_device_edge_answers_after_change": removed_after,
        "rss_kib": {
            "broker": [rss_broker0, rss_end.0],
            "edge2": [rss_edge0, rss_end.1],
        },
        "rss_growth": {
            "broker": growth(rss_broker0, rss_end.0),
            "edge2": growth(rss_edge0, rss_end.1),
        },
        "broker": broker_stats,
        "edge1_last_life": edge1_stats,
        "edge2": edge2_stats,
    });
    std::fs::write(dir.join("soak.json"), serde_json::to_vec_pretty(&summary)?)?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    println!("(keys, traces, logs and soak.json in {})", dir.display());
    ensure!(answers == images, "{images} requests but {answers} answers");
    let late = images - met.round() as u64;
    ensure!(late == 0, "{late} answers after their deadline");
    ensure!(
        sum("duplicate_replies") == 0 && sum("mismatched_replies") == 0,
        "duplicate or mismatched replies"
    );
    for (who, g) in [
        ("broker", growth(rss_broker0, rss_end.0)),
        ("edge2", growth(rss_edge0, rss_end.1)),
    ] {
        if let Some(g) = g {
            ensure!(
                g <= 0.10,
                "{who}'s memory grew {:.1} % after warm-up",
                100.0 * g
            );
        }
    }
    ensure!(
        newcomer_first_s.is_some(),
        "the newcomer's key, added mid-run, never got it served"
    );
    ensure!(
        removed_after == 0,
        "the removed device was still served by an edge after the change"
    );
    Ok(())
}

fn read_jsonl(path: &Path) -> anyhow::Result<Vec<Value>> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|l| serde_json::from_str(l).with_context(|| format!("{}: `{l}`", path.display())))
        .collect()
}
