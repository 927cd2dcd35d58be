//! Co-inference over a tc-shaped link (DESIGN.md §8): device and edge in two network
//! namespaces joined by a veth pair, each direction limited by a token bucket. Needs root
//! and `ip`/`tc` (CI has both); skips with the reason otherwise.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

/// Two namespaces `NAME-d` (device, 10.77.X.1) and `NAME-e` (edge, 10.77.X.2), removed on drop.
struct Link {
    device_ns: String,
    edge_ns: String,
    edge_ip: String,
}

fn sh(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args[0]))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Link {
    fn new(name: &str, subnet: u8) -> Result<Self, String> {
        let (d, e) = (format!("{name}-d"), format!("{name}-e"));
        let _ = sh(&["ip", "netns", "del", &d]);
        let _ = sh(&["ip", "netns", "del", &e]);
        sh(&["ip", "netns", "add", &d])?;
        let link = Self {
            device_ns: d.clone(),
            edge_ns: e.clone(),
            edge_ip: format!("10.77.{subnet}.2"),
        };
        sh(&["ip", "netns", "add", &e])?;
        sh(&[
            "ip", "link", "add", "vdev", "netns", &d, "type", "veth", "peer", "name", "vedge",
            "netns", &e,
        ])?;
        sh(&[
            "ip",
            "-n",
            &d,
            "addr",
            "add",
            &format!("10.77.{subnet}.1/24"),
            "dev",
            "vdev",
        ])?;
        sh(&[
            "ip",
            "-n",
            &e,
            "addr",
            "add",
            &format!("10.77.{subnet}.2/24"),
            "dev",
            "vedge",
        ])?;
        for (ns, dev) in [(&d, "vdev"), (&e, "vedge")] {
            sh(&["ip", "-n", ns, "link", "set", dev, "up"])?;
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(link)
    }

    /// Limits both directions to `rate` (tc syntax, e.g. `500kbit`).
    fn shape(&self, rate: &str) -> Result<(), String> {
        for (ns, dev) in [(&self.device_ns, "vdev"), (&self.edge_ns, "vedge")] {
            let _ = sh(&["tc", "-n", ns, "qdisc", "del", "dev", dev, "root"]);
            sh(&[
                "tc", "-n", ns, "qdisc", "add", "dev", dev, "root", "tbf", "rate", rate, "burst",
                "2kb", "latency", "400ms",
            ])?;
        }
        Ok(())
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        let _ = sh(&["ip", "netns", "del", &self.device_ns]);
        let _ = sh(&["ip", "netns", "del", &self.edge_ns]);
    }
}

/// Why the test cannot run here, if it cannot.
fn missing_capability() -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Some("needs root to create network namespaces".into());
    }
    for tool in ["ip", "tc"] {
        if Command::new(tool).arg("-V").output().is_err() {
            return Some(format!("`{tool}` is not installed (iproute2)"));
        }
    }
    None
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[test]
fn latency_matches_the_prediction_and_deadlines_hold_on_shaped_links() {
    if let Some(reason) = missing_capability() {
        eprintln!("SKIPPED: {reason}");
        return;
    }
    let link = Link::new("edgent-shaped", 1).expect("network namespaces");
    let keys = Keys::new();
    let port = free_port();
    let mut args: Vec<String> = ["serve", "--bind", &format!("tcp://{}:{port}", link.edge_ip)]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(keys.server("edge"));
    let ns_edge = ["ip", "netns", "exec", link.edge_ns.as_str()];
    let ns_device = ["ip", "netns", "exec", link.device_ns.as_str()];
    let edge = Server::start(&ns_edge, &args, "serving plan");
    let dir = tempfile::tempdir().unwrap();
    let mut summary = Vec::new();
    for (rate, deadline) in [
        ("150kbit", "250ms"),
        ("500kbit", "150ms"),
        ("1500kbit", "100ms"),
    ] {
        link.shape(rate).unwrap();
        let trace = dir.path().join(format!("{rate}.jsonl"));
        let mut args: Vec<String> = ["eval", "--json", "--limit", "150", "--deadline", deadline]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(["--edge".into(), format!("tcp://{}:{port}", link.edge_ip)]);
        args.extend(["--trace".into(), trace.display().to_string()]);
        args.extend(keys.client("device", "edge"));
        device(&ns_device, &args, Duration::from_secs(300));
        let lines = read_jsonl(&trace);
        // The estimator needs a few transfers to learn the link: judge the rest.
        let steady = &lines[10..];
        let remote: Vec<_> = steady.iter().filter(|l| l["source"] == "edge").collect();
        assert!(
            remote.len() * 10 >= steady.len() * 9,
            "{rate}: the plan offloads ({} of {})",
            remote.len(),
            steady.len()
        );
        let measured = median(
            remote
                .iter()
                .map(|l| l["total_ms"].as_f64().unwrap())
                .collect(),
        );
        let predicted = median(
            remote
                .iter()
                .map(|l| l["plan"]["predicted_ms"].as_f64().unwrap())
                .collect(),
        );
        let error = (measured - predicted).abs() / measured;
        let feasible: Vec<_> = steady
            .iter()
            .filter(|l| l["plan"]["feasible"] == true)
            .collect();
        let met = feasible.iter().filter(|l| l["met"] == true).count();
        let hit = met as f64 / feasible.len() as f64;
        let bandwidth = median(
            remote
                .iter()
                .map(|l| l["link"]["bandwidth_bps"].as_f64().unwrap() / 1e3)
                .collect(),
        );
        summary.push(format!(
            "{rate}, deadline {deadline}: median measured {measured:.2} ms vs predicted {predicted:.2} ms ({:.1} %), estimated {bandwidth:.0} kbit/s, deadline met {met}/{}",
            100.0 * error,
            feasible.len()
        ));
        eprintln!("{}", summary.last().unwrap());
        assert!(error <= 0.15, "{}", summary.join("\n"));
        assert!(hit >= 0.99, "{}", summary.join("\n"));
    }
    edge.stop();
    eprintln!("{}", summary.join("\n"));
}
