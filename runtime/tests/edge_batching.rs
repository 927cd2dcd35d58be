//! Dynamic batching at the edge, in process on an echoing engine: queued requests for the
//! same (exit, partition) run as one batch of at most `max_batch`, requests of another kind
//! wait for their own batch, and every reply carries its own request's logits.

use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod common;
use common::{free_port, start_edge};
use runtime::edge::{EdgeConfig, Endpoint, Heartbeat, ServedPlan};
use runtime::engine::AfterLayer;
use runtime::wire::protocol::{Message, MessageType, Payload};
use runtime::wire::transport::Security;
use runtime::{Activation, BranchyAlexNetConfig, Engine, EngineKind, LayerTable, ModelError};

/// Logit `c` of a sample is its first input value + 10 × exit + c; each run takes 20 ms (so
/// that requests queue behind it) and is recorded as (exit, batch size).
#[derive(Debug)]
struct Echo {
    table: LayerTable,
    runs: Mutex<Vec<(usize, usize)>>,
}

impl Engine for Echo {
    fn kind(&self) -> EngineKind {
        EngineKind::Generated
    }

    fn describe(&self) -> String {
        "echo".into()
    }

    fn table(&self) -> &LayerTable {
        &self.table
    }

    fn run(
        &self,
        exit: usize,
        range: Range<usize>,
        x: &Activation,
        after_layer: AfterLayer<'_>,
    ) -> Result<Activation, ModelError> {
        let batch = x.dims()[0];
        self.runs.lock().unwrap().push((exit, batch));
        // One 20 ms "layer", reported as the engines report theirs.
        std::thread::sleep(Duration::from_millis(20));
        after_layer(range.start)?;
        let per_sample = x.values().len() / batch;
        let classes = self.table.classes;
        let logits = x
            .values()
            .chunks(per_sample)
            .flat_map(|s| (0..classes).map(move |c| s[0] + 10.0 * exit as f32 + c as f32))
            .collect();
        Activation::from_values(logits, &[batch, classes])
    }

    fn warm_up(&self) {}
}

#[test]
fn queued_requests_of_one_kind_run_as_one_batch_and_get_their_own_logits() {
    let port = free_port();
    let table = BranchyAlexNetConfig::new().layer_table();
    let plan = ServedPlan {
        digest: [5; 32],
        mean: vec![0.5],
        std: vec![0.25],
        max_payload: runtime::edge::largest_tensor_bytes(&table),
    };
    let echo = Arc::new(Echo {
        table,
        runs: Mutex::new(Vec::new()),
    });
    let engine: Arc<dyn Engine> = echo.clone();
    let config = EdgeConfig {
        endpoint: Endpoint::Bind(format!("tcp://127.0.0.1:{port}")),
        workers: 1,
        queue: 64,
        security: Security::Null,
        reload: None,
        heartbeat: Heartbeat::default(),
        metrics: None,
        max_batch: 4,
        max_wait: Duration::ZERO,
    };
    let (stop, running) = start_edge(engine, &plan, config);

    let context = zmq::Context::new();
    let device = context.socket(zmq::DEALER).unwrap();
    device.set_linger(0).unwrap();
    device.connect(&format!("tcp://127.0.0.1:{port}")).unwrap();
    // 12 images at once: exits 1 and 3 interleaved 2:1, image k all pixels k.
    let exit_of = |id: u64| if id % 3 == 2 { 3 } else { 1 };
    for id in 0..12u64 {
        let request = Message::infer(
            plan.digest,
            id,
            exit_of(id),
            0,
            0,
            &[1, 32, 32],
            Payload::U8(vec![id as u8 * 20; 1024]),
        );
        device.send_multipart(request.encode(), 0).unwrap();
    }
    let mut edge_us = Vec::new();
    for _ in 0..12 {
        assert!(
            device.poll(zmq::POLLIN, 10_000).unwrap() > 0,
            "a reply is missing"
        );
        let reply = Message::decode(&device.recv_multipart(0).unwrap()).unwrap();
        assert_eq!(reply.header.kind, MessageType::Result, "{reply:?}");
        let id = reply.header.request_id;
        let pixel = (id as f32 * 20.0 / 255.0 - 0.5) / 0.25;
        let Payload::F32(logits) = &reply.payload else {
            panic!("logits as f32")
        };
        let want = pixel + 10.0 * f32::from(exit_of(id));
        assert!((logits[0] - want).abs() < 1e-5, "request {id}: {logits:?}");
        assert_eq!(reply.header.exit, exit_of(id));
        edge_us.push(reply.header.edge_us);
    }
    stop.store(true, Ordering::Relaxed);
    let stats = running.join().unwrap();
    let runs = echo.runs.lock().unwrap().clone();
    println!("runs (exit, batch): {runs:?}; stats: {stats:?}");
    assert_eq!(
        runs.iter().map(|r| r.1).sum::<usize>(),
        12,
        "each request once"
    );
    assert!(runs.iter().all(|&(_, b)| (1..=4).contains(&b)), "{runs:?}");
    assert!(
        runs.iter().any(|&(_, b)| b > 1),
        "queued requests batch: {runs:?}"
    );
    assert!(runs.len() < 12);
    assert_eq!(stats.results, 12);
    assert_eq!(stats.batches, runs.len() as u64);
    assert_eq!(
        stats.batch_max,
        runs.iter().map(|r| r.1).max().unwrap() as u64
    );
    // A batch's compute time is each of its requests' edge time (20 ms a run here).
    assert!(edge_us.iter().all(|&us| us >= 20_000), "{edge_us:?}");
}
