//! Shaped links for tests and experiments (DESIGN.md §8): two network namespaces joined by
//! a veth pair, each direction limited by a `tc` token bucket (`tbf`). Linux only; needs
//! root and iproute2 (`ip`, `tc`).

use std::process::Command;

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
        let rate = format!("{}bit", bits_per_s.round() as u64);
        for (ns, dev) in [(&self.device_ns, "vdev"), (&self.edge_ns, "vedge")] {
            sh(&[
                "tc", "-n", ns, "qdisc", "replace", "dev", dev, "root", "tbf", "rate", &rate,
                "burst", "2kb", "latency", "1s",
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
        let _ = sh(&["ip", "netns", "del", &self.device_ns]);
        let _ = sh(&["ip", "netns", "del", &self.edge_ns]);
    }
}
