//! The edge server in process, on a fake engine: a job that panics is still answered, a
//! job that waited past its deadline is not run, and once `serve` returns no thread of it
//! is left (the ZAP handler used to block forever, keeping the ZeroMQ context alive, so its
//! last replies were never flushed). One test in its own process: it counts threads.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

mod common;
use common::{free_port, start_edge};
use runtime::edge::{EdgeConfig, Endpoint, Heartbeat, ServedPlan};
use runtime::engine::AfterLayer;
use runtime::wire::protocol::{ErrorCode, Message, MessageType, Payload};
use runtime::wire::transport::{AllowList, KeyPair, Security};
use runtime::{Activation, BranchyAlexNetConfig, Engine, EngineKind, LayerTable, ModelError};

/// Answers every exit with constant logits, except exit 2, which panics.
#[derive(Debug)]
struct Fake {
    table: LayerTable,
    runs: AtomicU64,
}

impl Engine for Fake {
    fn kind(&self) -> EngineKind {
        EngineKind::Generated
    }

    fn describe(&self) -> String {
        "fake".into()
    }

    fn table(&self) -> &LayerTable {
        &self.table
    }

    fn run(
        &self,
        exit: usize,
        _range: Range<usize>,
        _x: &Activation,
        _after_layer: AfterLayer<'_>,
    ) -> Result<Activation, ModelError> {
        self.runs.fetch_add(1, Ordering::Relaxed);
        assert_ne!(exit, 2, "exit 2 of the fake engine panics");
        Activation::from_values(
            vec![exit as f32; self.table.classes],
            &[1, self.table.classes],
        )
    }

    fn warm_up(&self) {}
}

/// Threads of this process whose name starts with `prefix`.
fn threads(prefix: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with(prefix))
        .count()
}

#[test]
fn panics_are_answered_late_jobs_skipped_and_nothing_outlives_serve() {
    let pair = || KeyPair::generate().unwrap();
    let (server, client) = (pair(), pair());
    let port = free_port();
    let table = BranchyAlexNetConfig::new().layer_table();
    let plan = ServedPlan {
        digest: [3; 32],
        mean: vec![0.5],
        std: vec![0.25],
        max_payload: runtime::edge::largest_tensor_bytes(&table),
    };
    let fake = Arc::new(Fake {
        table,
        runs: AtomicU64::new(0),
    });
    let engine: Arc<dyn Engine> = fake.clone();
    let config = EdgeConfig {
        endpoint: Endpoint::Bind(format!("tcp://127.0.0.1:{port}")),
        workers: 2,
        queue: 8,
        security: Security::curve_server(server.clone(), AllowList::new([client.public])),
        reload: None,
        heartbeat: Heartbeat::default(),
        metrics: None,
        max_batch: 1,
        max_wait: Duration::ZERO,
    };
    let (stop, running) = start_edge(engine, &plan, config);
    assert_eq!(threads("edgent-zap"), 1);

    let context = zmq::Context::new();
    let device = context.socket(zmq::DEALER).unwrap();
    device.set_linger(0).unwrap();
    Security::curve_client(client, server.public)
        .apply_client(&device)
        .unwrap();
    device.connect(&format!("tcp://127.0.0.1:{port}")).unwrap();
    let ask = |id: u64, exit: u8, deadline_us: u32| {
        let request = Message::infer(
            plan.digest,
            id,
            exit,
            0,
            deadline_us,
            &[1, 32, 32],
            Payload::U8(vec![7; 1024]),
        );
        device.send_multipart(request.encode(), 0).unwrap();
        assert!(
            device.poll(zmq::POLLIN, 10_000).unwrap() > 0,
            "no reply to {id}"
        );
        let reply = Message::decode(&device.recv_multipart(0).unwrap()).unwrap();
        assert_eq!(reply.header.request_id, id);
        reply
    };
    let code = |m: &Message| ErrorCode::from_u16(m.header.code);

    let ok = ask(1, 1, 0);
    assert_eq!(ok.header.kind, MessageType::Result);
    let panicked = ask(2, 2, 0);
    assert_eq!(code(&panicked), Some(ErrorCode::Internal), "{panicked:?}");
    let runs = fake.runs.load(Ordering::Relaxed);
    // 1 µs: it has always waited longer than that for a worker.
    let late = ask(3, 1, 1);
    assert_eq!(code(&late), Some(ErrorCode::Expired), "{late:?}");
    assert_eq!(
        fake.runs.load(Ordering::Relaxed),
        runs,
        "the late job was not run"
    );
    let again = ask(4, 3, 0);
    assert_eq!(
        again.header.kind,
        MessageType::Result,
        "workers survive a panic"
    );

    stop.store(true, Ordering::Relaxed);
    let stats = running.join().unwrap();
    assert_eq!(stats.results, 2);
    assert_eq!(stats.errors_by_code["internal"], 1);
    assert_eq!(stats.errors_by_code["expired"], 1);
    assert_eq!(threads("edgent-zap"), 0, "the ZAP handler ended with serve");
    assert_eq!(threads("edgent-worker"), 0);
}
