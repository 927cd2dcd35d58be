//! Helpers for the end-to-end tests that run `edgent-edge` and `edgent-device` as
//! separate processes.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use burn::prelude::*;
use runtime::{BranchyAlexNet, BranchyAlexNetConfig, WeightMap};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A binary of the `generated` crate, built by `cargo test --workspace` next to the tests.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test --workspace --release`, which builds it",
        path.display()
    );
    path
}

/// The committed plan.
pub fn plan() -> serde_json::Value {
    let text = std::fs::read_to_string(root().join("generated/plan.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The plan digest as protocol bytes.
pub fn plan_digest() -> [u8; 32] {
    runtime::wire::protocol::digest_bytes(plan()["digest"].as_str().unwrap()).unwrap()
}

/// The generated crate's weights, in this process (the single-process reference).
pub fn reference_model(device: &Device) -> BranchyAlexNet {
    let weights = WeightMap::load(&root().join("generated/model.safetensors")).unwrap();
    BranchyAlexNetConfig::new()
        .init(device)
        .load_weights(&weights, device)
        .unwrap()
}

/// The Fashion-MNIST test set from Debian's package.
pub fn test_set() -> datasets::ImageSet {
    datasets::load(
        datasets::DatasetKind::FashionMnist,
        None,
        datasets::Split::Test,
    )
    .expect("Fashion-MNIST (run scripts/setup.sh)")
}

/// Writes test image `index` as raw pixels and returns the path.
pub fn write_image(dir: &Path, set: &datasets::ImageSet, index: usize) -> PathBuf {
    let path = dir.join(format!("image{index}.raw"));
    std::fs::write(&path, set.image(index)).unwrap();
    path
}

/// A port nobody listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Key files for an edge, a device and a stranger, and an allow-list with the device.
pub struct Keys {
    pub dir: tempfile::TempDir,
}

impl Keys {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        for name in ["edge", "device", "stranger", "edge2"] {
            let status = Command::new(bin("edgent-edge"))
                .args(["keygen", "--name", name, "--out"])
                .arg(dir.path())
                .stdout(Stdio::null())
                .status()
                .unwrap();
            assert!(status.success());
        }
        let allow: String = ["device", "edge", "edge2"]
            .iter()
            .map(|n| std::fs::read_to_string(dir.path().join(format!("{n}.pub"))).unwrap())
            .collect();
        std::fs::write(dir.path().join("allow.pub"), allow).unwrap();
        let read = |n: &str| std::fs::read_to_string(dir.path().join(format!("{n}.pub"))).unwrap();
        std::fs::write(dir.path().join("devices.pub"), read("device")).unwrap();
        std::fs::write(dir.path().join("edges.pub"), read("edge") + &read("edge2")).unwrap();
        Self { dir }
    }

    pub fn path(&self, file: &str) -> String {
        self.dir.path().join(file).display().to_string()
    }

    /// Server flags: own key, allow-list.
    pub fn server(&self, name: &str) -> Vec<String> {
        vec![
            "--key".into(),
            self.path(&format!("{name}.key")),
            "--allow".into(),
            self.path("allow.pub"),
        ]
    }

    /// Broker flags: own key, the devices' allow-list (front), the edges' (back).
    pub fn broker(&self, name: &str) -> Vec<String> {
        vec![
            "--key".into(),
            self.path(&format!("{name}.key")),
            "--allow".into(),
            self.path("devices.pub"),
            "--allow-edges".into(),
            self.path("edges.pub"),
        ]
    }

    /// Client flags: own key, the server's public key.
    pub fn client(&self, name: &str, server: &str) -> Vec<String> {
        vec![
            "--key".into(),
            self.path(&format!("{name}.key")),
            "--server-key".into(),
            self.path(&format!("{server}.pub")),
        ]
    }
}

/// A running server process (edge or broker), killed when dropped.
pub struct Server {
    pub child: Option<Child>,
    pub endpoint: String,
}

impl Server {
    /// Starts `edgent-edge ARGS` and waits until it says it serves. `prefix` runs it
    /// under another command (e.g. `ip netns exec NS`).
    pub fn start(prefix: &[&str], args: &[String], ready_line: &str) -> Self {
        let mut command = match prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(bin("edgent-edge"));
                c
            }
            None => Command::new(bin("edgent-edge")),
        };
        let mut child = command
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[edge] {line}");
                let _ = tx.send(line);
            }
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.contains(ready_line) => break,
                Ok(_) => {}
                Err(_) => panic!("edgent-edge {args:?} did not start"),
            }
        }
        Self {
            child: Some(child),
            endpoint: String::new(),
        }
    }

    /// An edge serving on a fresh local port.
    pub fn edge(security: &[String], extra: &[&str]) -> Self {
        let port = free_port();
        let mut args: Vec<String> = vec![
            "serve".into(),
            "--bind".into(),
            format!("tcp://127.0.0.1:{port}"),
        ];
        args.extend(security.iter().cloned());
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut server = Self::start(&[], &args, "serving plan");
        server.endpoint = format!("tcp://127.0.0.1:{port}");
        server
    }

    /// Sends SIGTERM, waits, and returns the final JSON it printed.
    pub fn stop(mut self) -> serde_json::Value {
        let mut child = self.child.take().unwrap();
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let out = wait_output(&mut child, Duration::from_secs(20));
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("final stats `{out}`: {e}"))
    }

    /// Kills the process at once (SIGKILL).
    pub fn kill(mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits for `child` to exit within `timeout` (killing it otherwise) and returns stdout.
pub fn wait_output(child: &mut Child, timeout: Duration) -> String {
    let deadline = std::time::Instant::now() + timeout;
    // Read while it runs: a child that writes more than a pipe holds would block forever.
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        use std::io::Read;
        stdout.read_to_string(&mut out).unwrap();
        out
    });
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = reader.join().unwrap();
            assert!(status.success(), "process failed ({status}): {out}");
            return out;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("process did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `edgent-device ARGS` to completion and returns stdout.
pub fn device(prefix: &[&str], args: &[String], timeout: Duration) -> String {
    let mut child = spawn_device(prefix, args);
    wait_output(&mut child, timeout)
}

/// Starts `edgent-device ARGS` (stdout piped, stderr inherited).
pub fn spawn_device(prefix: &[&str], args: &[String]) -> Child {
    let mut command = match prefix.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(bin("edgent-device"));
            c
        }
        None => Command::new(bin("edgent-device")),
    };
    command.args(args).stdout(Stdio::piped()).spawn().unwrap()
}

/// Reads a JSON-lines file.
pub fn read_jsonl(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The class each exit predicts for the first `n` test images, in this process.
pub fn reference_classes(set: &datasets::ImageSet, n: usize) -> Vec<[usize; 5]> {
    let device = Device::flex();
    let model = reference_model(&device);
    let batcher = datasets::Batcher::new(
        datasets::DatasetKind::FashionMnist.normalization(),
        device.clone(),
    );
    let mut out = Vec::new();
    let n = n.min(set.len());
    for start in (0..n).step_by(250) {
        let indices: Vec<usize> = (start..(start + 250).min(n)).collect();
        let batch = batcher.batch(set, &indices);
        let logits: Vec<Vec<f32>> = model
            .forward_all(batch.images)
            .into_iter()
            .map(|t| t.into_data().try_into_vec_as::<f32>().unwrap())
            .collect();
        for i in 0..indices.len() {
            let class =
                |e: usize| runtime::model::entropy::argmax(&logits[e][i * 10..(i + 1) * 10]);
            out.push([class(0), class(1), class(2), class(3), class(4)]);
        }
    }
    out
}
