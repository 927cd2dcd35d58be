//! Transport benchmark (`cargo bench --workspace --bench transport`):
//!
//! 1. Overhead of the protocol over ZeroMQ (NULL and CURVE) against the bare transfer of
//!    the same bytes over a plain TCP socket, per request, on loopback, for the payloads
//!    the plan sends (the raw image at p = 0 and activations).
//! 2. Edge throughput against the number of devices sending at once (edge-only requests of
//!    exit 5, 2 workers) on the generated engine and on burn-flex, and their ratio.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use generated::{load_engine, plan, plan_digest, served_plan};
use runtime::edge::{EdgeConfig, Endpoint, serve};
use runtime::wire::protocol::{Header, Message, MessageType, Payload};
use runtime::wire::transport::{AllowList, KeyPair, Security, ZAP_DOMAIN, start_zap};
use runtime::{Backend, EngineKind};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Median round trip of `bytes` up and 40 bytes back over plain TCP, µs.
fn tcp_round_trip(bytes: usize, repeats: usize) -> f64 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_nodelay(true).unwrap();
        let mut buf = vec![0u8; bytes];
        for _ in 0..repeats {
            s.read_exact(&mut buf).unwrap();
            s.write_all(&[0u8; 40]).unwrap();
        }
    });
    let mut c = TcpStream::connect(address).unwrap();
    c.set_nodelay(true).unwrap();
    let payload = vec![1u8; bytes];
    let mut reply = [0u8; 40];
    let mut times = Vec::new();
    for _ in 0..repeats {
        let t = Instant::now();
        c.write_all(&payload).unwrap();
        c.read_exact(&mut reply).unwrap();
        times.push(t.elapsed().as_secs_f64() * 1e6);
    }
    server.join().unwrap();
    median(times)
}

/// A ZeroMQ ping server speaking the protocol (the edge's ping path), for `security`.
fn zmq_round_trip(bytes: usize, repeats: usize, curve: bool) -> f64 {
    let context = zmq::Context::new();
    let server_keys = zmq::CurveKeyPair::new().unwrap();
    let client_keys = zmq::CurveKeyPair::new().unwrap();
    let pair = |k: &zmq::CurveKeyPair| KeyPair {
        public: k.public_key,
        secret: k.secret_key,
    };
    // Held for the whole bench: dropping it stops the handler.
    let _zap = curve.then(|| {
        let allow = AllowList::new([client_keys.public_key]);
        start_zap(&context, &[(ZAP_DOMAIN, &allow)], None).unwrap()
    });
    let (server_security, client_security) = if curve {
        (
            Security::Curve {
                own: pair(&server_keys),
                server: None,
                allow: AllowList::default(),
            },
            Security::Curve {
                own: pair(&client_keys),
                server: Some(server_keys.public_key),
                allow: AllowList::default(),
            },
        )
    } else {
        (Security::Null, Security::Null)
    };
    let router = context.socket(zmq::ROUTER).unwrap();
    server_security.apply_server(&router, ZAP_DOMAIN).unwrap();
    router.bind("tcp://127.0.0.1:*").unwrap();
    let endpoint = router.get_last_endpoint().unwrap().unwrap();
    let server = std::thread::spawn(move || {
        for _ in 0..repeats {
            let mut frames = router.recv_multipart(0).unwrap();
            let msg = Message::decode(&frames[1..]).unwrap();
            frames.truncate(1);
            let mut h = Header::new(
                MessageType::Result,
                msg.header.plan_digest,
                msg.header.request_id,
            );
            h.dtype = runtime::wire::protocol::Dtype::F32;
            h.shape = vec![10];
            frames.extend(
                Message {
                    header: h,
                    payload: Payload::F32(vec![0.0; 10]),
                }
                .encode(),
            );
            router.send_multipart(frames, 0).unwrap();
        }
    });
    let dealer = context.socket(zmq::DEALER).unwrap();
    client_security.apply_client(&dealer).unwrap();
    dealer.connect(&endpoint).unwrap();
    let mut times = Vec::new();
    for i in 0..repeats {
        let msg = Message::infer(
            [0; 32],
            i as u64,
            4,
            1,
            0,
            &[bytes],
            Payload::U8(vec![1; bytes]),
        );
        let t = Instant::now();
        dealer.send_multipart(msg.encode(), 0).unwrap();
        let reply = dealer.recv_multipart(0).unwrap();
        times.push(t.elapsed().as_secs_f64() * 1e6);
        assert_eq!(reply.len(), 2);
    }
    server.join().unwrap();
    // The first round trips include the handshake: drop them.
    median(times[repeats / 10..].to_vec())
}

fn throughput(engine: EngineKind, devices: usize, seconds: f64) -> f64 {
    let engine = load_engine(engine, Backend::default()).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("tcp://127.0.0.1:{port}");
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let server = {
        let (stop, endpoint) = (Arc::clone(&stop), endpoint.clone());
        std::thread::spawn(move || {
            let config = EdgeConfig {
                endpoint: Endpoint::Bind(endpoint),
                workers: 2,
                queue: 1024,
                security: Security::Null,
                reload: None,
                heartbeat: Default::default(),
                metrics: None,
                max_batch: 1,
                max_wait: Duration::ZERO,
            };
            serve(
                &engine,
                &served_plan(),
                &config,
                &stop,
                || ready_tx.send(()).unwrap(),
                |_| {},
            )
            .unwrap()
        })
    };
    ready_rx.recv().unwrap();
    let exit = plan::EXITS;
    let started = Instant::now();
    let clients: Vec<_> = (0..devices)
        .map(|d| {
            let endpoint = endpoint.clone();
            std::thread::spawn(move || {
                let context = zmq::Context::new();
                let dealer = context.socket(zmq::DEALER).unwrap();
                dealer.connect(&endpoint).unwrap();
                let mut done = 0u64;
                while started.elapsed().as_secs_f64() < seconds {
                    let id = (d as u64) << 32 | done;
                    let msg = Message::infer(
                        plan_digest(),
                        id,
                        exit as u8,
                        0,
                        0,
                        &plan::INPUT,
                        Payload::U8(vec![100; plan::INPUT.iter().product()]),
                    );
                    dealer.send_multipart(msg.encode(), 0).unwrap();
                    let reply = Message::decode(&dealer.recv_multipart(0).unwrap()).unwrap();
                    assert_eq!(reply.header.request_id, id);
                    done += 1;
                }
                done
            })
        })
        .collect();
    let total: u64 = clients.into_iter().map(|c| c.join().unwrap()).sum();
    let rate = total as f64 / started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    server.join().unwrap();
    rate
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not: then run briefly.
    let full = std::env::args().any(|a| a == "--bench");
    let repeats = if full { 2000 } else { 50 };
    println!("transport overhead per request, loopback (median round trip, 40-byte reply):");
    println!(
        "{:>9} {:>10} {:>10} {:>10} {:>12} {:>12}",
        "bytes", "tcp µs", "zmq µs", "curve µs", "zmq/tcp", "curve/tcp"
    );
    // The raw image, and the activations after conv1/pool1 and the first FC layer.
    for bytes in [1024usize, 4096, 32 * 1024, 128 * 1024] {
        let tcp = tcp_round_trip(bytes, repeats);
        let null = zmq_round_trip(bytes, repeats, false);
        let curve = zmq_round_trip(bytes, repeats, true);
        println!(
            "{bytes:>9} {tcp:>10.1} {null:>10.1} {curve:>10.1} {:>11.2}× {:>11.2}×",
            null / tcp,
            curve / tcp
        );
    }
    let seconds = if full { 5.0 } else { 0.5 };
    println!("\nedge throughput, results/s (2 workers, edge-only requests of exit 5):");
    println!(
        "{:>7} {:>10} {:>10} {:>16}",
        "devices", "generated", "burn", "generated/burn"
    );
    for devices in [1, 2, 4, 8, 16] {
        let generated = throughput(EngineKind::Generated, devices, seconds);
        let burn = throughput(EngineKind::Burn, devices, seconds);
        println!(
            "{devices:>7} {generated:>10.1} {burn:>10.1} {:>15.2}×",
            generated / burn
        );
    }
}
