//! Co-inference across real processes over ZeroMQ: the split is exact, bad input (and an
//! oversized frame) never hurts the edge, the allow-list holds, a dead edge costs no answer,
//! many devices and a broker work.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use burn::prelude::*;
use common::*;
use runtime::wire::protocol::{ErrorCode, Header, Message, MessageType, Payload};

/// The tests here time real processes on a small machine; running them one at a time
/// keeps one test's load (sixteen devices) from breaking another's deadlines.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn flags(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn every_pair_matches_single_process_inference() {
    let _serial = serial();
    let keys = Keys::new();
    let edge = Server::edge(&keys.server("edge"), &[]);
    let set = test_set();
    let dir = tempfile::tempdir().unwrap();
    let image = write_image(dir.path(), &set, 3);
    // The device at this machine's speed: the emulated slowdown is not what is checked.
    let mut args = flags(&[
        "pairs",
        "--all-encodings",
        "--slowdown",
        "1",
        "--edge",
        &edge.endpoint,
        "--input",
    ]);
    args.push(image.display().to_string());
    args.extend(keys.client("device", "edge"));
    let out = device(&[], &args, Duration::from_secs(120));

    let torch = Device::flex();
    let model = reference_model(&torch);
    let batcher = datasets::Batcher::new(
        datasets::DatasetKind::FashionMnist.normalization(),
        torch.clone(),
    );
    let x = batcher.batch(&set, &[3]).images;
    let reference: Vec<Vec<f32>> = (1..=5)
        .map(|e| {
            model
                .forward_exit(e, x.clone())
                .unwrap()
                .into_data()
                .try_into_vec_as::<f32>()
                .unwrap()
        })
        .collect();
    let mut seen = HashSet::new();
    let mut worst: std::collections::BTreeMap<String, f32> = Default::default();
    for line in out.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let (exit, p) = (
            v["exit"].as_u64().unwrap() as usize,
            v["partition"].as_u64().unwrap(),
        );
        let encoding = v["encoding"].as_str().unwrap_or("none").to_string();
        let logits: Vec<f32> = serde_json::from_value(v["logits"].clone()).unwrap();
        let reference = &reference[exit - 1];
        let scale = reference.iter().fold(1.0f32, |m, v| m.max(v.abs()));
        let diff = logits
            .iter()
            .zip(reference)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        // Exact encodings give the logits up to f32 rounding (the generated kernels sum in
        // another order than burn), relative to the largest logit; f16 rounds to 11 bits,
        // q8/q8c to 8 bits of range, q4/q4c to 4.
        let values = encoding.split('+').next().unwrap();
        let tolerance = match values {
            "f16" => 1e-3 * scale,
            "q8" | "q8c" => 0.05 * scale,
            "q4" | "q4c" => 0.25 * scale,
            _ => 1e-5 * scale,
        };
        assert!(
            diff <= tolerance,
            "exit {exit} partition {p} {encoding}: max |Δ| = {diff} (tolerance {tolerance})"
        );
        let w = worst.entry(values.to_string()).or_default();
        *w = w.max(diff / scale);
        assert!(seen.insert((exit, p, encoding)), "each route once");
    }
    eprintln!("largest |Δ| / max |logit| per kind of values: {worst:?}");
    let plan = plan();
    // Per exit: device-only, the image raw and compressed, 12 encodings at every split
    // (8 where the tensor is a vector: per-channel quantisation needs channels).
    let routes: usize = plan["exits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let layers = e["layers"].as_array().unwrap();
            let splits: usize = layers[1..]
                .iter()
                .map(|l| {
                    if l["input"].as_array().unwrap().len() >= 2 {
                        12
                    } else {
                        8
                    }
                })
                .sum();
            1 + 2 + splits
        })
        .sum();
    assert_eq!(seen.len(), routes, "every (exit, partition, encoding) once");
    let stats = edge.stop();
    // Every route but the device-only ones went to the edge.
    assert_eq!(stats["results"].as_u64().unwrap() as usize, routes - 5);
    assert_eq!(stats["errors"], 0);
}

/// `edgent-device eval` against `endpoint` as the listed device, with a trace file.
fn eval_args(endpoint: &str, trace: &std::path::Path, keys: &Keys, deadline: &str) -> Vec<String> {
    let mut args = flags(&["eval", "--json", "--deadline", deadline, "--edge", endpoint]);
    args.extend(flags(&["--trace", &trace.display().to_string()]));
    args.extend(keys.client("device", "edge"));
    args
}

/// A raw DEALER speaking the protocol (or not) to an edge started with `--insecure`.
struct RawClient {
    socket: zmq::Socket,
    _context: zmq::Context,
}

impl RawClient {
    fn new(endpoint: &str) -> Self {
        let context = zmq::Context::new();
        let socket = context.socket(zmq::DEALER).unwrap();
        socket.set_linger(0).unwrap();
        socket.connect(endpoint).unwrap();
        Self {
            socket,
            _context: context,
        }
    }

    fn send(&self, frames: &[Vec<u8>]) {
        self.socket.send_multipart(frames, 0).unwrap();
    }

    fn reply(&self) -> Message {
        assert!(
            self.socket.poll(zmq::POLLIN, 10_000).unwrap() > 0,
            "the edge did not answer"
        );
        Message::decode(&self.socket.recv_multipart(0).unwrap()).expect("replies are valid")
    }
}

#[test]
fn malformed_requests_get_error_replies_and_the_edge_keeps_serving() {
    let _serial = serial();
    let edge = Server::edge(&flags(&["--insecure"]), &[]);
    let client = RawClient::new(&edge.endpoint);
    let digest = plan_digest();
    let good = Message::infer(
        digest,
        1,
        4,
        0,
        0,
        &[1, 32, 32],
        Payload::U8(vec![128; 1024]),
    );
    let [h, p] = good.encode();
    let patched = |at: usize, bytes: &[u8]| {
        let mut h = h.clone();
        h[at..at + bytes.len()].copy_from_slice(bytes);
        vec![h, p.clone()]
    };
    let activation = |exit: u8, partition: u8, shape: &[usize], values: Vec<f32>| {
        Message::infer(digest, 9, exit, partition, 0, shape, Payload::F32(values))
            .encode()
            .to_vec()
    };
    let cases: Vec<(Vec<Vec<u8>>, ErrorCode)> = vec![
        (vec![h.clone()], ErrorCode::BadFrames),
        (vec![h.clone(), p.clone(), p.clone()], ErrorCode::BadFrames),
        (
            vec![h[..40].to_vec(), p.clone()],
            ErrorCode::BadHeaderLength,
        ),
        (patched(0, b"HTTP"), ErrorCode::BadMagic),
        (patched(4, &[3]), ErrorCode::BadVersion),
        (patched(5, &[2]), ErrorCode::BadType), // a Result sent to the edge
        (patched(6, &[0x7f]), ErrorCode::BadDtype), // no such values
        (patched(7, &[6]), ErrorCode::BadShape),
        (vec![h.clone(), p[..1000].to_vec()], ErrorCode::BadLength),
        (patched(8, &[0xAB; 32]), ErrorCode::UnknownPlan),
        (patched(48, &[9]), ErrorCode::BadExit),
        (patched(49, &[18]), ErrorCode::BadPartition),
        (patched(50, &[1, 0]), ErrorCode::BadField),
        // exit 4 at p = 1 takes f32 [32, 32, 32]; send u8 and the wrong shapes.
        (patched(49, &[1]), ErrorCode::BadDtype),
        (
            activation(4, 1, &[32, 32, 31], vec![0.5; 32 * 32 * 31]),
            ErrorCode::WrongShape,
        ),
        (
            activation(4, 17, &[10], vec![0.5; 10]),
            ErrorCode::WrongShape,
        ),
        (
            activation(4, 1, &[32, 32, 32], {
                let mut v = vec![0.5; 32 * 32 * 32];
                v[777] = f32::NAN;
                v
            }),
            ErrorCode::NonFinite,
        ),
    ];
    for (frames, code) in &cases {
        client.send(frames);
        let reply = client.reply();
        assert_eq!(reply.header.kind, MessageType::Error, "{code:?}");
        assert_eq!(
            reply.header.code, *code as u16,
            "expected {code:?}, got {reply:?}"
        );
        let Payload::Text(text) = &reply.payload else {
            panic!("error text")
        };
        assert!(!text.is_empty());
    }
    // Random bytes: many frames of garbage. Each gets an error reply (or, with no
    // frames at all, nothing); the edge survives.
    let mut state = 0x2545F4914F6CDD1Du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    // In rounds of 500, read between them: the edge sends without blocking and a peer
    // that never reads loses replies past ZeroMQ's high-water mark (1000), by design.
    let mut errors = 0;
    for _ in 0..4 {
        for _ in 0..500 {
            let frames = (next() % 4 + 1) as usize;
            let garbage: Vec<Vec<u8>> = (0..frames)
                .map(|_| {
                    let len = (next() % 120) as usize;
                    (0..len).map(|_| next() as u8).collect()
                })
                .collect();
            client.send(&garbage);
        }
        let round_end = errors + 500;
        while errors < round_end && client.socket.poll(zmq::POLLIN, 2000).unwrap() > 0 {
            let reply = Message::decode(&client.socket.recv_multipart(0).unwrap()).unwrap();
            assert_eq!(reply.header.kind, MessageType::Error);
            errors += 1;
        }
    }
    assert_eq!(errors, 2000, "every garbage message answered with an error");
    // A well-formed request on the same connection, and a ping, are still served.
    client.send(&good.encode());
    let reply = client.reply();
    assert_eq!(reply.header.kind, MessageType::Result);
    assert_eq!(reply.header.request_id, 1);
    let Payload::F32(logits) = reply.payload else {
        panic!("logits")
    };
    assert_eq!(logits.len(), 10);
    let ping = Header::new(MessageType::Ping, digest, 5);
    client.send(
        &Message {
            header: ping,
            payload: Payload::Text(String::new()),
        }
        .encode(),
    );
    assert_eq!(client.reply().header.kind, MessageType::Pong);
    let stats = edge.stop();
    assert_eq!(stats["results"], 1);
    assert_eq!(stats["errors"].as_u64().unwrap(), cases.len() as u64 + 2000);
}

/// Resident memory of process `pid`, KiB (`VmRSS` in `/proc/PID/status`).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn an_oversized_frame_is_dropped_unread_and_the_edge_keeps_serving() {
    let _serial = serial();
    let mut edge = Server::edge(&flags(&["--insecure"]), &[]);
    let pid = edge.child.as_ref().unwrap().id();
    let good = Message::infer(
        plan_digest(),
        21,
        5,
        0,
        0,
        &[1, 32, 32],
        Payload::U8(vec![77; 1024]),
    );
    let answered = |client: &RawClient| {
        client.send(&good.encode());
        let reply = client.reply();
        assert_eq!(reply.header.kind, MessageType::Result, "{reply:?}");
        assert_eq!(reply.header.request_id, 21);
    };
    // One request first, so that the baseline holds what serving costs.
    let client = RawClient::new(&edge.endpoint);
    answered(&client);
    let before = rss_kib(pid);
    // 256 MiB in one frame: the plan's largest tensor is 128 KiB, so libzmq (ZMQ_MAXMSGSIZE)
    // drops the frame and that connection when it reads the frame's size.
    let size = 256 << 20;
    let big = RawClient::new(&edge.endpoint);
    let [header, _] = good.encode();
    big.socket
        .send_multipart(vec![header, vec![0xA5u8; size]], 0)
        .unwrap();
    assert_eq!(
        big.socket.poll(zmq::POLLIN, 2000).unwrap(),
        0,
        "an oversized frame got a reply"
    );
    // A fresh connection is served, and so is the first one.
    answered(&RawClient::new(&edge.endpoint));
    answered(&client);
    let after = rss_kib(pid);
    assert!(
        after < before + (size as u64 >> 10) / 8,
        "the edge grew from {before} KiB to {after} KiB after a {size}-byte frame"
    );
    assert!(
        edge.child.as_mut().unwrap().try_wait().unwrap().is_none(),
        "the edge is running"
    );
    let stats = edge.stop();
    assert_eq!(stats["results"], 3);
    assert_eq!(
        stats["errors"], 0,
        "the frame was never read, so never answered"
    );
}

#[test]
fn a_key_not_on_the_allow_list_gets_no_service() {
    let _serial = serial();
    let keys = Keys::new();
    let edge = Server::edge(&keys.server("edge"), &[]);
    let dir = tempfile::tempdir().unwrap();
    let image = write_image(dir.path(), &test_set(), 0);
    let run = |who: &str| {
        // No bandwidth probe: its pings are counted exactly below.
        let mut args = flags(&[
            "run",
            "--json",
            "--deadline",
            "2s",
            "--connect-timeout",
            "1s",
            "--probe-bytes",
            "0",
        ]);
        args.extend(flags(&[
            "--edge",
            &edge.endpoint,
            "--input",
            &image.display().to_string(),
        ]));
        args.extend(keys.client(who, "edge"));
        let out = device(&[], &args, Duration::from_secs(60));
        serde_json::from_str::<serde_json::Value>(out.trim()).unwrap()
    };
    let stranger = run("stranger");
    assert_eq!(stranger["source"], "fallback", "{stranger}");
    assert_eq!(
        stranger["met"], true,
        "the stranger still answers, locally, in time"
    );
    let listed = run("device");
    assert_eq!(listed["source"], "edge", "{listed}");
    let stats = edge.stop();
    assert_eq!(stats["results"], 1, "only the listed device was served");
    assert_eq!(
        stats["pings"].as_u64().unwrap(),
        3,
        "only the listed device's round-trip pings (3 empty ones)"
    );
    assert!(stats["zap_denied"].as_u64().unwrap() >= 1);
}

/// An "edge" that takes every message and never answers: the device must give it until
/// the deadline and still answer in time, from the local run it made meanwhile.
#[test]
fn an_edge_that_never_answers_gets_until_the_deadline_and_costs_no_deadline() {
    let _serial = serial();
    let context = zmq::Context::new();
    let sink = context.socket(zmq::ROUTER).unwrap();
    sink.set_linger(0).unwrap();
    let endpoint = format!("tcp://127.0.0.1:{}", free_port());
    sink.bind(&endpoint).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let swallowed = {
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut messages = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if sink.poll(zmq::POLLIN, 50).unwrap() > 0 {
                    sink.recv_multipart(0).unwrap();
                    messages += 1;
                }
            }
            messages
        })
    };
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace.jsonl");
    // The emulated device (the plan's 1600×) runs exits 2 and 3 in about 460 and 575 ms
    // (predicted 449 and 566): a deadline between them, 90 ms above exit 2.
    let deadline_ms = 550.0;
    let mut args = flags(&["eval", "--json", "--deadline", "550ms", "--limit", "12"]);
    args.extend(flags(&["--edge", &endpoint, "--insecure"]));
    // A fast link, so that the plan always offloads when it may.
    args.extend(flags(&["--bandwidth", "10000000", "--rtt", "1"]));
    args.extend(flags(&["--trace", &trace.display().to_string()]));
    let out = device(&[], &args, Duration::from_secs(120));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let messages = swallowed.join().unwrap();
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let lines = read_jsonl(&trace);
    assert_eq!(lines.len(), 12, "one answer per image");
    let missed: Vec<_> = lines.iter().filter(|l| l["met"] != true).collect();
    assert!(missed.is_empty(), "answers after the deadline: {missed:?}");
    let fallbacks: Vec<_> = lines.iter().filter(|l| l["source"] == "fallback").collect();
    // Every fallback after a time-out was a request the edge received.
    let timed_out = fallbacks
        .iter()
        .filter(|l| l["fallback"] == "no reply from the edge in time")
        .count();
    assert!(
        timed_out >= 1 && messages >= timed_out,
        "{messages} messages: {report}"
    );
    for answer in &fallbacks {
        let total = answer["total_ms"].as_f64().unwrap();
        assert!(
            total > deadline_ms - 50.0,
            "gave up on the edge {:.0} ms before the deadline: {answer}",
            deadline_ms - total
        );
    }
    assert!(
        report["speculated"].as_u64().unwrap() >= fallbacks.len() as u64,
        "every fallback was computed while waiting: {report}"
    );
}

#[test]
fn a_killed_edge_costs_no_answer_and_no_deadline() {
    let _serial = serial();
    let keys = Keys::new();
    let edge = Server::edge(&keys.server("edge"), &[]);
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace.jsonl");
    let images = 100;
    // The emulated device (the plan's 1600×) runs exits 2 and 3 in about 460 and 575 ms
    // (predicted 449 and 566): a deadline between them, 90 ms above exit 2.
    let mut args = eval_args(&edge.endpoint, &trace, &keys, "550ms");
    args.extend(flags(&["--limit", &images.to_string()]));
    let mut child = spawn_device(&[], &args);
    // Kill the edge once the device is well into the run.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        if std::fs::read_to_string(&trace).is_ok_and(|t| t.lines().count() >= 40) {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    edge.kill();
    let report: serde_json::Value =
        serde_json::from_str(wait_output(&mut child, Duration::from_secs(300)).trim()).unwrap();
    let lines = read_jsonl(&trace);
    assert_eq!(lines.len(), images, "exactly one answer per image");
    let ids: HashSet<u64> = lines
        .iter()
        .map(|l| l["request_id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids.len(), images, "no request answered twice");
    let missed: Vec<_> = lines.iter().filter(|l| l["met"] != true).collect();
    assert!(missed.is_empty(), "answers after the deadline: {missed:?}");
    let sources: Vec<&str> = lines
        .iter()
        .map(|l| l["source"].as_str().unwrap())
        .collect();
    assert!(sources[..30].iter().all(|s| *s == "edge"), "{sources:?}");
    assert!(sources[60..].iter().all(|s| *s != "edge"), "{sources:?}");
    assert!(report["fallbacks"].as_u64().unwrap() >= 1, "{report}");
    assert!(
        report["speculation_cancelled"].as_u64().unwrap() >= 20,
        "each edge answer cancels the local run made meanwhile: {report}"
    );
}

#[test]
fn sixteen_devices_for_a_minute_get_their_own_answers() {
    let _serial = serial();
    let seconds: u64 = std::env::var("EDGENT_LOAD_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let keys = Keys::new();
    let edge = Server::edge(&keys.server("edge"), &["--workers", "2"]);
    let dir = tempfile::tempdir().unwrap();
    let devices = 16;
    let children: Vec<_> = (0..devices)
        .map(|i| {
            let trace = dir.path().join(format!("trace{i}.jsonl"));
            // Real devices have their own processors: here they share the edge's, so
            // they do not emulate a slow device by spinning (--slowdown 1).
            let mut args = eval_args(&edge.endpoint, &trace, &keys, "1s");
            args.extend(flags(&[
                "--slowdown",
                "1",
                "--duration",
                &format!("{seconds}s"),
            ]));
            spawn_device(&[], &args)
        })
        .collect();
    let mut answered_by_edge = 0;
    let mut total = 0;
    let mut late = 0;
    let set = test_set();
    let mut traces = Vec::new();
    for (i, mut child) in children.into_iter().enumerate() {
        let report: serde_json::Value = serde_json::from_str(
            wait_output(&mut child, Duration::from_secs(seconds + 240)).trim(),
        )
        .unwrap();
        answered_by_edge += report["from_edge"].as_u64().unwrap();
        late += report["late_replies"].as_u64().unwrap();
        let lines = read_jsonl(&dir.path().join(format!("trace{i}.jsonl")));
        assert_eq!(lines.len() as u64, report["images"].as_u64().unwrap());
        total += lines.len();
        traces.push(lines);
    }
    let most = traces.iter().map(Vec::len).max().unwrap();
    let reference = reference_classes(&set, most.min(set.len()));
    for lines in &traces {
        for (n, line) in lines.iter().enumerate() {
            // Each device classifies test images 0, 1, 2, … in order (and again).
            let i = line["image"].as_u64().unwrap() as usize;
            assert_eq!(i, n % set.len());
            let exit = line["exit"].as_u64().unwrap() as usize;
            assert_eq!(
                line["class"].as_u64().unwrap() as usize,
                reference[i][exit - 1],
                "image {i}, exit {exit}: a reply for another request? {line}"
            );
        }
    }
    let stats = edge.stop();
    let results = stats["results"].as_u64().unwrap();
    assert_eq!(stats["errors"], 0, "{stats}");
    // Every result the edge sent reached its device: used, or discarded as late.
    assert_eq!(results, answered_by_edge + late, "{stats}");
    assert!(
        10 * answered_by_edge >= 9 * total as u64,
        "{answered_by_edge} of {total}"
    );
    eprintln!(
        "16 devices, {seconds} s: {total} answers, {answered_by_edge} from the edge, {late} late replies discarded; edge served {:.1} requests/s (queue mean {:.2} ms, max {:.2} ms)",
        stats["results_per_s"], stats["queue_ms_mean"], stats["queue_ms_max"]
    );
}

#[test]
fn a_broker_spreads_devices_over_two_edges() {
    let _serial = serial();
    let keys = Keys::new();
    let (front, back) = (free_port(), free_port());
    let mut args = flags(&["broker", "--front", &format!("tcp://127.0.0.1:{front}")]);
    args.extend(flags(&["--back", &format!("tcp://127.0.0.1:{back}")]));
    args.extend(keys.broker("edge"));
    let broker = Server::start(&[], &args, "edgent-edge broker");
    let edges: Vec<Server> = ["edge", "edge2"]
        .iter()
        .map(|name| {
            let mut args = flags(&[
                "serve",
                "--workers",
                "1",
                "--broker",
                &format!("tcp://127.0.0.1:{back}"),
            ]);
            args.extend(keys.client(name, "edge"));
            Server::start(&[], &args, "serving plan")
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let children: Vec<_> = (0..4)
        .map(|i| {
            let front = format!("tcp://127.0.0.1:{front}");
            let mut args = eval_args(&front, &dir.path().join(format!("t{i}")), &keys, "1s");
            args.extend(flags(&["--limit", "60"]));
            spawn_device(&[], &args)
        })
        .collect();
    for mut child in children {
        let report: serde_json::Value =
            serde_json::from_str(wait_output(&mut child, Duration::from_secs(300)).trim()).unwrap();
        assert_eq!(report["images"], 60);
        assert!(report["from_edge"].as_u64().unwrap() >= 55, "{report}");
    }
    let edge_stats: Vec<serde_json::Value> = edges.into_iter().map(Server::stop).collect();
    let served: Vec<u64> = edge_stats
        .iter()
        .map(|s| s["results"].as_u64().unwrap())
        .collect();
    assert!(
        served.iter().all(|&n| n > 20),
        "both edges work: {served:?}"
    );
    // Pings are answered by the broker, never forwarded.
    let handled: u64 = edge_stats
        .iter()
        .map(|s| s["results"].as_u64().unwrap())
        .sum();
    assert!(edge_stats.iter().all(|s| s["pings"] == 0), "{edge_stats:?}");
    let stats = broker.stop();
    assert_eq!(stats["forwarded"].as_u64().unwrap(), handled, "{stats}");
    assert_eq!(stats["replies"].as_u64().unwrap(), handled, "{stats}");
    assert!(stats["pongs"].as_u64().unwrap() >= 4, "{stats}");
}

/// Sends `signal` (e.g. `-STOP`) to a server process.
fn signal(server: &Server, signal: &str) {
    let pid = server.child.as_ref().unwrap().id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap()
            .success()
    );
}

/// Sends a valid exit-1 edge-only request and waits up to `timeout` for its reply.
fn ask(client: &RawClient, id: u64, timeout: Duration) -> Option<Message> {
    let request = Message::infer(
        plan_digest(),
        id,
        1,
        0,
        0,
        &[1, 32, 32],
        Payload::U8(vec![90; 1024]),
    );
    client.send(&request.encode());
    let until = Instant::now() + timeout;
    while Instant::now() < until {
        let left = until.saturating_duration_since(Instant::now()).as_millis() as i64;
        if client.socket.poll(zmq::POLLIN, left.max(1)).unwrap() > 0 {
            let reply = Message::decode(&client.socket.recv_multipart(0).unwrap()).unwrap();
            if reply.header.request_id == id {
                return Some(reply);
            }
        }
    }
    None
}

/// Asks until an edge answers with a result (bounded); returns how long it took.
fn until_served(client: &RawClient, first_id: u64, within: Duration) -> Duration {
    let started = Instant::now();
    let mut id = first_id;
    while started.elapsed() < within {
        if let Some(reply) = ask(client, id, Duration::from_secs(2))
            && reply.header.kind == MessageType::Result
        {
            return started.elapsed();
        }
        id += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("no edge served within {within:?}");
}

/// The broker's heartbeats: a frozen edge is dropped within 3 s and the request it holds
/// is answered at once; a restarted edge rejoins; after a broker restart the edge
/// reconnects by itself; devices never restart.
#[test]
fn a_frozen_edge_is_dropped_in_3_s_and_edges_rejoin_after_restarts() {
    let _serial = serial();
    let (front, back) = (free_port(), free_port());
    let broker_args = flags(&[
        "broker",
        "--insecure",
        "--front",
        &format!("tcp://127.0.0.1:{front}"),
        "--back",
        &format!("tcp://127.0.0.1:{back}"),
    ]);
    let edge_args = flags(&[
        "serve",
        "--insecure",
        "--workers",
        "1",
        "--broker",
        &format!("tcp://127.0.0.1:{back}"),
    ]);
    let broker = Server::start(&[], &broker_args, "edgent-edge broker");
    let edge = Server::start(&[], &edge_args, "serving plan");
    let client = RawClient::new(&format!("tcp://127.0.0.1:{front}"));
    until_served(&client, 1, Duration::from_secs(10));

    // Freeze the edge: the request it takes is answered `unavailable` within 3 s.
    signal(&edge, "-STOP");
    let frozen = Instant::now();
    let reply = ask(&client, 100, Duration::from_secs(10)).expect("an answer, not silence");
    let took = frozen.elapsed();
    assert_eq!(reply.header.kind, MessageType::Error, "{reply:?}");
    assert_eq!(
        ErrorCode::from_u16(reply.header.code),
        Some(ErrorCode::Unavailable)
    );
    assert!(
        took <= Duration::from_secs(3),
        "dead edge detected after {took:?}"
    );
    eprintln!("frozen edge detected, its request answered, after {took:?}");
    edge.kill();

    // A new edge joins the running broker.
    let edge = Server::start(&[], &edge_args, "serving plan");
    let rejoined = until_served(&client, 200, Duration::from_secs(10));
    eprintln!("restarted edge serving after {rejoined:?}");

    // The broker restarts: the edge finds it again, the device's socket reconnects.
    broker.kill();
    let broker = Server::start(&[], &broker_args, "edgent-edge broker");
    let back_in = until_served(&client, 300, Duration::from_secs(15));
    eprintln!("edge back behind the restarted broker after {back_in:?}");
    let stats = edge.stop();
    assert!(stats["results"].as_u64().unwrap() >= 2, "{stats}");
    let stats = broker.stop();
    assert_eq!(stats["edges_left"], 1, "the edge said goodbye: {stats}");
}
