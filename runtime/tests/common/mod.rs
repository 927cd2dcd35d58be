//! What the in-process edge tests share: a free port, and `serve` on a thread.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::thread::JoinHandle;
use std::time::Duration;

use runtime::Engine;
use runtime::edge::{EdgeConfig, EdgeStats, ServedPlan, serve};

/// A TCP port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An edge serving `engine` on a thread, listening once this returns; set the flag to stop
/// it, and join the handle for its last counters.
pub fn start_edge(
    engine: Arc<dyn Engine>,
    plan: &ServedPlan,
    config: EdgeConfig,
) -> (Arc<AtomicBool>, JoinHandle<EdgeStats>) {
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let running = {
        let (stop, plan) = (Arc::clone(&stop), plan.clone());
        std::thread::spawn(move || {
            serve(
                &engine,
                &plan,
                &config,
                &stop,
                || ready_tx.send(()).unwrap(),
                |_| {},
            )
            .unwrap()
        })
    };
    ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    (stop, running)
}
