//! Dynamic batching at the edge, in process on the generated engine's kernels (seeded
//! weights): queued requests for the same (exit, partition) run as one batch of at most
//! `max_batch`, requests of another kind wait for their own batch, and every reply carries
//! exactly the logits its own request gives alone.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

mod common;
use common::{free_port, start_edge};
use runtime::edge::{EdgeConfig, Endpoint, Heartbeat, ServedPlan};
use runtime::model::normalize;
use runtime::wire::protocol::{Message, MessageType, Payload};
use runtime::wire::transport::Security;
use runtime::{Activation, BranchyAlexNetConfig, Engine, Isa, PackedNetwork};

#[test]
fn queued_requests_of_one_kind_run_as_one_batch_and_get_their_own_logits() {
    let port = free_port();
    let model = BranchyAlexNetConfig::new().init_seeded(&runtime::Backend::Flex.device(), 7);
    let table = model.layer_table().clone();
    let engine =
        Arc::new(PackedNetwork::new(&table, &model.weights(), Isa::detect().unwrap()).unwrap());
    let plan = ServedPlan {
        digest: [5; 32],
        mean: vec![0.5],
        std: vec![0.25],
        max_payload: runtime::edge::largest_tensor_bytes(&table),
    };
    let config = EdgeConfig {
        endpoint: Endpoint::Bind(format!("tcp://127.0.0.1:{port}")),
        workers: 1,
        queue: 64,
        security: Security::Null,
        reload: None,
        heartbeat: Heartbeat::default(),
        metrics: None,
        max_batch: 4,
        // Long enough for every request below to be queued when the first batch forms.
        max_wait: Duration::from_millis(50),
    };
    let (stop, running) = start_edge(engine.clone(), &plan, config);

    let context = zmq::Context::new();
    let device = context.socket(zmq::DEALER).unwrap();
    device.set_linger(0).unwrap();
    device.connect(&format!("tcp://127.0.0.1:{port}")).unwrap();
    // 12 images at once, exits 1 and 3 interleaved 2:1 (a batch of the wrong exit would
    // give some request another exit's logits); image k is a ramp scaled by k.
    let exit_of = |id: u64| if id % 3 == 2 { 3 } else { 1 };
    let image = |id: u64| -> Vec<u8> {
        (0..1024u64)
            .map(|i| ((i * (id + 1) * 7) % 256) as u8)
            .collect()
    };
    for id in 0..12u64 {
        let request = Message::infer(
            plan.digest,
            id,
            exit_of(id),
            0,
            0,
            &[1, 32, 32],
            Payload::U8(image(id)),
        );
        device.send_multipart(request.encode(), 0).unwrap();
    }
    // Each reply names the size of its batch: over the replies, 1/size adds up to the
    // number of batches.
    let mut batch_shares = 0.0;
    let mut largest = 0;
    for _ in 0..12 {
        assert!(
            device.poll(zmq::POLLIN, 10_000).unwrap() > 0,
            "a reply is missing"
        );
        let reply = Message::decode(&device.recv_multipart(0).unwrap()).unwrap();
        assert_eq!(reply.header.kind, MessageType::Result, "{reply:?}");
        let id = reply.header.request_id;
        let exit = usize::from(exit_of(id));
        assert_eq!(usize::from(reply.header.exit), exit);
        let batch = reply.header.batch;
        assert!((1..=4).contains(&batch), "request {id}: batch {batch}");
        batch_shares += 1.0 / f64::from(batch);
        largest = largest.max(u64::from(batch));
        let alone = Activation::from_values(
            normalize(&image(id), &plan.mean, &plan.std),
            &[1, 1, 32, 32],
        )
        .unwrap();
        let n = engine.exit_len(exit).unwrap();
        let want = engine.forward_slice(exit, 0..n, &alone).unwrap();
        assert_eq!(
            reply.payload,
            Payload::F32(want.into_values()),
            "request {id}: its own logits"
        );
    }
    stop.store(true, Ordering::Relaxed);
    let stats = running.join().unwrap();
    println!("{stats:?}");
    assert_eq!(stats.results, 12);
    assert!((2..=4).contains(&stats.batch_max), "{stats:?}");
    assert!(stats.batches < 12, "queued requests batch: {stats:?}");
    assert!(
        (batch_shares - stats.batches as f64).abs() < 1e-9,
        "the replies' batch sizes ({batch_shares} batches by them) are the batches formed: {stats:?}"
    );
    assert_eq!(largest, stats.batch_max);
}
