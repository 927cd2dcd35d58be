//! A load-balancing broker between devices and edges (the zguide's ROUTER–ROUTER pattern
//! with "Paranoid Pirate" heartbeats). Devices connect to the front exactly as to an edge;
//! edges started with [`Endpoint::Broker`](crate::edge::Endpoint) connect to the back,
//! announce their workers (`READY n`), and exchange heartbeats with the broker.
//!
//! * Each request goes to the edge with a free worker that has waited longest; an edge
//!   never holds more requests than the workers it announced (repeated READYs do not add
//!   credits).
//! * An edge silent for [`Heartbeat::timeout`] (or that leaves, or whose key is removed)
//!   is dropped, and every request it held is answered at once with `unavailable`, so its
//!   devices fall back without waiting for their deadlines. A restarted edge rejoins by
//!   connecting again; the broker asks an unknown edge that sends heartbeats to announce
//!   itself (after a broker restart).
//! * Pings are answered by the broker itself and never queued; requests wait for an edge
//!   in a bounded queue (`busy` beyond it; `unavailable` at once when no edge is
//!   connected; `expired` once their `deadline_us` has passed).
//! * Front and back end have separate allow-lists (ZAP domains), so a device key cannot
//!   register as an edge; a key removed from a list stops working within a second.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::edge::{Heartbeat, check_fields, control, max_frame_bytes};
use crate::metrics::{Timings, broker_text, serve_metrics};
use crate::wire::protocol::{Accept, ErrorCode, Header, Message, MessageType, Payload};
use crate::wire::transport::{
    Security, TransportError, ZAP_DOMAIN, ZAP_DOMAIN_EDGES, recv_authenticated, start_zap, zmq_err,
};

/// Most workers one edge may announce (as `edgent-edge serve --workers`; well under the
/// back end's send high-water mark, so a send to an edge with a free worker never blocks).
pub const MAX_WORKERS: usize = 256;

/// How long an edge may hold a request without a deadline before the broker gives up on
/// it (answering `unavailable`) and frees its worker's credit.
const HOLD_LIMIT: Duration = Duration::from_secs(30);

/// Settings of [`broker`].
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Devices connect here, e.g. `tcp://*:5555`.
    pub front: String,
    /// Edges connect here, e.g. `tcp://*:5556`.
    pub back: String,
    /// CURVE server security of the front end: its allow-list holds the devices' keys.
    pub front_security: Security,
    /// CURVE server security of the back end: its allow-list holds the edges' keys.
    pub back_security: Security,
    /// Largest payload a device may send (the plan's largest tensor); libzmq drops
    /// larger frames.
    pub max_payload: usize,
    /// Requests that may wait for a free edge worker; more get `busy`.
    pub queue: usize,
    /// Heartbeats with the edges.
    pub heartbeat: Heartbeat,
    /// Set (by SIGHUP) to reload both allow-lists now; they also reload when their files
    /// change.
    pub reload: Option<Arc<AtomicBool>>,
    /// Serve Prometheus metrics over HTTP here (e.g. `127.0.0.1:9101`).
    pub metrics: Option<String>,
}

/// Counters of the [`broker`].
#[derive(Debug, Clone, Default, Serialize)]
pub struct BrokerStats {
    /// Seconds since the broker started.
    pub uptime_s: f64,
    /// Requests forwarded to an edge.
    pub forwarded: u64,
    /// Replies returned to devices.
    pub replies: u64,
    /// Pings answered.
    pub pongs: u64,
    /// Messages refused (malformed, not a request) with an error reply.
    pub refused: u64,
    /// Requests refused with `busy` (the broker's queue was full).
    pub busy: u64,
    /// Requests answered with `unavailable` (no edge, or their edge was lost).
    pub unavailable: u64,
    /// Requests answered with `expired` (waited at the broker past their deadline).
    pub expired: u64,
    /// Edges that registered (including re-registrations after a reconnect).
    pub edges_joined: u64,
    /// Edges dropped: silent past the heartbeat timeout, unreachable, or revoked.
    pub edges_lost: u64,
    /// Edges that left cleanly.
    pub edges_left: u64,
    /// Replies from edges that matched no outstanding request (late, after their edge
    /// was given up), dropped.
    pub stray_replies: u64,
    /// Edges connected now.
    pub edges: u64,
    /// Their workers now.
    pub workers: u64,
    /// Requests waiting for an edge now.
    pub queued: u64,
    /// Requests held by edges now.
    pub outstanding: u64,
    /// CURVE handshakes refused.
    pub zap_denied: u64,
    /// Messages dropped because their key was removed from an allow-list.
    pub zap_revoked: u64,
    /// Allow-list reloads.
    pub allow_reloads: u64,
}

/// A request the broker holds: the device's routing id, the request's id and frames.
struct Request {
    device: Vec<u8>,
    request_id: u64,
    to: ReplyTo,
    received: Instant,
    body: Vec<Vec<u8>>,
    expires: Option<Instant>,
}

/// What an answer to a request echoes: its plan digest, in its protocol version.
#[derive(Debug, Clone, Copy)]
struct ReplyTo {
    digest: [u8; 32],
    version: u8,
}

impl ReplyTo {
    fn of(h: &Header) -> Self {
        Self {
            digest: h.plan_digest,
            version: h.version,
        }
    }
}

/// A request an edge holds.
struct Held {
    to: ReplyTo,
    forwarded: Instant,
    /// When the broker stops waiting: the request's deadline, or [`HOLD_LIMIT`].
    give_up: Instant,
}

/// An edge the broker knows.
struct Edge {
    /// The CURVE key it authenticated with (`None` under NULL).
    key: Option<[u8; 32]>,
    workers: usize,
    /// Requests it holds, by (device routing id, request id).
    outstanding: HashMap<(Vec<u8>, u64), Held>,
    last_heard: Instant,
    last_sent: Instant,
}

/// The broker's state, apart from its sockets.
struct State {
    edges: HashMap<Vec<u8>, Edge>,
    /// Edges in the order they last took a request (least recent first).
    order: VecDeque<Vec<u8>>,
    queue: VecDeque<Request>,
    stats: BrokerStats,
    timings: Timings,
}

/// Runs the broker until `stop` is set; `ready` is called once both ends listen.
pub fn broker(
    config: &BrokerConfig,
    stop: &AtomicBool,
    ready: impl FnOnce(),
    mut stats: impl FnMut(&BrokerStats),
) -> Result<BrokerStats, TransportError> {
    config.front_security.check()?;
    config.back_security.check()?;
    let started = Instant::now();
    let context = zmq::Context::new();
    let zap = match (
        config.front_security.allow_list(),
        config.back_security.allow_list(),
    ) {
        (Some(front), Some(back)) => Some(start_zap(
            &context,
            &[(ZAP_DOMAIN, front), (ZAP_DOMAIN_EDGES, back)],
            config.reload.clone(),
        )?),
        (None, None) => None,
        _ => {
            return Err(TransportError::BadKey {
                path: "--allow".into(),
                reason: "front and back end must both use CURVE, or both --insecure".into(),
            });
        }
    };
    let open = |address: &str, side: &str, security: &Security, domain: &str, max: i64| {
        let socket = context
            .socket(zmq::ROUTER)
            .map_err(zmq_err(format!("creating the {side} socket")))?;
        socket.set_linger(1000).map_err(zmq_err("setting linger"))?;
        socket
            .set_router_mandatory(true)
            .map_err(zmq_err("setting ROUTER_MANDATORY"))?;
        socket
            .set_maxmsgsize(max)
            .map_err(zmq_err("setting ZMQ_MAXMSGSIZE"))?;
        security.apply_server(&socket, domain)?;
        socket
            .bind(address)
            .map_err(zmq_err(format!("binding the {side} at {address}")))?;
        Ok::<_, TransportError>(socket)
    };
    let max = max_frame_bytes(config.max_payload);
    let front = open(
        &config.front,
        "front end",
        &config.front_security,
        ZAP_DOMAIN,
        max,
    )?;
    let back = open(
        &config.back,
        "back end",
        &config.back_security,
        ZAP_DOMAIN_EDGES,
        max,
    )?;
    ready();
    let mut state = State {
        edges: HashMap::new(),
        order: VecDeque::new(),
        queue: VecDeque::new(),
        stats: BrokerStats::default(),
        timings: Timings::default(),
    };
    // What the metrics endpoint shows: the loop publishes a snapshot every 100 ms.
    let published = Arc::new(Mutex::new(BrokerStats::default()));
    let metrics = match &config.metrics {
        Some(address) => {
            let (published, timings) = (Arc::clone(&published), state.timings.clone());
            Some(serve_metrics(address, move || {
                let stats = published.lock().map(|s| s.clone()).unwrap_or_default();
                broker_text(&stats, &timings)
            })?)
        }
        None => None,
    };
    let mut last_published = Instant::now();
    let accept = Accept::requests(config.max_payload);
    let mut last_stats = Instant::now();
    let snapshot = |state: &State| {
        let mut s = state.stats.clone();
        s.uptime_s = started.elapsed().as_secs_f64();
        s.edges = state.edges.len() as u64;
        s.workers = state.edges.values().map(|e| e.workers as u64).sum();
        s.queued = state.queue.len() as u64;
        s.outstanding = state
            .edges
            .values()
            .map(|e| e.outstanding.len() as u64)
            .sum();
        if let Some(z) = &zap {
            let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
            s.zap_denied = load(&z.counters.denied);
            s.zap_revoked = load(&z.counters.revoked);
            s.allow_reloads = load(&z.counters.reloads);
        }
        s
    };
    while !stop.load(Ordering::Relaxed) {
        let mut items = [
            back.as_poll_item(zmq::POLLIN),
            front.as_poll_item(zmq::POLLIN),
        ];
        let wait = config.heartbeat.interval.min(Duration::from_millis(100));
        match zmq::poll(&mut items, wait.as_millis().max(1) as i64) {
            Ok(_) => {}
            Err(zmq::Error::EINTR) => continue,
            Err(e) => return Err(zmq_err("polling")(e)),
        }
        if items[0].is_readable() {
            for _ in 0..1024 {
                let Ok((frames, user)) = recv_authenticated(&back, zmq::DONTWAIT) else {
                    break;
                };
                let allowed = zap
                    .as_ref()
                    .is_none_or(|z| z.still_allowed(ZAP_DOMAIN_EDGES, user.as_ref()));
                state.on_edge(frames, user, allowed, &front, &back);
            }
        }
        if items[1].is_readable() {
            for _ in 0..1024 {
                let Ok((frames, user)) = recv_authenticated(&front, zmq::DONTWAIT) else {
                    break;
                };
                if zap
                    .as_ref()
                    .is_some_and(|z| !z.still_allowed(ZAP_DOMAIN, user.as_ref()))
                {
                    continue;
                }
                state.on_device(frames, &accept, &front, config);
            }
        }
        state.check_edges(&front, &back, &config.heartbeat);
        if let Some(z) = &zap {
            // An edge whose key was removed gets no more requests, even if it is idle.
            state.drop_revoked(|key| z.still_allowed(ZAP_DOMAIN_EDGES, Some(key)), &front);
        }
        state.dispatch(&front, &back);
        state.expire(&front);
        if metrics.is_some() && last_published.elapsed() >= Duration::from_millis(100) {
            if let Ok(mut p) = published.lock() {
                *p = snapshot(&state);
            }
            last_published = Instant::now();
        }
        if last_stats.elapsed() >= Duration::from_secs(1) {
            stats(&snapshot(&state));
            last_stats = Instant::now();
        }
    }
    // Requests still waiting or held: tell their devices now rather than at their deadline.
    let held: Vec<Vec<u8>> = state.edges.keys().cloned().collect();
    for edge in held {
        state.drop_edge(&edge, &front, "the broker is shutting down");
    }
    state.fail_queue(&front);
    let last = snapshot(&state);
    stats(&last);
    drop((front, back, zap, metrics));
    drop(context);
    Ok(last)
}

impl State {
    /// Sends an error reply to a device, with the digest its request carried.
    #[allow(clippy::too_many_arguments)]
    fn answer(
        &mut self,
        front: &zmq::Socket,
        device: &[u8],
        to: ReplyTo,
        request_id: u64,
        code: ErrorCode,
        text: &str,
    ) {
        let mut out = vec![device.to_vec()];
        out.extend(
            Message::error(to.digest, request_id, code, text)
                .in_version(to.version)
                .encode(),
        );
        let _ = front.send_multipart(out, zmq::DONTWAIT);
        match code {
            ErrorCode::Busy => self.stats.busy += 1,
            ErrorCode::Unavailable => self.stats.unavailable += 1,
            ErrorCode::Expired => self.stats.expired += 1,
            _ => self.stats.refused += 1,
        }
    }

    fn on_device(
        &mut self,
        mut frames: Vec<Vec<u8>>,
        accept: &Accept,
        front: &zmq::Socket,
        config: &BrokerConfig,
    ) {
        if frames.len() < 2 {
            return;
        }
        let body = frames.split_off(1);
        let device = frames.pop().expect("one routing frame");
        // The broker checks the framing (without reading the tensor it only forwards);
        // the edge checks the values and the plan.
        let h = match Message::check_framing(&body, accept) {
            Ok(header) => header,
            Err(e) => {
                let to = ReplyTo {
                    digest: [0; 32],
                    version: e.version,
                };
                return self.answer(front, &device, to, e.request_id, e.code, &e.text);
            }
        };
        if h.kind == MessageType::Ping {
            if let Err((code, text)) = check_fields(&h) {
                return self.answer(front, &device, ReplyTo::of(&h), h.request_id, code, &text);
            }
            let mut out = vec![device];
            out.extend(
                Message {
                    header: Header::new(MessageType::Pong, h.plan_digest, h.request_id),
                    payload: Payload::Text(String::new()),
                }
                .in_version(h.version)
                .encode(),
            );
            if front.send_multipart(out, zmq::DONTWAIT).is_ok() {
                self.stats.pongs += 1;
            }
            return;
        }
        if self.edges.is_empty() {
            return self.answer(
                front,
                &device,
                ReplyTo::of(&h),
                h.request_id,
                ErrorCode::Unavailable,
                "no edge is connected to the broker; run locally",
            );
        }
        let key = (device.clone(), h.request_id);
        if self
            .queue
            .iter()
            .any(|r| r.device == key.0 && r.request_id == key.1)
            || self
                .edges
                .values()
                .any(|e| e.outstanding.contains_key(&key))
        {
            return self.answer(
                front,
                &device,
                ReplyTo::of(&h),
                h.request_id,
                ErrorCode::BadField,
                "request id already in use by a request of this device that is not answered yet",
            );
        }
        if self.queue.len() >= config.queue.max(1) {
            return self.answer(
                front,
                &device,
                ReplyTo::of(&h),
                h.request_id,
                ErrorCode::Busy,
                "every edge is busy and the broker's queue is full; run locally or retry",
            );
        }
        let expires = (h.deadline_us > 0)
            .then(|| Instant::now() + Duration::from_micros(u64::from(h.deadline_us)));
        self.queue.push_back(Request {
            device,
            request_id: h.request_id,
            to: ReplyTo::of(&h),
            received: Instant::now(),
            body,
            expires,
        });
    }

    fn on_edge(
        &mut self,
        mut frames: Vec<Vec<u8>>,
        key: Option<[u8; 32]>,
        allowed: bool,
        front: &zmq::Socket,
        back: &zmq::Socket,
    ) {
        if frames.len() < 2 {
            return;
        }
        let rest = frames.split_off(1);
        let id = frames.pop().expect("one routing frame");
        if !allowed {
            if self.drop_edge(&id, front, "the edge's key was removed from the allow-list") {
                self.stats.edges_lost += 1;
            }
            return;
        }
        let now = Instant::now();
        if let Some(edge) = self.edges.get_mut(&id) {
            edge.last_heard = now;
        }
        match rest.as_slice() {
            [one] if one.as_slice() == control::HEARTBEAT && !self.edges.contains_key(&id) => {
                // Not ours (we restarted, or dropped it): ask it to announce itself.
                let _ = back.send_multipart([id, control::ANNOUNCE.to_vec()], zmq::DONTWAIT);
            }
            [one] if one.as_slice() == control::HEARTBEAT => {}
            [one] if one.as_slice() == control::BYE && self.edges.contains_key(&id) => {
                self.drop_edge(&id, front, "the edge shut down");
                self.stats.edges_left += 1;
            }
            [one] => {
                if let Some(workers) = control::parse_ready(one) {
                    let workers = workers.clamp(1, MAX_WORKERS);
                    match self.edges.get_mut(&id) {
                        Some(edge) => edge.workers = workers,
                        None => {
                            self.edges.insert(
                                id.clone(),
                                Edge {
                                    key,
                                    workers,
                                    outstanding: HashMap::new(),
                                    last_heard: now,
                                    last_sent: now,
                                },
                            );
                            self.order.push_back(id);
                            self.stats.edges_joined += 1;
                        }
                    }
                }
            }
            [device, header, _payload] => {
                let key = Header::decode(header)
                    .ok()
                    .map(|h| (device.clone(), h.request_id));
                let held = key
                    .zip(self.edges.get_mut(&id))
                    .and_then(|(k, edge)| edge.outstanding.remove(&k));
                if let Some(held) = held {
                    self.timings
                        .compute
                        .observe(held.forwarded.elapsed().as_secs_f64());
                    let mut out = vec![device.clone()];
                    out.extend(rest.into_iter().skip(1));
                    if front.send_multipart(out, zmq::DONTWAIT).is_ok() {
                        self.stats.replies += 1;
                    }
                } else {
                    self.stats.stray_replies += 1;
                }
            }
            _ => {}
        }
    }

    /// Hands queued requests to edges with free workers, longest-idle first. The
    /// request's `deadline_us` is rewritten to the time it has left (the edge measures
    /// from its own receipt); one with no time left is answered `expired` instead.
    fn dispatch(&mut self, front: &zmq::Socket, back: &zmq::Socket) {
        while !self.queue.is_empty() {
            let Some(at) = self.order.iter().position(|id| {
                self.edges
                    .get(id)
                    .is_some_and(|e| e.outstanding.len() < e.workers)
            }) else {
                return;
            };
            let id = self.order.remove(at).expect("found above");
            let mut request = self.queue.pop_front().expect("not empty");
            let now = Instant::now();
            if let Some(expires) = request.expires {
                let left = expires.saturating_duration_since(now).as_micros();
                if left == 0 {
                    self.order.insert(at, id);
                    self.answer_expired(front, &request);
                    continue;
                }
                let left = u32::try_from(left).unwrap_or(u32::MAX);
                if let Some(header) = request.body.first_mut() {
                    header[52..56].copy_from_slice(&left.to_le_bytes());
                }
            }
            let mut out = vec![id.clone(), request.device.clone()];
            out.extend(request.body.iter().cloned());
            match back.send_multipart(out, zmq::DONTWAIT) {
                Ok(()) => {
                    let edge = self.edges.get_mut(&id).expect("listed edges are known");
                    self.timings
                        .queue
                        .observe(now.duration_since(request.received).as_secs_f64());
                    let held = Held {
                        to: request.to,
                        forwarded: now,
                        give_up: request.expires.unwrap_or(now + HOLD_LIMIT),
                    };
                    edge.outstanding
                        .insert((request.device, request.request_id), held);
                    edge.last_sent = now;
                    self.stats.forwarded += 1;
                    self.order.push_back(id);
                }
                Err(zmq::Error::EAGAIN) => {
                    // Its pipe is full for now: the request waits for the next round.
                    self.order.push_back(id);
                    self.queue.push_front(request);
                    return;
                }
                Err(_) => {
                    // Unroutable: the edge is gone. Its requests fail now; this one goes
                    // back to the queue for another edge (or fails with the queue).
                    self.order.push_back(id.clone());
                    self.queue.push_front(request);
                    if self.drop_edge(&id, front, "the edge went away") {
                        self.stats.edges_lost += 1;
                    }
                }
            }
        }
    }

    /// Answers every queued request `unavailable` (no edge is left to take them).
    fn fail_queue(&mut self, front: &zmq::Socket) {
        while let Some(r) = self.queue.pop_front() {
            self.answer(
                front,
                &r.device,
                r.to,
                r.request_id,
                ErrorCode::Unavailable,
                "no edge is connected to the broker any more; run locally",
            );
        }
    }

    fn answer_expired(&mut self, front: &zmq::Socket, r: &Request) {
        self.answer(
            front,
            &r.device,
            r.to,
            r.request_id,
            ErrorCode::Expired,
            "waited at the broker past its deadline; not run",
        );
    }

    /// Sends heartbeats that are due, and drops edges silent past the timeout.
    fn check_edges(&mut self, front: &zmq::Socket, back: &zmq::Socket, heartbeat: &Heartbeat) {
        let now = Instant::now();
        let mut dead = Vec::new();
        for (id, edge) in &mut self.edges {
            if now.duration_since(edge.last_heard) >= heartbeat.timeout() {
                dead.push(id.clone());
            } else if now.duration_since(edge.last_sent) >= heartbeat.interval {
                match back.send_multipart([id.clone(), control::HEARTBEAT.to_vec()], zmq::DONTWAIT)
                {
                    Ok(()) => edge.last_sent = now,
                    Err(zmq::Error::EAGAIN) => {}
                    Err(_) => dead.push(id.clone()),
                }
            }
        }
        for id in dead {
            if self.drop_edge(&id, front, "the edge stopped answering heartbeats") {
                self.stats.edges_lost += 1;
            }
        }
        // Requests an edge has held past their deadline (or the hold limit): answered now,
        // their credit returned; a reply that comes later is dropped as stray.
        let mut overdue = Vec::new();
        for edge in self.edges.values_mut() {
            let keys: Vec<(Vec<u8>, u64)> = edge
                .outstanding
                .iter()
                .filter(|(_, held)| held.give_up <= now)
                .map(|(k, _)| k.clone())
                .collect();
            for key in keys {
                if let Some(held) = edge.outstanding.remove(&key) {
                    overdue.push((key, held.to));
                }
            }
        }
        for ((device, request_id), to) in overdue {
            self.answer(
                front,
                &device,
                to,
                request_id,
                ErrorCode::Unavailable,
                "the edge holding the request did not answer in time; run locally",
            );
        }
    }

    /// Drops the edges whose key `allowed` no longer admits.
    fn drop_revoked(&mut self, allowed: impl Fn(&[u8; 32]) -> bool, front: &zmq::Socket) {
        let revoked: Vec<Vec<u8>> = self
            .edges
            .iter()
            .filter(|(_, e)| e.key.as_ref().is_some_and(|k| !allowed(k)))
            .map(|(id, _)| id.clone())
            .collect();
        for id in revoked {
            if self.drop_edge(&id, front, "the edge's key was removed from the allow-list") {
                self.stats.edges_lost += 1;
            }
        }
    }

    /// Forgets an edge and answers every request it held with `unavailable`; `false`
    /// when it was not known.
    fn drop_edge(&mut self, id: &[u8], front: &zmq::Socket, why: &str) -> bool {
        let Some(edge) = self.edges.remove(id) else {
            return false;
        };
        self.order.retain(|e| e != id);
        for ((device, request_id), Held { to, .. }) in edge.outstanding {
            self.answer(
                front,
                &device,
                to,
                request_id,
                ErrorCode::Unavailable,
                &format!("{why}; run locally"),
            );
        }
        if self.edges.is_empty() {
            self.fail_queue(front);
        }
        true
    }

    /// Answers queued requests whose deadline has passed with `expired`.
    fn expire(&mut self, front: &zmq::Socket) {
        let now = Instant::now();
        if !self
            .queue
            .iter()
            .any(|r| r.expires.is_some_and(|t| t <= now))
        {
            return;
        }
        let (late, keep): (VecDeque<Request>, VecDeque<Request>) = std::mem::take(&mut self.queue)
            .into_iter()
            .partition(|r| r.expires.is_some_and(|t| t <= now));
        self.queue = keep;
        for r in late {
            self.answer_expired(front, &r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::transport::{AllowList, KeyPair};

    const DIGEST: [u8; 32] = [9; 32];

    struct Running {
        stop: Arc<AtomicBool>,
        thread: Option<std::thread::JoinHandle<BrokerStats>>,
        front: String,
        back: String,
        context: zmq::Context,
    }

    impl Running {
        fn start(front_security: Security, back_security: Security) -> Self {
            let port = |_| {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                l.local_addr().unwrap().port()
            };
            let (front, back) = (
                format!("tcp://127.0.0.1:{}", port(0)),
                format!("tcp://127.0.0.1:{}", port(1)),
            );
            let config = BrokerConfig {
                front: front.clone(),
                back: back.clone(),
                front_security,
                back_security,
                max_payload: 4096,
                queue: 16,
                heartbeat: Heartbeat {
                    interval: Duration::from_millis(50),
                    liveness: 3,
                },
                reload: None,
                metrics: None,
            };
            let stop = Arc::new(AtomicBool::new(false));
            let (tx, rx) = std::sync::mpsc::channel();
            let flag = Arc::clone(&stop);
            let thread = std::thread::spawn(move || {
                broker(&config, &flag, || tx.send(()).unwrap(), |_| {}).unwrap()
            });
            rx.recv_timeout(Duration::from_secs(5)).unwrap();
            Self {
                stop,
                thread: Some(thread),
                front,
                back,
                context: zmq::Context::new(),
            }
        }

        fn dealer(&self, address: &str, security: &Security) -> zmq::Socket {
            let s = self.context.socket(zmq::DEALER).unwrap();
            s.set_linger(0).unwrap();
            security.apply_client(&s).unwrap();
            s.connect(address).unwrap();
            s
        }

        fn stop(mut self) -> BrokerStats {
            self.stop.store(true, Ordering::Relaxed);
            self.thread.take().unwrap().join().unwrap()
        }
    }

    /// A fake edge's reply to a request it took: `msg` behind the device's routing id.
    fn reply_to(edge: &zmq::Socket, taken: &[Vec<u8>], msg: Message) {
        let mut out = vec![taken[0].clone()];
        out.extend(msg.encode());
        edge.send_multipart(out, 0).unwrap();
    }

    /// An (empty) result for request `id`, exit 1.
    fn result(id: u64) -> Message {
        let mut header = Header::new(MessageType::Result, DIGEST, id);
        header.exit = 1;
        Message {
            header,
            payload: Payload::Text(String::new()),
        }
    }

    fn request(id: u64) -> [Vec<u8>; 2] {
        Message::infer(DIGEST, id, 1, 0, 0, &[4], Payload::U8(vec![1, 2, 3, 4])).encode()
    }

    fn recv(socket: &zmq::Socket, ms: i64) -> Option<Vec<Vec<u8>>> {
        (socket.poll(zmq::POLLIN, ms).unwrap() > 0).then(|| socket.recv_multipart(0).unwrap())
    }

    fn error_code(frames: &[Vec<u8>]) -> Option<ErrorCode> {
        let m = Message::decode(frames).unwrap();
        (m.header.kind == MessageType::Error)
            .then(|| ErrorCode::from_u16(m.header.code))
            .flatten()
    }

    /// A fake edge's heartbeat.
    fn heartbeat(edge: &zmq::Socket) {
        edge.send(control::HEARTBEAT, 0).unwrap();
    }

    /// The next request a fake edge is given within `ms`, behaving like a live edge
    /// meanwhile: heartbeats, and READY when the broker asks it to announce itself.
    fn take_request(edge: &zmq::Socket, ms: u64) -> Option<Vec<Vec<u8>>> {
        let until = Instant::now() + Duration::from_millis(ms);
        while Instant::now() < until {
            heartbeat(edge);
            match recv(edge, 40) {
                Some(frames) if frames.len() == 3 => return Some(frames),
                Some(frames) if frames == [control::ANNOUNCE.to_vec()] => {
                    edge.send(control::ready(1), 0).unwrap();
                }
                _ => {}
            }
        }
        None
    }

    #[test]
    fn a_silent_edge_is_dropped_and_its_requests_answered_at_once() {
        let b = Running::start(Security::Null, Security::Null);
        let edge = b.dealer(&b.back, &Security::Null);
        edge.send(control::ready(1), 0).unwrap();
        let device = b.dealer(&b.front, &Security::Null);
        std::thread::sleep(Duration::from_millis(100));
        device.send_multipart(request(7), 0).unwrap();
        // The edge takes the request, then falls silent (a frozen process).
        let got = take_request(&edge, 2000).expect("the request reaches the edge");
        assert_eq!(Message::decode(&got[1..]).unwrap().header.request_id, 7);
        let silent = Instant::now();
        let reply = recv(&device, 3000).expect("the device hears at once, not at its deadline");
        let took = silent.elapsed();
        assert_eq!(error_code(&reply), Some(ErrorCode::Unavailable));
        assert_eq!(Message::decode(&reply).unwrap().header.request_id, 7);
        assert!(
            took < Duration::from_millis(600),
            "dropped after {took:?} (timeout 150 ms)"
        );
        // A request now finds no edge and is refused at once.
        device.send_multipart(request(8), 0).unwrap();
        let reply = recv(&device, 1000).unwrap();
        assert_eq!(error_code(&reply), Some(ErrorCode::Unavailable));
        // A late reply from the dropped edge is not passed on.
        reply_to(&edge, &got, result(7));
        // A restarted edge (a new connection) rejoins, and serves.
        let edge2 = b.dealer(&b.back, &Security::Null);
        edge2.send(control::ready(1), 0).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        device.send_multipart(request(9), 0).unwrap();
        let got = take_request(&edge2, 2000).expect("the new edge gets requests");
        reply_to(&edge2, &got, result(9));
        let reply = recv(&device, 2000).unwrap();
        let m = Message::decode(&reply).unwrap();
        assert_eq!(
            (m.header.kind, m.header.request_id),
            (MessageType::Result, 9)
        );
        let stats = b.stop();
        assert_eq!(stats.stray_replies, 1, "nothing from the dropped edge");
        assert_eq!(stats.edges_lost, 1);
        assert_eq!(stats.edges_joined, 2);
        assert_eq!(stats.unavailable, 2);
        assert_eq!(stats.replies, 1);
    }

    fn request_with_deadline(id: u64, deadline_us: u32) -> [Vec<u8>; 2] {
        Message::infer(
            DIGEST,
            id,
            1,
            0,
            deadline_us,
            &[4],
            Payload::U8(vec![1, 2, 3, 4]),
        )
        .encode()
    }

    /// The replies a device gets within `ms`, as (request id, error code).
    fn replies(device: &zmq::Socket, ms: i64) -> Vec<(u64, Option<ErrorCode>)> {
        let mut out = Vec::new();
        while let Some(frames) = recv(device, ms) {
            let m = Message::decode(&frames).unwrap();
            out.push((m.header.request_id, ErrorCode::from_u16(m.header.code)));
        }
        out
    }

    #[test]
    fn deadlines_travel_reused_ids_are_refused_and_nothing_waits_for_a_lost_edge() {
        let b = Running::start(Security::Null, Security::Null);
        let edge = b.dealer(&b.back, &Security::Null);
        edge.send(control::ready(1), 0).unwrap();
        let device = b.dealer(&b.front, &Security::Null);
        assert!(take_request(&edge, 100).is_none());
        device
            .send_multipart(request_with_deadline(1, 500_000), 0)
            .unwrap();
        let got = take_request(&edge, 1000).expect("forwarded");
        // The edge sees the time the request has left, not the device's full deadline.
        let left = Message::decode(&got[1..]).unwrap().header.deadline_us;
        assert!(left > 0 && left < 500_000, "{left}");
        // Held past its deadline by an edge that still heartbeats: answered, credit back.
        device
            .send_multipart(request_with_deadline(2, 100_000), 0)
            .unwrap();
        device
            .send_multipart(request_with_deadline(2, 100_000), 0)
            .unwrap();
        let until = Instant::now() + Duration::from_millis(1500);
        let mut seen = Vec::new();
        while Instant::now() < until && seen.len() < 3 {
            heartbeat(&edge);
            seen.extend(replies(&device, 20));
        }
        assert!(seen.contains(&(2, Some(ErrorCode::BadField))), "{seen:?}");
        assert!(
            seen.contains(&(1, Some(ErrorCode::Unavailable))),
            "{seen:?}"
        );
        assert!(
            seen.iter().any(|(id, c)| *id == 2
                && matches!(c, Some(ErrorCode::Unavailable | ErrorCode::Expired))),
            "{seen:?}"
        );
        // A queued request fails at once when the last edge is lost.
        let busy = take_request(&edge, 300);
        device
            .send_multipart(request_with_deadline(3, 0), 0)
            .unwrap();
        device
            .send_multipart(request_with_deadline(4, 0), 0)
            .unwrap();
        let held = busy
            .or_else(|| take_request(&edge, 500))
            .expect("one forwarded");
        let held_id = Message::decode(&held[1..]).unwrap().header.request_id;
        // The edge falls silent: both the held and the queued request are answered.
        let answered = replies(&device, 1000);
        let ids: Vec<u64> = answered.iter().map(|(id, _)| *id).collect();
        assert!(
            ids.contains(&3) && ids.contains(&4),
            "{answered:?} (held {held_id})"
        );
        assert!(
            answered
                .iter()
                .all(|(_, c)| *c == Some(ErrorCode::Unavailable)),
            "{answered:?}"
        );
        let stats = b.stop();
        assert_eq!(stats.queued, 0);
    }

    #[test]
    fn an_edge_holds_no_more_requests_than_the_workers_it_announced() {
        let b = Running::start(Security::Null, Security::Null);
        let edge = b.dealer(&b.back, &Security::Null);
        for _ in 0..100 {
            edge.send(control::ready(1), 0).unwrap();
        }
        let device = b.dealer(&b.front, &Security::Null);
        std::thread::sleep(Duration::from_millis(100));
        for id in 1..=3 {
            device.send_multipart(request(id), 0).unwrap();
        }
        let mut taken = Vec::new();
        while let Some(frames) = take_request(&edge, 500) {
            taken.push(frames);
        }
        assert_eq!(taken.len(), 1, "100 READYs are still one worker");
        // Answering frees the worker for the next request.
        let id = Message::decode(&taken[0][1..]).unwrap().header.request_id;
        reply_to(
            &edge,
            &taken[0],
            Message::error(DIGEST, id, ErrorCode::Internal, "test"),
        );
        let next = take_request(&edge, 2000).expect("the next request follows the reply");
        assert_ne!(Message::decode(&next[1..]).unwrap().header.request_id, id);
        assert_eq!(b.stop().forwarded, 2);
    }

    #[test]
    fn the_broker_answers_pings_itself_and_asks_unknown_edges_to_announce() {
        let b = Running::start(Security::Null, Security::Null);
        let device = b.dealer(&b.front, &Security::Null);
        let ping = Message {
            header: Header::new(MessageType::Ping, DIGEST, 3),
            payload: Payload::Text(String::new()),
        };
        device.send_multipart(ping.encode(), 0).unwrap();
        let pong = Message::decode(&recv(&device, 2000).unwrap()).unwrap();
        assert_eq!(
            (pong.header.kind, pong.header.request_id),
            (MessageType::Pong, 3)
        );
        assert_eq!(pong.header.plan_digest, DIGEST);
        // Malformed requests are refused by the broker, with their code.
        let [h, _] = request(4);
        device.send_multipart([h, vec![0; 3]], 0).unwrap();
        assert_eq!(
            error_code(&recv(&device, 2000).unwrap()),
            Some(ErrorCode::BadLength)
        );
        let stranger = b.dealer(&b.back, &Security::Null);
        heartbeat(&stranger);
        assert_eq!(
            recv(&stranger, 2000).unwrap(),
            vec![control::ANNOUNCE.to_vec()]
        );
        let stats = b.stop();
        assert_eq!((stats.pongs, stats.refused, stats.forwarded), (1, 1, 0));
    }

    #[test]
    fn an_edge_whose_key_is_removed_gets_no_more_requests() {
        let pair = || KeyPair::generate().unwrap();
        let (server, device, edge) = (pair(), pair(), pair());
        let dir = tempfile::tempdir().unwrap();
        let edges = dir.path().join("edges.pub");
        std::fs::write(&edges, crate::wire::transport::z85(&edge.public) + "\n").unwrap();
        let b = Running::start(
            Security::curve_server(server.clone(), AllowList::new([device.public])),
            Security::curve_server(server.clone(), AllowList::load(&edges).unwrap()),
        );
        let client = |own: &KeyPair| Security::curve_client(own.clone(), server.public);
        let e = b.dealer(&b.back, &client(&edge));
        e.send(control::ready(1), 0).unwrap();
        let d = b.dealer(&b.front, &client(&device));
        assert!(take_request(&e, 300).is_none());
        d.send_multipart(request(1), 0).unwrap();
        let got = take_request(&e, 2000).expect("the listed edge serves");
        reply_to(
            &e,
            &got,
            Message::error(DIGEST, 1, ErrorCode::Internal, "test"),
        );
        assert!(recv(&d, 2000).is_some());
        // Another key replaces the edge's in the file; the idle edge, still heartbeating
        // on its open connection, is dropped and gets nothing more.
        std::fs::write(&edges, crate::wire::transport::z85(&device.public) + "\n").unwrap();
        assert!(take_request(&e, 400).is_none());
        d.send_multipart(request(2), 0).unwrap();
        assert!(
            take_request(&e, 500).is_none(),
            "a removed edge key got a request"
        );
        let reply = recv(&d, 2000).expect("answered");
        assert_eq!(error_code(&reply), Some(ErrorCode::Unavailable));
        let stats = b.stop();
        assert_eq!(stats.edges_lost, 1, "{stats:?}");
        assert!(stats.allow_reloads >= 1);
    }

    #[test]
    fn a_device_key_cannot_register_as_an_edge() {
        assert!(zmq::has("curve").unwrap());
        let pair = || KeyPair::generate().unwrap();
        let (server, device, edge) = (pair(), pair(), pair());
        let server_side = |allow: &KeyPair| {
            Security::curve_server(server.clone(), AllowList::new([allow.public]))
        };
        let client = |own: &KeyPair| Security::curve_client(own.clone(), server.public);
        let b = Running::start(server_side(&device), server_side(&edge));
        let intruder = b.dealer(&b.back, &client(&device));
        intruder.send(control::ready(8), 0).unwrap();
        let d = b.dealer(&b.front, &client(&device));
        std::thread::sleep(Duration::from_millis(300));
        d.send_multipart(request(1), 0).unwrap();
        let reply = recv(&d, 2000).expect("the device is served by the broker");
        assert_eq!(
            error_code(&reply),
            Some(ErrorCode::Unavailable),
            "no edge registered: the device key was refused at the back end"
        );
        assert!(recv(&intruder, 300).is_none());
        // The edge's key works at the back end.
        let e = b.dealer(&b.back, &client(&edge));
        e.send(control::ready(1), 0).unwrap();
        assert!(take_request(&e, 300).is_none(), "nothing to take yet");
        d.send_multipart(request(2), 0).unwrap();
        let got = take_request(&e, 3000).expect("the listed edge gets the request");
        assert_eq!(Message::decode(&got[1..]).unwrap().header.request_id, 2);
        let stats = b.stop();
        assert!(stats.zap_denied >= 1, "{stats:?}");
        assert_eq!(stats.edges_joined, 1);
    }
}
