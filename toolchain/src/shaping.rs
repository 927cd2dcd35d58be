//! Shaped links for tests and experiments (DESIGN.md §8): two network namespaces joined by
//! a veth pair, each direction limited by a `tc` token bucket (`tbf`). Linux only; needs
//! root and iproute2 (`ip`, `tc`).
//!
//! A link removes its namespaces when dropped; [`remove_on_signal`] also removes them (and
//! stops what runs inside, and the processes given to [`stop_on_signal`]) when the process
//! is interrupted or terminated, so a killed run leaves nothing behind.

use std::process::Command;
use std::sync::{Mutex, OnceLock};

/// Namespaces of the links alive in this process, for [`remove_on_signal`]. A name is
/// listed before its namespace is made and unlisted after it is deleted, under this lock,
/// so a signal never finds a namespace unlisted.
static LIVE: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Processes outside any link (an edge on loopback) to stop on a signal, by id.
static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// Stops process `pid` (SIGTERM) when [`remove_on_signal`]'s handler runs, until
/// [`forget_on_signal`] is called for it.
pub fn stop_on_signal(pid: u32) {
    if let Ok(mut children) = CHILDREN.lock() {
        children.push(pid);
    }
}

/// Undoes [`stop_on_signal`] for `pid` (call it once the process is reaped, before its id
/// can be reused).
pub fn forget_on_signal(pid: u32) {
    if let Ok(mut children) = CHILDREN.lock() {
        children.retain(|&p| p != pid);
    }
}

/// Stops the processes in `ns` (SIGTERM, then SIGKILL after a second) and deletes it.
fn remove_namespace(ns: &str) {
    let pids = || -> Vec<String> {
        Command::new("ip")
            .args(["netns", "pids", ns])
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    for signal in ["-TERM", "-KILL"] {
        let running = pids();
        if running.is_empty() {
            break;
        }
        let _ = Command::new("kill").arg(signal).args(&running).status();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
        while !pids().is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    let _ = sh(&["ip", "netns", "del", ns]);
}

/// On SIGINT, SIGTERM or SIGHUP, stops the processes given to [`stop_on_signal`], removes
/// every live link (and stops what runs in it), then exits with 128 + the signal's number,
/// as the default action would. The lock on the live
/// links is held until the exit, so the rest of the program cannot report the processes it
/// stopped as failures meanwhile. Installed once per process; later calls report how that
/// went.
pub fn remove_on_signal() -> Result<(), String> {
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
            let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
                .map_err(|e| format!("cannot watch for signals: {e}"))?;
            std::thread::spawn(move || {
                if let Some(signal) = signals.forever().next() {
                    eprintln!("signal {signal}: stopping the lab's processes and links");
                    let children = CHILDREN.lock().unwrap_or_else(|p| p.into_inner());
                    if !children.is_empty() {
                        let pids: Vec<String> = children.iter().map(u32::to_string).collect();
                        let _ = Command::new("kill").arg("-TERM").args(&pids).status();
                    }
                    let live = LIVE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                    for ns in live.iter() {
                        remove_namespace(ns);
                    }
                    std::process::exit(128 + signal);
                }
            });
            Ok(())
        })
        .clone()
}

/// A device namespace and an edge namespace joined by a veth pair; removed when dropped.
#[derive(Debug)]
pub struct ShapedLink {
    /// Namespace of the device side.
    pub device_ns: String,
    /// Namespace of the edge side.
    pub edge_ns: String,
    /// The edge's address on the link.
    pub edge_ip: String,
}

/// Runs a command; an error says which one failed and what it printed.
pub fn sh(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", args[0]))?;
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

/// Why shaped links cannot be made here, if they cannot (not root, no iproute2).
pub fn unavailable() -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Some("shaped links need root (network namespaces, tc)".into());
    }
    for tool in ["ip", "tc"] {
        if Command::new(tool).arg("-V").output().is_err() {
            return Some(format!(
                "`{tool}` is not installed (Debian package iproute2)"
            ));
        }
    }
    None
}

impl ShapedLink {
    /// Creates namespaces `NAME-d` (10.77.SUBNET.1) and `NAME-e` (10.77.SUBNET.2), unshaped.
    pub fn new(name: &str, subnet: u8) -> Result<Self, String> {
        let (d, e) = (format!("{name}-d"), format!("{name}-e"));
        let _ = sh(&["ip", "netns", "del", &d]);
        let _ = sh(&["ip", "netns", "del", &e]);
        if let Ok(mut live) = LIVE.lock() {
            live.extend([d.clone(), e.clone()]);
        }
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

    /// Limits both directions to `bits_per_s` (token bucket, 2 KiB burst, a queue of up to
    /// 1 s, like a radio link's buffers).
    /// Replaces any earlier limit: call it again to change the rate during a run.
    pub fn shape(&self, bits_per_s: f64) -> Result<(), String> {
        self.shape_with_burst(bits_per_s, 2048)
    }

    /// [`ShapedLink::shape`] with a burst of `burst_bytes` in each direction's bucket: that
    /// much passes at line rate after a pause (at least the interface's MTU, 1500 bytes).
    pub fn shape_with_burst(&self, bits_per_s: f64, burst_bytes: u32) -> Result<(), String> {
        let rate = format!("{}bit", bits_per_s.round() as u64);
        let burst = format!("{burst_bytes}b");
        for (ns, dev) in [(&self.device_ns, "vdev"), (&self.edge_ns, "vedge")] {
            sh(&[
                "tc", "-n", ns, "qdisc", "replace", "dev", dev, "root", "tbf", "rate", &rate,
                "burst", &burst, "latency", "1s",
            ])?;
        }
        Ok(())
    }

    /// `ip netns exec NS` for the device side, to prefix a command with.
    pub fn device_exec(&self) -> [&str; 4] {
        ["ip", "netns", "exec", &self.device_ns]
    }

    /// `ip netns exec NS` for the edge side.
    pub fn edge_exec(&self) -> [&str; 4] {
        ["ip", "netns", "exec", &self.edge_ns]
    }
}

impl Drop for ShapedLink {
    fn drop(&mut self) {
        let mut live = LIVE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let _ = sh(&["ip", "netns", "del", &self.device_ns]);
        let _ = sh(&["ip", "netns", "del", &self.edge_ns]);
        live.retain(|ns| *ns != self.device_ns && *ns != self.edge_ns);
    }
}
