//! The edge server (DESIGN.md §7): a ROUTER socket (or a DEALER connected to a
//! [`broker`]) in front of a pool of workers that run the suffix `[p, N)` of the requested
//! exit. The socket thread validates every message and answers bad ones itself; workers
//! only ever see well-formed requests for the served plan.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::LayerTable;
use crate::engine::{Activation, Engine};
use crate::metrics::{Timings, edge_text, serve_metrics};
use crate::model::normalize;
use crate::slowdown::run_slice;
use crate::wire::encoding::Values;
use crate::wire::protocol::{Accept, ErrorCode, Header, Message, MessageType, Payload};
use crate::wire::transport::{
    AllowList, Security, TransportError, ZAP_DOMAIN, ZapCounters, recv_authenticated, start_zap,
    zmq_err,
};

/// What the edge serves: the plan digest devices must present, and the input normalisation.
#[derive(Debug, Clone)]
pub struct ServedPlan {
    /// SHA-256 of the plan.
    pub digest: [u8; 32],
    /// Per-channel mean of the input normalisation.
    pub mean: Vec<f32>,
    /// Per-channel standard deviation of the input normalisation.
    pub std: Vec<f32>,
    /// Largest payload a request may carry, bytes: the plan's largest tensor
    /// ([`largest_tensor_bytes`]). Also the size libzmq drops frames above.
    pub max_payload: usize,
}

/// Bytes of the largest tensor a device may send for `table`: the raw `u8` image, or
/// the largest activation entering any layer of any exit in its largest encoding (`f32`;
/// a quantised tensor is smaller even with its scales, a compressed one is refused when it
/// does not inflate to exactly its tensor).
pub fn largest_tensor_bytes(table: &LayerTable) -> usize {
    let image: usize = table.input.iter().product();
    table
        .exits
        .iter()
        .flat_map(|e| e.layers.iter())
        .filter_map(|l| {
            let elements = l.input.iter().product::<usize>();
            Values::ALL
                .into_iter()
                .filter_map(|v| v.body_len(elements, v.groups(&l.input)))
                .max()
        })
        .fold(image, usize::max)
}

/// Framing overhead allowed above the payload limit in `ZMQ_MAXMSGSIZE` (a CURVE
/// `MESSAGE` command adds 33 bytes to each frame; routing ids and the 80-byte header
/// are far below this).
const FRAME_SLACK: usize = 1024;

/// The `ZMQ_MAXMSGSIZE` for sockets that face devices: libzmq drops a larger frame (and
/// the connection that sent it) before allocating it.
pub fn max_frame_bytes(max_payload: usize) -> i64 {
    i64::try_from(max_payload.saturating_add(FRAME_SLACK)).unwrap_or(i64::MAX)
}

/// Where the edge listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// Bind a ROUTER socket here, e.g. `tcp://*:5555`: devices connect directly.
    Bind(String),
    /// Connect to a broker's back end here, e.g. `tcp://broker:5556`.
    Broker(String),
}

/// Settings of [`serve`].
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    /// Where to listen.
    pub endpoint: Endpoint,
    /// Worker threads, each with its own copy of the model.
    pub workers: usize,
    /// Requests that may wait for a worker; more are refused with `busy`.
    pub queue: usize,
    /// CURVE with an allow-list, or NULL.
    pub security: Security,
    /// Set (by SIGHUP) to reload the allow-list now; it is also reloaded when its file
    /// changes.
    pub reload: Option<Arc<AtomicBool>>,
    /// Heartbeats with the broker ([`Endpoint::Broker`] only).
    pub heartbeat: Heartbeat,
    /// Serve Prometheus metrics over HTTP here (e.g. `127.0.0.1:9100`).
    pub metrics: Option<String>,
    /// Dynamic batching: requests for the same (exit, partition) waiting for a worker run
    /// as one batch of up to this many (1: one at a time).
    pub max_batch: usize,
    /// How long a worker holding a request waits for more of its kind to fill a batch (0:
    /// it takes only those already queued, so an idle edge adds no latency).
    pub max_wait: Duration,
}

/// Heartbeats between a broker and its edges, both ways (the zguide's "Paranoid
/// Pirate"): each side sends one every `interval`, and takes the other for dead after
/// `liveness` intervals without hearing from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    /// Time between heartbeats.
    pub interval: Duration,
    /// Intervals of silence after which the peer is dead.
    pub liveness: u32,
}

impl Default for Heartbeat {
    /// Two per second; dead after 2.5 s of silence (so a peer that freezes is found
    /// within 2.5 s of its last heartbeat, at most 3 s after it froze).
    fn default() -> Self {
        Self {
            interval: Duration::from_millis(500),
            liveness: 5,
        }
    }
}

impl Heartbeat {
    /// Silence after which the peer is dead.
    pub fn timeout(&self) -> Duration {
        self.interval * self.liveness.max(1)
    }
}

/// Counters the operator can read (`--stats FILE`, and on shutdown).
#[derive(Debug, Default)]
pub struct EdgeCounters {
    /// Inference requests received (well-formed or not).
    pub requests: AtomicU64,
    /// Results sent.
    pub results: AtomicU64,
    /// Error replies sent, by code (index = code).
    pub errors: [AtomicU64; ErrorCode::ALL.len() + 1],
    /// Pings answered.
    pub pings: AtomicU64,
    /// Total queue time of served requests, µs.
    pub queue_us: AtomicU64,
    /// Longest queue time, µs.
    pub queue_us_max: AtomicU64,
    /// Total compute time of served requests, µs.
    pub compute_us: AtomicU64,
    /// Times the edge reconnected to a silent broker.
    pub reconnects: AtomicU64,
    /// Batches run (a request run alone is a batch of 1).
    pub batches: AtomicU64,
    /// Largest batch run.
    pub batch_max: AtomicU64,
    /// Histograms of queue and compute time (for `--metrics`).
    pub timings: Timings,
}

/// A snapshot of [`EdgeCounters`] for humans and JSON.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EdgeStats {
    /// Seconds since the server started.
    pub uptime_s: f64,
    /// Inference requests received.
    pub requests: u64,
    /// Results sent.
    pub results: u64,
    /// Error replies sent.
    pub errors: u64,
    /// Error replies by code name.
    pub errors_by_code: std::collections::BTreeMap<String, u64>,
    /// Pings answered.
    pub pings: u64,
    /// Mean queue time of served requests, ms.
    pub queue_ms_mean: f64,
    /// Longest queue time, ms.
    pub queue_ms_max: f64,
    /// Mean compute time of served requests, ms.
    pub compute_ms_mean: f64,
    /// Results per second since start.
    pub results_per_s: f64,
    /// CURVE handshakes admitted by the ZAP handler.
    pub zap_allowed: u64,
    /// CURVE handshakes refused (key not on the allow-list).
    pub zap_denied: u64,
    /// Messages dropped because their key was removed from the allow-list.
    pub zap_revoked: u64,
    /// Allow-list reloads.
    pub allow_reloads: u64,
    /// Keys on the allow-list now.
    pub allow_keys: u64,
    /// Times the edge reconnected to a silent broker.
    pub reconnects: u64,
    /// Batches run.
    pub batches: u64,
    /// Results per batch, on average.
    pub batch_mean: f64,
    /// Largest batch run.
    pub batch_max: u64,
}

impl EdgeCounters {
    fn error(&self, code: ErrorCode) {
        self.error_code(code as u16);
    }

    fn error_code(&self, code: u16) {
        if let Some(n) = self.errors.get(usize::from(code)) {
            n.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The current values.
    pub fn snapshot(
        &self,
        started: Instant,
        zap: Option<&ZapCounters>,
        allow: Option<&AllowList>,
    ) -> EdgeStats {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let results = load(&self.results);
        let errors_by_code: std::collections::BTreeMap<String, u64> = ErrorCode::ALL
            .iter()
            .map(|&c| (c.name().to_string(), load(&self.errors[c as usize])))
            .filter(|(_, n)| *n > 0)
            .collect();
        let per = |total: u64| {
            if results == 0 {
                0.0
            } else {
                total as f64 / results as f64 / 1e3
            }
        };
        let uptime_s = started.elapsed().as_secs_f64();
        EdgeStats {
            uptime_s,
            requests: load(&self.requests),
            results,
            errors: errors_by_code.values().sum(),
            errors_by_code,
            pings: load(&self.pings),
            queue_ms_mean: per(load(&self.queue_us)),
            queue_ms_max: load(&self.queue_us_max) as f64 / 1e3,
            compute_ms_mean: per(load(&self.compute_us)),
            results_per_s: results as f64 / uptime_s.max(1e-9),
            zap_allowed: zap.map_or(0, |z| load(&z.allowed)),
            zap_denied: zap.map_or(0, |z| load(&z.denied)),
            zap_revoked: zap.map_or(0, |z| load(&z.revoked)),
            allow_reloads: zap.map_or(0, |z| load(&z.reloads)),
            allow_keys: allow.map_or(0, |a| a.len() as u64),
            reconnects: load(&self.reconnects),
            batches: load(&self.batches),
            batch_mean: results as f64 / load(&self.batches).max(1) as f64,
            batch_max: load(&self.batch_max),
        }
    }
}

/// A validated request waiting for a worker.
struct Job {
    envelope: Vec<Vec<u8>>,
    header: Header,
    input: Vec<f32>,
    received: Instant,
}

const RESULTS: &str = "inproc://edgent-edge-results";

/// Runs the edge until `stop` is set (e.g. by SIGINT/SIGTERM). `ready` is called once the
/// socket listens. `stats` is called about once a second with the counters.
///
/// On shutdown the edge takes no new work, keeps sending the replies of the requests its
/// workers still hold until they are done, then closes its sockets and ends the ZeroMQ
/// context, which flushes the last replies (for up to a second).
pub fn serve(
    engine: &Arc<dyn Engine>,
    plan: &ServedPlan,
    config: &EdgeConfig,
    stop: &AtomicBool,
    ready: impl FnOnce(),
    mut stats: impl FnMut(&EdgeStats),
) -> Result<EdgeStats, TransportError> {
    config.security.check()?;
    engine.warm_up();
    let started = Instant::now();
    let context = zmq::Context::new();
    let zap = match (&config.endpoint, config.security.allow_list()) {
        (Endpoint::Bind(_), Some(allow)) => Some(start_zap(
            &context,
            &[(ZAP_DOMAIN, allow)],
            config.reload.clone(),
        )?),
        _ => None,
    };
    let results = context
        .socket(zmq::PULL)
        .map_err(zmq_err("creating the results socket"))?;
    results
        .bind(RESULTS)
        .map_err(zmq_err("binding the results socket"))?;
    let mut front = Front::open(&context, config, plan)?;

    let counters = Arc::new(EdgeCounters::default());
    let zap_counters = zap.as_ref().map(|z| Arc::clone(&z.counters));
    let allow = match config.endpoint {
        Endpoint::Bind(_) => config.security.allow_list().cloned(),
        Endpoint::Broker(_) => None,
    };
    let snapshot = {
        let (counters, zap, allow) = (Arc::clone(&counters), zap_counters, allow);
        move || counters.snapshot(started, zap.as_deref(), allow.as_ref())
    };
    let metrics = match &config.metrics {
        Some(address) => {
            let (snapshot, timings) = (snapshot.clone(), counters.timings.clone());
            Some(serve_metrics(address, move || {
                edge_text(&snapshot(), &timings)
            })?)
        }
        None => None,
    };
    let (jobs, queue) = std::sync::mpsc::sync_channel::<Job>(config.queue.max(1));
    let queue = Arc::new(Mutex::new(Queue {
        rx: queue,
        held: std::collections::VecDeque::new(),
    }));
    let batching = Batching {
        max: config.max_batch.max(1),
        wait: config.max_wait,
    };
    let mut workers = Vec::new();
    for i in 0..config.workers.max(1) {
        let push = context
            .socket(zmq::PUSH)
            .map_err(zmq_err("creating a worker socket"))?;
        push.connect(RESULTS)
            .map_err(zmq_err("connecting a worker"))?;
        let (engine, queue) = (Arc::clone(engine), Arc::clone(&queue));
        let (plan, counters) = (plan.clone(), Arc::clone(&counters));
        let handle = std::thread::Builder::new()
            .name(format!("edgent-worker-{i}"))
            .spawn(move || worker(&*engine, &plan, &queue, batching, &push, &counters))
            .map_err(|source| TransportError::Io {
                path: "<worker thread>".into(),
                source,
            })?;
        workers.push(handle);
    }
    ready();

    let mut last_stats = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let mut items = [
            front.socket.as_poll_item(zmq::POLLIN),
            results.as_poll_item(zmq::POLLIN),
        ];
        match zmq::poll(&mut items, POLL_MS) {
            Ok(_) => {}
            Err(zmq::Error::EINTR) => continue,
            Err(e) => return Err(zmq_err("polling")(e)),
        }
        let (front_ready, results_ready) = (items[0].is_readable(), items[1].is_readable());
        if results_ready {
            while let Ok(frames) = results.recv_multipart(zmq::DONTWAIT) {
                front.send(frames);
            }
        }
        if front_ready {
            // Bounded: at most a burst of messages before the results get their turn.
            for _ in 0..256 {
                let Ok((frames, user)) = recv_authenticated(&front.socket, zmq::DONTWAIT) else {
                    break;
                };
                front.heard();
                if let Some(zap) = &zap
                    && !zap.still_allowed(ZAP_DOMAIN, user.as_ref())
                {
                    continue;
                }
                if front.is_control(&frames) {
                    continue;
                }
                if let Some(out) = admit(frames, engine.table(), plan, &counters, &jobs) {
                    front.send(out);
                }
            }
        }
        if front.keep_alive(&context, config, plan)? {
            counters.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        if last_stats.elapsed() >= Duration::from_secs(1) {
            stats(&snapshot());
            last_stats = Instant::now();
        }
    }
    // Shut down: no new work; workers finish what they hold while their replies go out
    // (a worker blocked on a full results queue must not hang the join).
    drop(jobs);
    while workers.iter().any(|w| !w.is_finished()) {
        if results.poll(zmq::POLLIN, POLL_MS).unwrap_or(0) > 0 {
            while let Ok(frames) = results.recv_multipart(zmq::DONTWAIT) {
                front.send(frames);
            }
        }
    }
    for handle in workers {
        let _ = handle.join();
    }
    while let Ok(frames) = results.recv_multipart(zmq::DONTWAIT) {
        front.send(frames);
    }
    front.leave();
    let last = snapshot();
    stats(&last);
    // Close every socket and stop the ZAP thread, so that dropping the context ends it:
    // zmq_ctx_term then flushes what the front socket still holds (its linger).
    drop((front, results, zap, metrics));
    drop(context);
    Ok(last)
}

/// Poll period of the socket loops, ms: how soon `stop` is noticed.
const POLL_MS: i64 = 100;

/// Control messages between a broker and its edges: single frames, never a protocol
/// message (those have two frames after the routing id).
pub mod control {
    /// Edge → broker: "I am here with this many workers", as `READY <workers>` (a
    /// bare `READY` is one worker). Sent on connecting and when asked.
    pub const READY: &[u8] = b"READY";
    /// Both ways, every heartbeat interval.
    pub const HEARTBEAT: &[u8] = b"HEARTBEAT";
    /// Broker → an edge it does not know (e.g. after the broker restarted): send READY.
    pub const ANNOUNCE: &[u8] = b"ANNOUNCE";
    /// Edge → broker on a clean shutdown, after its last reply: forget me now.
    pub const BYE: &[u8] = b"BYE";

    /// The READY message announcing `workers`.
    pub fn ready(workers: usize) -> Vec<u8> {
        format!("READY {workers}").into_bytes()
    }

    /// The worker count of a READY message (`None` if it is not one).
    pub fn parse_ready(frame: &[u8]) -> Option<usize> {
        let text = std::str::from_utf8(frame).ok()?;
        match text.strip_prefix("READY")? {
            "" => Some(1),
            n => n.strip_prefix(' ')?.parse().ok(),
        }
    }
}

/// The edge's socket towards devices: a bound ROUTER, or a DEALER connected to a broker
/// that it keeps alive with heartbeats and replaces when the broker falls silent.
struct Front {
    socket: zmq::Socket,
    broker: bool,
    workers: usize,
    last_heard: Instant,
    last_sent: Instant,
}

impl Front {
    fn open(
        context: &zmq::Context,
        config: &EdgeConfig,
        plan: &ServedPlan,
    ) -> Result<Self, TransportError> {
        let (kind, address) = match &config.endpoint {
            Endpoint::Bind(a) => (zmq::ROUTER, a),
            Endpoint::Broker(a) => (zmq::DEALER, a),
        };
        let socket = context
            .socket(kind)
            .map_err(zmq_err("creating the edge socket"))?;
        socket.set_linger(1000).map_err(zmq_err("setting linger"))?;
        socket
            .set_maxmsgsize(max_frame_bytes(plan.max_payload))
            .map_err(zmq_err("setting ZMQ_MAXMSGSIZE"))?;
        let broker = matches!(config.endpoint, Endpoint::Broker(_));
        if broker {
            config.security.apply_client(&socket)?;
            socket
                .connect(address)
                .map_err(zmq_err(format!("connecting to the broker at {address}")))?;
            socket
                .send(control::ready(config.workers.max(1)), 0)
                .map_err(zmq_err("announcing workers to the broker"))?;
        } else {
            config.security.apply_server(&socket, ZAP_DOMAIN)?;
            socket
                .bind(address)
                .map_err(zmq_err(format!("binding {address}")))?;
        }
        let now = Instant::now();
        Ok(Self {
            socket,
            broker,
            workers: config.workers.max(1),
            last_heard: now,
            last_sent: now,
        })
    }

    /// Sends without blocking: a device that went away cannot be answered, and that must
    /// not stop the others.
    fn send(&mut self, frames: Vec<Vec<u8>>) {
        if self.socket.send_multipart(frames, zmq::DONTWAIT).is_ok() {
            self.last_sent = Instant::now();
        }
    }

    fn heard(&mut self) {
        self.last_heard = Instant::now();
    }

    /// Handles a broker's control message (heartbeat, announce request); `true` when
    /// `frames` was one.
    fn is_control(&mut self, frames: &[Vec<u8>]) -> bool {
        if !self.broker || frames.len() != 1 {
            return false;
        }
        if frames[0] == control::ANNOUNCE {
            // The broker does not know us (it restarted): announce the workers again.
            self.send(vec![control::ready(self.workers)]);
        }
        true
    }

    /// Sends a heartbeat when one is due, and replaces the socket when the broker has
    /// been silent too long. Returns whether it reconnected.
    fn keep_alive(
        &mut self,
        context: &zmq::Context,
        config: &EdgeConfig,
        plan: &ServedPlan,
    ) -> Result<bool, TransportError> {
        if !self.broker {
            return Ok(false);
        }
        if self.last_heard.elapsed() >= config.heartbeat.timeout() {
            // A new socket (a new identity): the broker, old or restarted, takes it as a
            // new edge; replies still held by workers go out on it and the broker drops
            // them (it answered those requests when it gave up on us).
            let _ = self.socket.set_linger(0);
            *self = Self::open(context, config, plan)?;
            return Ok(true);
        }
        if self.last_sent.elapsed() >= config.heartbeat.interval
            && self.socket.send(control::HEARTBEAT, zmq::DONTWAIT).is_ok()
        {
            self.last_sent = Instant::now();
        }
        Ok(false)
    }

    /// Tells the broker this edge is gone (clean shutdown).
    fn leave(&self) {
        if self.broker {
            let _ = self.socket.send(control::BYE, zmq::DONTWAIT);
        }
    }
}

/// What the edge's socket thread makes of one message from a device.
#[derive(Debug, Clone, PartialEq)]
pub enum Admission {
    /// Send this back now: a pong, or an error saying what was wrong.
    Answer(Message),
    /// A valid request for the served plan: a worker runs layers `[p, N)` on `input`
    /// (normalised if it was the raw image).
    Run {
        /// The request's header.
        header: Header,
        /// The activation entering layer `p`, per sample.
        input: Vec<f32>,
    },
}

/// Decodes and checks one message (its routing envelope removed) against the served
/// plan, in PROTOCOL.md's order: frames, header, payload (codes 1–9), then `unknown_plan`,
/// `bad_field`, `bad_exit`, `bad_partition`, `bad_dtype`, `wrong_shape`. Never panics,
/// never allocates more than the frames plus one tensor of at most `plan.max_payload`.
pub fn admission<F: AsRef<[u8]>>(body: &[F], table: &LayerTable, plan: &ServedPlan) -> Admission {
    let refuse = |request_id: u64, version: u8, code: ErrorCode, text: &str| {
        Admission::Answer(Message::error(plan.digest, request_id, code, text).in_version(version))
    };
    let msg = match Message::decode_with(body, &Accept::requests(plan.max_payload)) {
        Ok(msg) => msg,
        Err(e) => return refuse(e.request_id, e.version, e.code, &e.text),
    };
    let h = msg.header;
    if h.kind == MessageType::Ping {
        if let Err((code, text)) = check_fields(&h) {
            return refuse(h.request_id, h.version, code, &text);
        }
        return Admission::Answer(
            Message {
                header: Header::new(MessageType::Pong, plan.digest, h.request_id),
                payload: Payload::Text(String::new()),
            }
            .in_version(h.version),
        );
    }
    if let Err((code, text)) = check_request(&h, table, plan) {
        return refuse(h.request_id, h.version, code, &text);
    }
    let input = match msg.payload {
        Payload::U8(pixels) => normalize(&pixels, &plan.mean, &plan.std),
        tensor => tensor.to_f32().expect("check_request demands a tensor"),
    };
    Admission::Run { header: h, input }
}

/// Fields a device must leave 0 (`bad_field`): `code`, `edge_us`, `queue_us` in every
/// request; a Ping also `exit`, `partition` and `deadline_us`. (Checked after the plan
/// digest for an Infer; a Ping is not checked against the plan.)
pub(crate) fn check_fields(h: &Header) -> Result<(), (ErrorCode, String)> {
    let mut fields = vec![
        ("code", u64::from(h.code)),
        ("edge_us", u64::from(h.edge_us)),
        ("queue_us", u64::from(h.queue_us)),
    ];
    if h.kind == MessageType::Ping {
        fields.extend([
            ("exit", u64::from(h.exit)),
            ("partition", u64::from(h.partition)),
            ("deadline_us", u64::from(h.deadline_us)),
        ]);
    }
    match fields.iter().find(|(_, v)| *v != 0) {
        Some((name, v)) => Err((
            ErrorCode::BadField,
            format!("a {:?}'s {name} field must be 0, got {v}", h.kind),
        )),
        None => Ok(()),
    }
}

/// Admits one incoming message: counts it, queues a valid request for the workers.
/// Returns the frames to send back now (errors, pongs), or `None` when a worker has it.
fn admit(
    frames: Vec<Vec<u8>>,
    table: &LayerTable,
    plan: &ServedPlan,
    counters: &EdgeCounters,
    jobs: &SyncSender<Job>,
) -> Option<Vec<Vec<u8>>> {
    let received = Instant::now();
    let mut frames = frames;
    if frames.is_empty() {
        return None;
    }
    // One routing frame: the device's identity (from our ROUTER, or the broker's).
    let body = frames.split_off(1);
    let envelope = frames;
    let with_envelope = |msg: Message| {
        let mut out = envelope.clone();
        out.extend(msg.encode());
        Some(out)
    };
    let (header, input) = match admission(&body, table, plan) {
        Admission::Answer(reply) => {
            if reply.header.kind == MessageType::Pong {
                counters.pings.fetch_add(1, Ordering::Relaxed);
            } else {
                counters.requests.fetch_add(1, Ordering::Relaxed);
                counters.error_code(reply.header.code);
            }
            return with_envelope(reply);
        }
        Admission::Run { header, input } => (header, input),
    };
    counters.requests.fetch_add(1, Ordering::Relaxed);
    let request_id = header.request_id;
    let refuse = |code: ErrorCode, text: &str| {
        counters.error(code);
        with_envelope(Message::error(plan.digest, request_id, code, text))
    };
    let job = Job {
        envelope: envelope.clone(),
        header,
        input,
        received,
    };
    match jobs.try_send(job) {
        Ok(()) => None,
        Err(TrySendError::Full(_)) => refuse(
            ErrorCode::Busy,
            "the edge's queue is full; run locally or retry",
        ),
        Err(TrySendError::Disconnected(_)) => {
            refuse(ErrorCode::Internal, "the edge is shutting down")
        }
    }
}

/// Checks a decoded request against the served plan and the layer table.
fn check_request(
    h: &Header,
    table: &LayerTable,
    plan: &ServedPlan,
) -> Result<(), (ErrorCode, String)> {
    if h.plan_digest != plan.digest {
        return Err((
            ErrorCode::UnknownPlan,
            format!(
                "plan {} is not the plan this edge serves ({}): deploy device and edge from the same plan.json",
                hex::encode(h.plan_digest),
                hex::encode(plan.digest)
            ),
        ));
    }
    check_fields(h)?;
    let exit = usize::from(h.exit);
    let spec = table.exit(exit).ok_or_else(|| {
        (
            ErrorCode::BadExit,
            format!("exit {exit} does not exist (1 to {})", crate::NUM_EXITS),
        )
    })?;
    let p = usize::from(h.partition);
    if p >= spec.len() {
        return Err((
            ErrorCode::BadPartition,
            format!(
                "partition {p} of exit {exit}: the edge runs [p, {}), so p must be below {}",
                spec.len(),
                spec.len()
            ),
        ));
    }
    let encoding = h.encoding();
    if !encoding.is_some_and(|e| crate::wire::encoding::Encoding::at_partition(p).contains(&e)) {
        return Err((
            ErrorCode::BadDtype,
            format!(
                "partition {p} takes {} (the u8 image at 0, f32, f16, q8, q8c, q4 or q4c activations after; each optionally compressed), got {:?}{}",
                if p == 0 { "u8" } else { "an activation" },
                h.dtype,
                if h.compressed { " compressed" } else { "" }
            ),
        ));
    }
    let expected = spec.boundary_shape(p);
    if h.shape.len() != expected.len()
        || h.shape.iter().zip(expected).any(|(&a, &b)| a as usize != b)
    {
        return Err((
            ErrorCode::WrongShape,
            format!(
                "exit {exit} partition {p} takes shape {expected:?}, got {:?}",
                h.shape
            ),
        ));
    }
    Ok(())
}

/// The jobs waiting for a worker: the admission queue, and those a worker took while
/// filling a batch of another kind (served first, in order).
struct Queue {
    rx: Receiver<Job>,
    held: std::collections::VecDeque<Job>,
}

/// How workers form batches ([`EdgeConfig::max_batch`], [`EdgeConfig::max_wait`]).
#[derive(Debug, Clone, Copy)]
struct Batching {
    max: usize,
    wait: Duration,
}

impl Queue {
    /// The next batch: the oldest job, and up to `batching.max − 1` more for the same
    /// (exit, partition) — held ones first, then from the queue, waiting up to
    /// `batching.wait` for them. Jobs of other kinds met on the way are held (at most
    /// `batching.max` are looked at), so the held list stays short. `None` once the queue
    /// is closed and empty.
    fn next_batch(&mut self, batching: Batching) -> Option<Vec<Job>> {
        let first = match self.held.pop_front() {
            Some(job) => job,
            None => self.rx.recv().ok()?,
        };
        let key = (first.header.exit, first.header.partition);
        let same = |job: &Job| (job.header.exit, job.header.partition) == key;
        let mut batch = vec![first];
        let mut i = 0;
        while batch.len() < batching.max && i < self.held.len() {
            if same(&self.held[i]) {
                batch.extend(self.held.remove(i));
            } else {
                i += 1;
            }
        }
        let until = Instant::now() + batching.wait;
        for _ in 1..batching.max {
            if batch.len() >= batching.max {
                break;
            }
            let left = until.saturating_duration_since(Instant::now());
            let next = if left.is_zero() {
                self.rx.try_recv().ok()
            } else {
                self.rx.recv_timeout(left).ok()
            };
            match next {
                Some(job) if same(&job) => batch.push(job),
                Some(job) => self.held.push_back(job),
                None => break,
            }
        }
        Some(batch)
    }
}

fn worker(
    engine: &dyn Engine,
    plan: &ServedPlan,
    queue: &Mutex<Queue>,
    batching: Batching,
    push: &zmq::Socket,
    counters: &EdgeCounters,
) {
    loop {
        // The lock is held only while waiting for (and gathering) the next batch.
        let batch = match queue.lock() {
            Ok(mut queue) => queue.next_batch(batching),
            Err(_) => return,
        };
        let Some(batch) = batch else { return };
        let started = Instant::now();
        // A job whose device has given up already would only delay the others.
        let (live, expired): (Vec<Job>, Vec<Job>) = batch.into_iter().partition(|job| {
            let deadline = Duration::from_micros(u64::from(job.header.deadline_us));
            job.header.deadline_us == 0 || started.duration_since(job.received) < deadline
        });
        let mut replies: Vec<(Vec<Vec<u8>>, Message)> = expired
            .into_iter()
            .map(|job| {
                let h = &job.header;
                counters.error(ErrorCode::Expired);
                let text = format!(
                    "waited {} µs for a worker, past its deadline of {} µs; not run",
                    started.duration_since(job.received).as_micros(),
                    h.deadline_us
                );
                let reply = Message::error(plan.digest, h.request_id, ErrorCode::Expired, &text)
                    .in_version(h.version);
                (job.envelope, reply)
            })
            .collect();
        if !live.is_empty() {
            // A panic in the layers must still answer every job (and return the broker's
            // credits).
            let answers = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                run_batch(engine, plan, &live, started, counters)
            }))
            .unwrap_or_else(|_| {
                internal_errors(
                    &live,
                    plan,
                    counters,
                    "the edge failed running the layers (a panic; see its log)",
                )
            });
            replies.extend(live.into_iter().map(|job| job.envelope).zip(answers));
        }
        for (envelope, reply) in replies {
            let mut frames = envelope;
            frames.extend(reply.encode());
            if push.send_multipart(frames, 0).is_err() {
                return;
            }
        }
    }
}

/// An `internal` error reply, saying `text`, to each of `jobs`.
fn internal_errors(
    jobs: &[Job],
    plan: &ServedPlan,
    counters: &EdgeCounters,
    text: &str,
) -> Vec<Message> {
    jobs.iter()
        .map(|job| {
            counters.error(ErrorCode::Internal);
            Message::error(
                plan.digest,
                job.header.request_id,
                ErrorCode::Internal,
                text,
            )
            .in_version(job.header.version)
        })
        .collect()
}

/// Runs `jobs` (all for one exit and partition) as one batch from `started`, and answers
/// each: its logits, the batch's compute time as `edge_us` and its own wait as `queue_us`.
fn run_batch(
    engine: &dyn Engine,
    plan: &ServedPlan,
    jobs: &[Job],
    started: Instant,
    counters: &EdgeCounters,
) -> Vec<Message> {
    let h = &jobs[0].header;
    let (exit, p) = (usize::from(h.exit), usize::from(h.partition));
    let n = engine.table().exit(exit).map_or(0, |e| e.len());
    let mut dims = vec![jobs.len()];
    dims.extend(h.shape.iter().map(|&d| d as usize));
    let input: Vec<f32> = jobs.iter().flat_map(|j| j.input.iter().copied()).collect();
    let outcome =
        Activation::from_values(input, &dims).and_then(|x| run_slice(engine, exit, p..n, &x));
    counters.batches.fetch_add(1, Ordering::Relaxed);
    counters
        .batch_max
        .fetch_max(jobs.len() as u64, Ordering::Relaxed);
    let (logits, took) = match outcome {
        Ok(done) => done,
        Err(e) => {
            let text = format!("running exit {exit} layers [{p}, {n}) failed: {e}");
            return internal_errors(jobs, plan, counters, &text);
        }
    };
    let classes = logits.values().len() / jobs.len();
    jobs.iter()
        .zip(logits.values().chunks(classes))
        .map(|(job, values)| {
            let h = &job.header;
            // Finite inputs can still overflow in the layers (an f32 near its maximum): a
            // Result must hold finite logits, or no client could decode it.
            if let Some(i) = values.iter().position(|v| !v.is_finite()) {
                counters.error(ErrorCode::Internal);
                return Message::error(
                    plan.digest,
                    h.request_id,
                    ErrorCode::Internal,
                    &format!(
                        "running exit {exit} layers [{p}, {n}) failed: logit {i} is {} (the input overflowed in the layers)",
                        values[i]
                    ),
                )
                .in_version(h.version);
            }
            let queued = started.duration_since(job.received);
            counters.timings.observe(queued, took);
            let us = |d: Duration| u32::try_from(d.as_micros()).unwrap_or(u32::MAX);
            let mut header = Header::new(MessageType::Result, plan.digest, h.request_id);
            header.version = h.version;
            header.exit = h.exit;
            header.partition = h.partition;
            header.edge_us = us(took);
            header.queue_us = us(queued);
            header.batch = jobs.len() as u32;
            header.dtype = crate::wire::protocol::Dtype::F32;
            header.shape = vec![values.len() as u32];
            counters.results.fetch_add(1, Ordering::Relaxed);
            counters
                .compute_us
                .fetch_add(u64::from(header.edge_us), Ordering::Relaxed);
            counters
                .queue_us
                .fetch_add(u64::from(header.queue_us), Ordering::Relaxed);
            counters
                .queue_us_max
                .fetch_max(u64::from(header.queue_us), Ordering::Relaxed);
            Message {
                header,
                payload: Payload::F32(values.to_vec()),
            }
        })
        .collect()
}
