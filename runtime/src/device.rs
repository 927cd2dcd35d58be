//! The device client (DESIGN.md §7): per request, estimate the link, ask the planner for
//! (exit, partition), run the prefix `[0, p)`, send the activation to the edge over a
//! DEALER socket, and return the class with its timing breakdown. When the edge does not
//! answer in time, or answers with an error, answer from the best local exit that still
//! fits in the deadline — computed while waiting for the edge (speculation), so that the
//! edge can have until the deadline.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::engine::{Activation, Engine};
use crate::model::entropy::argmax;
use crate::model::{ModelError, normalize};
use crate::plan::{
    Decision, ExitTable, FamilyTable, Link, Policy, choose, decide_policy, decide_tables,
    decide_tables_at,
};
use crate::slowdown::Slowdown;
use crate::slowdown::{Emulation, LayerClock, run_slice_clocked};
use crate::wire::encoding::Encoding;
use crate::wire::protocol::{ErrorCode, Header, Message, MessageType, Payload};
use crate::wire::transport::{Security, TransportError, zmq_err};

/// The compiled-in plan as the device uses it.
#[derive(Debug, Clone, Copy)]
pub struct DevicePlan {
    /// SHA-256 of the plan.
    pub digest: [u8; 32],
    /// Per-exit costs of the paper's routes (baselines, local fallback).
    pub tables: &'static [ExitTable],
    /// Exit indices, most accurate first.
    pub by_accuracy: &'static [usize],
    /// Every family of routes (partition and encoding) Edgent chooses from.
    pub families: &'static [FamilyTable],
    /// Family indices in Algorithm 1's order.
    pub families_by_accuracy: &'static [usize],
    /// Input normalisation mean per channel.
    pub mean: &'static [f32],
    /// Input normalisation standard deviation per channel.
    pub std: &'static [f32],
    /// Input shape `[C, H, W]`.
    pub input: &'static [usize],
}

impl DevicePlan {
    /// The planner's decision for `link` and `deadline_ms`.
    pub fn decide(&self, link: Link, deadline_ms: f64) -> Decision {
        decide_tables(self.families, self.families_by_accuracy, link, deadline_ms)
    }

    /// The planner's decision when the edge runs requests in batches of `batch`
    /// ([`decide_tables_at`]).
    pub fn decide_at(&self, link: Link, deadline_ms: f64, batch: f64) -> Decision {
        let families = self.families_by_accuracy;
        decide_tables_at(self.families, families, link, deadline_ms, batch)
    }

    /// Layers of exit `exit`'s chain.
    pub fn chain_len(&self, exit: usize) -> usize {
        self.tables[exit - 1].pairs.len() - 1
    }

    /// Predicted time of exit `exit` run entirely on the device, ms.
    pub fn local_ms(&self, exit: usize) -> f64 {
        self.tables[exit - 1].pairs[self.chain_len(exit)].device_ms
    }

    /// The most accurate exit whose local run takes at most `budget_ms` by `cost`, by the
    /// planner's rule (among equally accurate exits the cheaper, then the deeper; see
    /// [`crate::plan::decide`]); the fastest exit when none fits.
    pub fn best_local(&self, budget_ms: f64, cost: impl Fn(usize) -> f64) -> usize {
        let local = |i: usize| {
            let exit = i + 1;
            let ms = cost(exit);
            let plan = Decision {
                exit,
                partition: self.chain_len(exit),
                encoding: None,
                feasible: ms <= budget_ms,
                predicted_ms: ms,
                device_ms: ms,
                network_ms: 0.0,
                edge_ms: 0.0,
                edge_ms_per_image: 0.0,
                edge_batch: 1.0,
            };
            (self.tables[i].accuracy, plan)
        };
        choose(self.by_accuracy.iter().map(|&i| local(i))).exit
    }
}

impl DevicePlan {
    /// The decision under `policy` when the edge runs requests in batches of `batch`:
    /// Edgent's from the generated tables, each route priced at that batch; a baseline's
    /// by [`decide_policy`] over the same costs (it chooses as the paper's, alone), its
    /// prediction then taken at that batch.
    pub fn decide_policy(
        &self,
        policy: Policy,
        link: Link,
        deadline_ms: f64,
        batch: f64,
    ) -> Decision {
        if policy == Policy::Edgent {
            return self.decide_at(link, deadline_ms, batch);
        }
        let exits: Vec<(f64, &[crate::plan::PairCost])> =
            self.tables.iter().map(|t| (t.accuracy, t.pairs)).collect();
        decide_policy(&exits, policy, link, deadline_ms).in_batch(batch, deadline_ms)
    }
}

/// Estimates the uplink from the device's own transfers: the round trip of each reply
/// minus the edge's compute and queue time is network time; pings (no payload) give the
/// fixed round trip, and the bytes of recent requests over their network time give the
/// bandwidth.
#[derive(Debug, Clone)]
pub struct LinkEstimator {
    rtts: VecDeque<f64>,
    edge_excess: VecDeque<f64>,
    /// Sizes of the batches recent replies say the edge ran them in, and when heard.
    edge_batches: VecDeque<(f64, Instant)>,
    /// Recent transfers: (bytes, network ms, when observed).
    transfers: VecDeque<(f64, f64, Instant)>,
    window: usize,
    fixed: Option<Link>,
    initial: Link,
}

impl LinkEstimator {
    /// An estimator over the last `window` observations, starting from `initial`.
    pub fn new(initial: Link, window: usize) -> Self {
        Self {
            rtts: VecDeque::new(),
            edge_excess: VecDeque::new(),
            edge_batches: VecDeque::new(),
            transfers: VecDeque::new(),
            window: window.max(1),
            fixed: None,
            initial,
        }
    }

    /// An estimator that always answers `link` (a plan fixed in advance).
    pub fn fixed(link: Link) -> Self {
        Self {
            fixed: Some(link),
            ..Self::new(link, 1)
        }
    }

    /// Records the network time of a message without payload (a ping), ms.
    pub fn observe_rtt(&mut self, network_ms: f64) {
        push(&mut self.rtts, network_ms, self.window);
    }

    /// Records how much longer the edge took (compute + queue) than the plan predicted, ms.
    /// Its median becomes part of the per-request overhead ([`Link::rtt_ms`]): the plan
    /// then accounts for an edge slower (or busier) than its latency models say.
    pub fn observe_edge(&mut self, excess_ms: f64) {
        push(&mut self.edge_excess, excess_ms, self.window);
    }

    /// Records the size of the batch a reply says the edge ran the request in (0 from an
    /// edge that does not say: counted as 1).
    pub fn observe_batch(&mut self, batch: u32) {
        self.observe_batch_at(batch, Instant::now());
    }

    /// [`LinkEstimator::observe_batch`], heard at `at`.
    pub fn observe_batch_at(&mut self, batch: u32, at: Instant) {
        let window = self.window.max(BATCH_WINDOW);
        push(
            &mut self.edge_batches,
            (f64::from(batch.max(1)), at),
            window,
        );
    }

    /// The batch size to plan for: the median of the replies' of the last
    /// [`LinkEstimator::MAX_AGE`] (1 when none: a device that a busy edge drove to local
    /// plans sends nothing, so it must forget the load to try the edge again). The plan's
    /// edge cost at that size ([`crate::plan::PairCost::edge_ms_at`]) is what a request is
    /// predicted to take on a busy, batching edge; the edge's excess over it is learned as
    /// before ([`LinkEstimator::observe_edge`]). One size for every route: the edge forms
    /// batches per (exit, partition), so a route this device rarely takes is priced at the
    /// load of the ones it takes. A [fixed](LinkEstimator::fixed) estimator learns it too:
    /// it fixes the link, not the edge's load.
    pub fn edge_batch(&self) -> f64 {
        self.edge_batch_at(Instant::now())
    }

    /// [`LinkEstimator::edge_batch`] at `now`.
    pub fn edge_batch_at(&self, now: Instant) -> f64 {
        let mut batches: Vec<f64> = self
            .edge_batches
            .iter()
            .filter(|(_, at)| now.saturating_duration_since(*at) <= Self::MAX_AGE)
            .map(|&(b, _)| b)
            .collect();
        batches.sort_by(f64::total_cmp);
        batches.get(batches.len() / 2).copied().unwrap_or(1.0)
    }

    /// Transfers older than this no longer count: a device that answers locally because
    /// of a slow transfer (or a time-out) sends nothing, so without forgetting it would
    /// never see the link recover. Once they are all older, the estimate is the initial
    /// one (the probe's, after [`LinkEstimator::set_initial_bandwidth`]) and the device
    /// tries the edge again — cheaply, since it computes its local fallback meanwhile.
    pub const MAX_AGE: Duration = Duration::from_secs(5);

    /// Records a transfer of `bytes` that took `network_ms` (round trip less edge time).
    pub fn observe(&mut self, bytes: u64, network_ms: f64) {
        self.observe_at(bytes, network_ms, Instant::now());
    }

    /// [`LinkEstimator::observe`], observed at `at`.
    pub fn observe_at(&mut self, bytes: u64, network_ms: f64, at: Instant) {
        if bytes == 0 {
            return self.observe_rtt(network_ms);
        }
        push(
            &mut self.transfers,
            (bytes as f64, network_ms, at),
            self.window,
        );
    }

    /// Records that a transfer of `bytes` got no reply within `waited_ms`, when the device
    /// gave up on it at `at`: the round trip took at least that long, and until the late
    /// reply says how much of it the edge took ([`LinkEstimator::late_reply`]) it counts as
    /// a transfer of that time.
    pub fn observe_timeout(&mut self, bytes: u64, waited_ms: f64, at: Instant) {
        self.observe_at(bytes, waited_ms, at);
    }

    /// A reply came after the device gave up on its request at `gave_up` (see
    /// [`LinkEstimator::observe_timeout`]) and says the edge spent `edge_ms` on it (compute
    /// and queue). The network took at least the wait less the edge's share; the time-out's
    /// observation becomes that lower bound or, if more, what the other transfers predict
    /// for its bytes — never more than the wait it recorded, so a late reply can only raise
    /// the estimate back (a busy edge, not a slow link, made the request late) or leave it.
    ///
    /// A late reply never counts as a transfer of its own: by the time it is read, its
    /// request has also waited through the local answer and whatever came after it, which
    /// says nothing about the link (and the time-out already counted it once).
    pub fn late_reply(&mut self, gave_up: Instant, edge_ms: f64) {
        let Some(i) = self.transfers.iter().position(|t| t.2 == gave_up) else {
            return;
        };
        let Some((bytes, waited_ms, at)) = self.transfers.remove(i) else {
            return;
        };
        let others = self.link_at(at);
        let predicted_ms = 8e3 * bytes / others.bandwidth_bps + self.min_rtt();
        let lower_ms = waited_ms - edge_ms.max(0.0);
        let network_ms = lower_ms.max(predicted_ms.min(waited_ms));
        self.transfers.insert(i, (bytes, network_ms, at));
    }

    /// The fixed round trip: the fastest ping seen, or the initial one.
    fn min_rtt(&self) -> f64 {
        self.rtts
            .iter()
            .copied()
            .reduce(f64::min)
            .unwrap_or(self.initial.rtt_ms)
    }

    /// The bandwidth to assume when no recent transfer says otherwise (the start-up probe's).
    pub fn set_initial_bandwidth(&mut self, bandwidth_bps: f64) {
        if bandwidth_bps.is_finite() && bandwidth_bps > 0.0 {
            self.initial.bandwidth_bps = bandwidth_bps;
        }
    }

    /// The current estimate.
    pub fn link(&self) -> Link {
        self.link_at(Instant::now())
    }

    /// The estimate at `now`, from the transfers of the last [`LinkEstimator::MAX_AGE`].
    pub fn link_at(&self, now: Instant) -> Link {
        if let Some(link) = self.fixed {
            return link;
        }
        let rtt_ms = self.min_rtt();
        let mut excess: Vec<f64> = self.edge_excess.iter().copied().collect();
        excess.sort_by(f64::total_cmp);
        let overhead_ms = excess
            .get(excess.len() / 2)
            .map_or(rtt_ms, |e| (rtt_ms + e).max(0.0));
        let recent: Vec<(f64, f64)> = self
            .transfers
            .iter()
            .filter(|(_, _, at)| now.saturating_duration_since(*at) <= Self::MAX_AGE)
            .map(|&(bytes, ms, _)| (bytes, ms))
            .collect();
        if recent.is_empty() {
            return Link {
                rtt_ms: overhead_ms,
                ..self.initial
            };
        }
        let bits: f64 = recent.iter().map(|(b, _)| 8.0 * b).sum();
        // A transfer faster than the round trip says "at least this fast": floor at 0.1 ms.
        let ms: f64 = recent.iter().map(|(_, t)| (t - rtt_ms).max(0.1)).sum();
        Link {
            bandwidth_bps: bits * 1e3 / ms,
            rtt_ms: overhead_ms,
        }
    }
}

/// Replies at least over which [`LinkEstimator::edge_batch`] takes its median.
const BATCH_WINDOW: usize = 8;

fn push<T>(queue: &mut VecDeque<T>, value: T, window: usize) {
    if queue.len() == window {
        queue.pop_front();
    }
    queue.push_back(value);
}

/// Where an answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The plan split the exit between device and edge (or sent the image: p = 0).
    Edge,
    /// The plan ran the exit on the device alone.
    Local,
    /// The edge did not answer in time or refused: the device ran its best local exit.
    Fallback,
}

/// One answered request.
#[derive(Debug, Clone, Serialize)]
pub struct Answer {
    /// The device's request id.
    pub request_id: u64,
    /// Predicted class.
    pub class: usize,
    /// The logits.
    pub logits: Vec<f32>,
    /// Exit that produced the logits.
    pub exit: usize,
    /// Partition actually used (the chain length when the device ran it alone).
    pub partition: usize,
    /// Where the answer came from.
    pub source: Source,
    /// Why the device fell back, when it did.
    pub fallback: Option<String>,
    /// The planner's decision (for fallbacks: the plan that was tried).
    pub plan: Decision,
    /// The link estimate the plan was made for.
    pub link: Link,
    /// Deadline, ms.
    pub deadline_ms: f64,
    /// End-to-end latency, ms.
    pub total_ms: f64,
    /// Device compute, ms (for a fallback: the prefix plus the local run, which overlapped
    /// the wait for the edge, so the parts can add up to more than `total_ms`).
    pub device_ms: f64,
    /// Network (round trip less edge time), ms.
    pub network_ms: f64,
    /// Edge compute, ms.
    pub edge_ms: f64,
    /// Edge queue, ms.
    pub queue_ms: f64,
    /// How many requests the edge ran in one batch with this one (0: not sent, or an edge
    /// that does not say).
    pub batch: u32,
    /// Bytes sent.
    pub bytes: u64,
    /// Whether the answer came within the deadline.
    pub met: bool,
    /// The deadline was divided by this when planning (safety margin, ≥ 1).
    pub margin: f64,
}

/// Settings of a [`DeviceClient`].
#[derive(Debug, Clone)]
pub struct DeviceConfig {
    /// The edge or broker, e.g. `tcp://127.0.0.1:5555`.
    pub endpoint: String,
    /// CURVE keys, or NULL.
    pub security: Security,
    /// Emulate a slower device (as profiled).
    pub slowdown: Slowdown,
    /// Plan for this link instead of estimating it.
    pub fixed_link: Option<Link>,
    /// The estimate before the first measurement.
    pub initial_link: Link,
    /// Payload bytes of each ping of the bandwidth probe at start (0: no probe); see
    /// [`DeviceClient::probe`].
    pub probe_bytes: usize,
    /// Margin kept for the local fallback: its predicted time × this factor.
    pub fallback_margin: f64,
    /// What the device may choose (Edgent, or a baseline).
    pub policy: Policy,
    /// Answer locally when the edge fails (Edgent). Without it the device waits for the
    /// edge up to [`DeviceConfig::patience`] past the deadline, as the paper's baselines do.
    pub fallback: bool,
    /// Longest wait past the deadline without fallback.
    pub patience: Duration,
    /// Plan against a deadline shortened by how much recent answers overran their
    /// predictions (95th percentile of measured / predicted, 1 to 1.5), so that plans
    /// predicted just inside the deadline do not miss it half of the time.
    pub safety_margin: bool,
    /// While waiting for the edge, run the fallback's local exit on a second thread (the
    /// device's second core), and wait for the edge until 5 ms before the deadline (or
    /// until the local run ends, if later); without it the fallback runs only after the
    /// wait, which must then end early enough for it. The local run keeps the second core
    /// busy during every offload: it costs energy on a real device.
    pub speculate: bool,
}

impl DeviceConfig {
    /// Defaults for `endpoint` and `security`.
    pub fn new(endpoint: impl Into<String>, security: Security) -> Self {
        Self {
            endpoint: endpoint.into(),
            security,
            slowdown: Slowdown::NONE,
            fixed_link: None,
            initial_link: Link {
                bandwidth_bps: 1e6,
                rtt_ms: 1.0,
            },
            probe_bytes: 1024,
            fallback_margin: 1.3,
            policy: Policy::Edgent,
            fallback: true,
            patience: Duration::from_secs(5),
            safety_margin: true,
            speculate: true,
        }
    }
}

/// Counters of a client.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DeviceCounters {
    /// Requests answered.
    pub answered: u64,
    /// Answers from the edge.
    pub edge: u64,
    /// Answers planned device-only.
    pub local: u64,
    /// Fallbacks.
    pub fallback: u64,
    /// Local runs started while waiting for the edge.
    pub speculated: u64,
    /// Of those, the ones cancelled because the edge answered (counted once they stopped).
    pub speculation_cancelled: u64,
    /// Replies that arrived after their request was answered locally (discarded).
    pub late_replies: u64,
    /// Replies for a request the edge had already answered (discarded; should be 0).
    pub duplicate_replies: u64,
    /// Results that do not answer what was asked: another exit or partition, or not
    /// one logit per class (refused; should be 0).
    pub mismatched_replies: u64,
    /// Times the device replaced its socket after hearing nothing for 10 s.
    pub reconnects: u64,
}

/// How long before the deadline a device that speculated stops waiting for the edge: the
/// time to take the local answer and return it.
const SPECULATION_GUARD: Duration = Duration::from_millis(5);

/// A device that has heard nothing from its server for this long reconnects with a new
/// socket: libzmq does not retry a CURVE handshake the server refused, so a device whose
/// key was added to the allow-list after it started would otherwise stay refused.
const REOPEN_AFTER: Duration = Duration::from_secs(10);

/// The device's DEALER socket, connected to the edge or broker.
fn open_socket(context: &zmq::Context, config: &DeviceConfig) -> Result<zmq::Socket, DeviceError> {
    let socket = context
        .socket(zmq::DEALER)
        .map_err(zmq_err("creating the device socket"))?;
    socket.set_linger(0).map_err(zmq_err("setting linger"))?;
    // Queue nothing for an edge that is not connected: a send then fails at once.
    socket
        .set_immediate(true)
        .map_err(zmq_err("setting IMMEDIATE"))?;
    socket.set_sndhwm(64).map_err(zmq_err("setting SNDHWM"))?;
    socket
        .set_reconnect_ivl(100)
        .map_err(zmq_err("setting RECONNECT_IVL"))?;
    // Replies are logits or error text: refuse anything far larger from a rogue server.
    socket
        .set_maxmsgsize(1 << 20)
        .map_err(zmq_err("setting ZMQ_MAXMSGSIZE"))?;
    config.security.apply_client(&socket)?;
    socket
        .connect(&config.endpoint)
        .map_err(zmq_err(format!("connecting to {}", config.endpoint)))?;
    Ok(socket)
}

/// How many answered request ids a device remembers to spot duplicate replies.
const ANSWERED_IDS: usize = 4096;

/// How often a device whose local run is late checks for the edge's reply meanwhile.
const POLL_SLICE: Duration = Duration::from_millis(1);

/// How long the device plans without the edge after its first failure (doubles, to 8 s).
const INITIAL_BACKOFF: Duration = Duration::from_millis(100);

/// The longest wait the device computes with (a year): a deadline, time-out or patience
/// past it is taken as it, so that no time arithmetic can overflow.
const LONGEST_WAIT: Duration = Duration::from_secs(365 * 24 * 3600);

/// `ms` milliseconds as a wait: 0 for a negative or NaN time, at most [`LONGEST_WAIT`]
/// (`Duration::from_secs_f64` panics on an infinite or huge value; this never does).
fn wait_ms(ms: f64) -> Duration {
    match Duration::try_from_secs_f64(ms / 1e3) {
        Ok(wait) => wait.min(LONGEST_WAIT),
        Err(_) if ms > 0.0 => LONGEST_WAIT,
        Err(_) => Duration::ZERO,
    }
}

/// `at` plus `wait`, the wait capped at [`LONGEST_WAIT`] (never overflows).
fn later(at: Instant, wait: Duration) -> Instant {
    at + wait.min(LONGEST_WAIT)
}

/// Waits until `until` for `poll` — `zmq_poll` on the device's socket for a message, with a
/// time-out in whole milliseconds — to report one; returns whether it did. The time left is
/// rounded up to the next millisecond, so a slice under 1 ms waits instead of polling
/// without a time-out over and over; a poll a signal interrupted (`EINTR`) is not a
/// time-out: it waits again for the time left.
fn wait_readable(until: Instant, mut poll: impl FnMut(i64) -> zmq::Result<i32>) -> bool {
    loop {
        let left = until.saturating_duration_since(Instant::now());
        let ms = i64::try_from(left.as_micros().div_ceil(1000)).unwrap_or(i64::MAX);
        match poll(ms) {
            Ok(n) if n > 0 => return true,
            Ok(_) | Err(zmq::Error::EINTR) => {}
            Err(_) => return false,
        }
        if Instant::now() >= until {
            return false;
        }
    }
}

/// The edge's compute and queue time a reply reports, ms (added as `f64`: two `u32`
/// microsecond counts can overflow a `u32`).
fn edge_time_ms(header: &Header) -> f64 {
    (f64::from(header.edge_us) + f64::from(header.queue_us)) / 1e3
}

/// A request sent to the edge and not answered yet.
#[derive(Debug, Clone, Copy)]
struct Sent {
    /// When it left.
    at: Instant,
    /// Payload bytes.
    bytes: u64,
    /// When the device gave up waiting for it, if it did (the estimator was told then).
    gave_up: Option<Instant>,
}

/// The requests sent and not answered yet, by id, and what the link estimator learns from
/// their time-outs and late replies.
#[derive(Debug, Default)]
struct InFlight(HashMap<u64, Sent>);

impl InFlight {
    /// Request `id` of `bytes` left at `at`.
    fn sent(&mut self, id: u64, at: Instant, bytes: u64) {
        self.0.insert(
            id,
            Sent {
                at,
                bytes,
                gave_up: None,
            },
        );
    }

    /// When request `id` left, if it is still waited for.
    fn sent_at(&self, id: u64) -> Option<Instant> {
        self.0.get(&id).map(|s| s.at)
    }

    /// Request `id` was answered in time.
    fn answered(&mut self, id: u64) {
        self.0.remove(&id);
    }

    /// The device stops waiting for request `id` at `now`: the network took at least this
    /// long, learnt now rather than when (if) the reply comes.
    fn give_up(&mut self, id: u64, now: Instant, estimator: &mut LinkEstimator) {
        if let Some(sent) = self.0.get_mut(&id)
            && sent.gave_up.is_none()
        {
            let waited_ms = now.saturating_duration_since(sent.at).as_secs_f64() * 1e3;
            estimator.observe_timeout(sent.bytes, waited_ms, now);
            sent.gave_up = Some(now);
        }
    }

    /// A reply to a request answered otherwise (`header`): its time-out's observation is
    /// corrected by the edge's share ([`LinkEstimator::late_reply`]); it is never counted as
    /// a transfer. Returns whether it was a result of a request of this device's (the edge
    /// is alive).
    fn late(&mut self, header: &Header, estimator: &mut LinkEstimator) -> bool {
        let Some(sent) = self.0.remove(&header.request_id) else {
            return false;
        };
        if header.kind != MessageType::Result {
            return false;
        }
        if let Some(gave_up) = sent.gave_up {
            estimator.late_reply(gave_up, edge_time_ms(header));
        }
        // Late replies often ran in the largest batches: they count for the batch size.
        estimator.observe_batch(header.batch);
        true
    }

    /// Forgets requests sent more than `age` before `now` (the edge never answered).
    fn forget_older(&mut self, age: Duration, now: Instant) {
        self.0
            .retain(|_, sent| now.saturating_duration_since(sent.at) < age);
    }
}

/// Most payload bytes the start-up probe keeps in flight: at 100 kbit/s, what it leaves
/// queued behind a burst drains in 1.3 s; on a path of round trip `r`, it cannot measure
/// more than 16 KiB per `r` (3.3 Mbit/s at 40 ms).
const PROBE_MAX_IN_FLIGHT: usize = 16 << 10;

/// Most payload bytes the start-up probe sends; it stops sooner once the rate is steady.
const PROBE_MAX_BYTES: usize = 4 << 20;

/// A stretch of the probe's pongs lasts at least this long, and four round trips…
const PROBE_MIN_STRETCH: Duration = Duration::from_millis(50);

/// …and spans at least this many intervals between clumps of pongs.
const PROBE_MIN_INTERVALS: usize = 2;

/// Two successive stretches agree when their rates differ by less than this factor.
const PROBE_AGREEMENT: f64 = 1.15;

/// Payload bytes that arrived over a stretch of a transfer, and its time.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Stretch {
    bytes: u64,
    ms: f64,
}

impl Stretch {
    fn bandwidth_bps(&self) -> f64 {
        self.bytes as f64 * 8e3 / self.ms
    }
}

/// Pongs that arrive within this time of the first of a clump belong to it: a link (or
/// TCP behind it) that delivers in aggregates hands over several pings at once.
const PROBE_CLUMP: Duration = Duration::from_millis(1);

/// Pongs arriving together (within [`PROBE_CLUMP`] of the first).
#[derive(Debug, Clone, Copy)]
struct Clump {
    first: Instant,
    last: Instant,
    /// Pongs in it and in every clump before it.
    pongs_so_far: u64,
}

/// The arrival of the pongs of a train of equal pings, in clumps (see [`measure_uplink`]).
/// Stretches run from the last pong of a clump to the last pong of a later one, so that a
/// clump is never cut in two (which would count its pings at the wrong time).
#[derive(Debug)]
struct RateProbe {
    ping_bytes: u64,
    /// The shortest stretch: [`PROBE_MIN_STRETCH`], or four round trips (pongs come in
    /// clumps of one window per round trip).
    min_stretch: Duration,
    clumps: Vec<Clump>,
}

impl RateProbe {
    fn new(ping_bytes: u64, round_trip: Duration) -> Self {
        Self {
            ping_bytes,
            min_stretch: PROBE_MIN_STRETCH.max(round_trip * 4),
            clumps: Vec::new(),
        }
    }

    fn pong(&mut self, at: Instant) {
        let pongs_so_far = self.clumps.last().map_or(0, |c| c.pongs_so_far) + 1;
        match self.clumps.last_mut() {
            Some(clump) if at.saturating_duration_since(clump.first) < PROBE_CLUMP => {
                clump.last = at;
                clump.pongs_so_far = pongs_so_far;
            }
            _ => self.clumps.push(Clump {
                first: at,
                last: at,
                pongs_so_far,
            }),
        }
    }

    /// Clumps `start..=end` as a stretch: the pings after clump `start` arrived in the time
    /// from its last pong to the last pong of clump `end`.
    fn stretch(&self, start: usize, end: usize) -> Stretch {
        let (from, to) = (self.clumps[start], self.clumps[end]);
        Stretch {
            bytes: (to.pongs_so_far - from.pongs_so_far) * self.ping_bytes,
            ms: to.last.saturating_duration_since(from.last).as_secs_f64() * 1e3,
        }
    }

    /// Where the stretch ending at clump `end` starts: the latest clump at least
    /// [`PROBE_MIN_INTERVALS`] clumps and the shortest stretch before it.
    fn stretch_start(&self, end: usize) -> Option<usize> {
        let last = end.checked_sub(PROBE_MIN_INTERVALS)?;
        (0..=last).rev().find(|&i| {
            self.clumps[end]
                .last
                .saturating_duration_since(self.clumps[i].last)
                >= self.min_stretch
        })
    }

    /// Once the last two stretches agree on the rate: both together. Only clumps that are
    /// over count: the last one may still grow.
    fn steady(&self) -> Option<Stretch> {
        let end = self.clumps.len().checked_sub(2)?;
        let middle = self.stretch_start(end)?;
        let start = self.stretch_start(middle)?;
        let ratio =
            self.stretch(start, middle).bandwidth_bps() / self.stretch(middle, end).bandwidth_bps();
        (ratio < PROBE_AGREEMENT && ratio * PROBE_AGREEMENT > 1.0).then(|| self.stretch(start, end))
    }

    /// The best there is when the probe ran out of time or bytes before the rate held
    /// steady: the last stretch, or every pong after the first clump.
    fn latest(&self) -> Option<Stretch> {
        let end = self.clumps.len().checked_sub(1)?;
        let stretch = self.stretch(self.stretch_start(end).unwrap_or(0), end);
        (stretch.bytes > 0 && stretch.ms > 0.0).then_some(stretch)
    }
}

/// Where the start-up probe's pings go: the edge (through [`Pinger`]), or a simulated link
/// in tests.
trait PingLink {
    /// Sends a ping padded with `bytes`; its id and when it left, or `None` if it could not
    /// be sent in time.
    fn send(&mut self, bytes: usize) -> Option<(u64, Instant)>;

    /// When the pong of ping `id` arrived, or `None` if it did not in time.
    fn pong(&mut self, id: u64) -> Option<Instant>;
}

/// Measures the uplink with pings padded with `bytes`, sent as their pongs come back:
/// two in flight at first, one more for each pong back within twice the empty round trip
/// `round_trip` (+ 1 ms), up to [`PROBE_MAX_IN_FLIGHT`] bytes — a slow start, so that the
/// probe outruns the link — and, after a pong that took longer (a queue), only as many as
/// the link carries in that time at the rate seen lately (at least two), so that the queue
/// stays short. It stops when the rate at which the pongs arrive holds steady: two
/// successive stretches of at least [`PROBE_MIN_STRETCH`] (and four round trips) and
/// [`PROBE_MIN_INTERVALS`] intervals between clumps of pongs agree within
/// [`PROBE_AGREEMENT`]. Returns both stretches together, or the last stretch if the rate was
/// not steady before the time ran out or [`PROBE_MAX_BYTES`] were sent. The pings still in
/// flight are waited for, so that the first request finds the link quiet.
///
/// A token bucket passes its burst at line rate and what follows at its rate; a fixed-size
/// probe that fits in the burst measures the line rate. Here the burst is spent while the
/// rate is still changing: stretches that straddle its end disagree, and only stretches
/// after it agree (two stretches within a burst agree only if the burst lasts two
/// stretches at the probe's rate). A bucket (or TCP behind it) also hands over several
/// pings at once: stretches begin and end with whole clumps ([`PROBE_CLUMP`]). Rates are
/// taken between arrivals, so the fixed round trip cancels out, and counted in payload
/// bytes, as the estimator counts requests.
fn measure_uplink(link: &mut impl PingLink, bytes: usize, round_trip: Duration) -> Option<Stretch> {
    let max_window = (PROBE_MAX_IN_FLIGHT / bytes.max(1)).max(2);
    let quick = round_trip * 2 + Duration::from_millis(1);
    let mut window = 2;
    let mut probe = RateProbe::new(bytes as u64, round_trip);
    let mut waiting = VecDeque::with_capacity(max_window);
    let mut sent = 0;
    let mut steady = None;
    loop {
        while steady.is_none() && waiting.len() < window && sent < PROBE_MAX_BYTES {
            let Some(ping) = link.send(bytes) else {
                break;
            };
            waiting.push_back(ping);
            sent += bytes;
        }
        let Some((id, sent_at)) = waiting.pop_front() else {
            break;
        };
        let Some(at) = link.pong(id) else {
            break;
        };
        if steady.is_none() {
            probe.pong(at);
            steady = probe.steady();
            window = if at.saturating_duration_since(sent_at) <= quick {
                (window + 1).min(max_window)
            } else {
                // A queue: keep in flight what the link carries in that time at the rate
                // seen lately (the link stays busy, the queue short), at least two.
                let carried = probe.latest().map_or(0.0, |recent| {
                    recent.bandwidth_bps() / 8.0 * quick.as_secs_f64() / bytes as f64
                });
                (carried.ceil() as usize + 1).clamp(2, window)
            };
        }
    }
    steady.or_else(|| probe.latest())
}

/// The edge as a [`PingLink`], until `until`.
struct Pinger<'a> {
    client: &'a mut DeviceClient,
    until: Instant,
}

impl PingLink for Pinger<'_> {
    fn send(&mut self, bytes: usize) -> Option<(u64, Instant)> {
        self.client.send_ping(bytes, self.until)
    }

    fn pong(&mut self, id: u64) -> Option<Instant> {
        self.client.wait_pong(id, self.until)
    }
}

/// The device side of co-inference.
pub struct DeviceClient {
    engine: Arc<dyn Engine>,
    plan: DevicePlan,
    config: DeviceConfig,
    socket: zmq::Socket,
    context: zmq::Context,
    /// When the server last sent anything (a reply, a pong, an error).
    last_heard: Instant,
    /// When the socket was last (re)opened.
    last_opened: Instant,
    estimator: LinkEstimator,
    next_id: u64,
    /// While set, plan device-only: the edge failed recently.
    backoff_until: Option<Instant>,
    backoff: Duration,
    /// The emulated device's clock (warm layer times on this machine, and the slowdown).
    clock: Arc<LayerClock>,
    /// Measured time of each exit run whole on this device (slowdown included), ms:
    /// the fallback keeps at least this much time, whatever the latency models say.
    local_measured: Vec<f64>,
    /// Warm time of each (exit, partition, encoding) encoding, measured back to back at
    /// its first use, for the slowdown.
    encode_warm: std::collections::HashMap<(usize, usize, Encoding), Duration>,
    /// Measured / predicted latency of recent answers (not fallbacks).
    overruns: VecDeque<f64>,
    /// Requests sent and not answered yet.
    in_flight: InFlight,
    /// Ids of the last requests the edge answered, to spot a reply that comes twice.
    answered_ids: VecDeque<u64>,
    /// A speculative local run cancelled because the edge answered, not joined yet.
    cancelled: Option<Speculation>,
    counters: DeviceCounters,
}

/// Errors of a forced (exit, partition) request.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// Socket set-up failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The model refused the input.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The edge refused the request.
    #[error("the edge answered {code:?}: {text}")]
    Edge {
        /// The code.
        code: Option<ErrorCode>,
        /// The text.
        text: String,
    },
    /// No reply in time.
    #[error("no reply from the edge within {0:?}")]
    Timeout(Duration),
    /// Invalid request arguments.
    #[error("{0}")]
    Invalid(String),
}

/// A local run of a whole exit chain on another thread while the device waits for the
/// edge.
struct Speculation {
    exit: usize,
    cancel: Arc<AtomicBool>,
    handle: JoinHandle<LocalRun>,
}

/// The output and emulated time of a local run.
type LocalRun = Result<(Activation, Duration), ModelError>;

enum Reply {
    Result {
        logits: Vec<f32>,
        edge_ms: f64,
        queue_ms: f64,
        network_ms: f64,
        batch: u32,
    },
    Refused(Option<ErrorCode>, String),
    Timeout,
}

impl DeviceClient {
    /// Connects to the edge (lazily: ZeroMQ connects in the background) and, if configured,
    /// probes the link.
    pub fn connect(
        engine: Arc<dyn Engine>,
        plan: DevicePlan,
        config: DeviceConfig,
    ) -> Result<Self, DeviceError> {
        config.security.check()?;
        engine.warm_up();
        let clock = Arc::new(LayerClock::measure(&*engine, config.slowdown)?);
        let context = zmq::Context::new();
        let socket = open_socket(&context, &config)?;
        let estimator = match config.fixed_link {
            Some(link) => LinkEstimator::fixed(link),
            None => LinkEstimator::new(config.initial_link, 8),
        };
        let mut client = Self {
            engine,
            plan,
            config,
            socket,
            context,
            last_heard: Instant::now(),
            last_opened: Instant::now(),
            estimator,
            next_id: 1,
            backoff_until: None,
            backoff: INITIAL_BACKOFF,
            clock,
            local_measured: vec![0.0; plan.tables.len()],
            encode_warm: std::collections::HashMap::new(),
            overruns: VecDeque::new(),
            in_flight: InFlight::default(),
            answered_ids: VecDeque::new(),
            cancelled: None,
            counters: DeviceCounters::default(),
        };
        client.calibrate()?;
        Ok(client)
    }

    /// Waits up to `timeout` for the connection, then measures the round trip with empty
    /// pings and the bandwidth with a train of padded pings of
    /// [`DeviceConfig::probe_bytes`], each sent as an earlier one's pong comes back, more of
    /// them in flight as long as no queue builds up (up to 16 KiB), until the rate at which
    /// their pongs arrive holds steady over two successive stretches (of at least 50 ms, four
    /// round trips and two clumps of pongs each; at most 4 MiB in all, and within
    /// `timeout`). A token bucket's burst is spent before the rate is taken: stretches that
    /// straddle the end of a burst disagree. Returns the estimate, or `None` if the edge did
    /// not answer.
    pub fn probe(&mut self, timeout: Duration) -> Option<Link> {
        let until = later(Instant::now(), timeout);
        let mut rtt = None;
        for _ in 0..3 {
            if let Some((id, sent)) = self.send_ping(0, until)
                && let Some(done) = self.wait_pong(id, until)
            {
                let ms = (done - sent).as_secs_f64() * 1e3;
                self.estimator.observe_rtt(ms);
                rtt = Some(rtt.map_or(ms, |r: f64| r.min(ms)));
            }
        }
        let rtt = rtt?;
        let bytes = self.config.probe_bytes;
        if bytes > 0
            && let Some(stretch) = measure_uplink(
                &mut Pinger {
                    client: self,
                    until,
                },
                bytes,
                wait_ms(rtt),
            )
        {
            // As a transfer of the stretch's bytes in its time plus the round trip: the
            // estimator takes the round trip off again.
            self.estimator.observe(stretch.bytes, stretch.ms + rtt);
            let probed = self.estimator.link().bandwidth_bps;
            self.estimator.set_initial_bandwidth(probed);
        }
        Some(self.estimator.link())
    }

    /// Sends a ping padded with `bytes`, retrying until the connection is up (IMMEDIATE
    /// refuses sends before that) or `until`. Returns its id and when it left.
    fn send_ping(&mut self, bytes: usize, until: Instant) -> Option<(u64, Instant)> {
        let id = self.take_id();
        let mut header = Header::new(MessageType::Ping, self.plan.digest, id);
        let payload = if bytes > 0 {
            header.dtype = crate::wire::protocol::Dtype::U8;
            header.shape = vec![bytes as u32];
            Payload::U8(vec![0; bytes])
        } else {
            Payload::Text(String::new())
        };
        let frames = Message { header, payload }.encode();
        loop {
            if self
                .socket
                .send_multipart(frames.clone(), zmq::DONTWAIT)
                .is_ok()
            {
                return Some((id, Instant::now()));
            }
            if Instant::now() >= until {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until `until` for the pong of ping `id`; returns when it arrived.
    fn wait_pong(&mut self, id: u64, until: Instant) -> Option<Instant> {
        loop {
            let frames = self.recv(until)?;
            if let Some(m) = self.sort_reply(&frames, id)
                && m.header.kind == MessageType::Pong
            {
                return Some(Instant::now());
            }
        }
    }

    /// Returns the reply if it answers `id`. A late result of an earlier request still
    /// shows the edge is alive, and how much of the time-out the edge took: it ends the
    /// backoff and corrects the time-out's observation ([`InFlight::late`]), then is dropped
    /// (that request was answered locally).
    fn sort_reply(&mut self, frames: &[Vec<u8>], id: u64) -> Option<Message> {
        let msg = Message::decode(frames).ok()?;
        let h = &msg.header;
        if h.request_id == id {
            return Some(msg);
        }
        if h.kind == MessageType::Pong {
            // A probe ping's, waited for no longer: no request's reply.
            return None;
        }
        if self.answered_ids.contains(&h.request_id) {
            self.counters.duplicate_replies += 1;
            return None;
        }
        self.counters.late_replies += 1;
        if self.in_flight.late(h, &mut self.estimator) {
            self.backoff_until = None;
            self.backoff = INITIAL_BACKOFF;
        }
        None
    }

    /// Handles replies that arrived while no request was waiting.
    fn drain_late_replies(&mut self) {
        while let Ok(frames) = self.socket.recv_multipart(zmq::DONTWAIT) {
            self.last_heard = Instant::now();
            self.sort_reply(&frames, 0);
        }
        // Forget requests the edge never answered.
        self.in_flight
            .forget_older(Duration::from_secs(30), Instant::now());
    }

    /// Replaces the socket when the server has been silent for [`REOPEN_AFTER`] (at most
    /// once per that time). Requests in flight on the old socket are given up.
    fn reopen_if_silent(&mut self) {
        if self.last_heard.elapsed() < REOPEN_AFTER || self.last_opened.elapsed() < REOPEN_AFTER {
            return;
        }
        if let Ok(socket) = open_socket(&self.context, &self.config) {
            self.socket = socket;
            self.last_opened = Instant::now();
            self.counters.reconnects += 1;
        }
    }

    fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// The next message, if one comes by `until` (see [`wait_readable`]).
    fn recv(&mut self, until: Instant) -> Option<Vec<Vec<u8>>> {
        loop {
            if !wait_readable(until, |ms| self.socket.poll(zmq::POLLIN, ms)) {
                return None;
            }
            match self.socket.recv_multipart(zmq::DONTWAIT) {
                Ok(frames) => {
                    self.last_heard = Instant::now();
                    return Some(frames);
                }
                Err(zmq::Error::EAGAIN | zmq::Error::EINTR) if Instant::now() < until => {}
                Err(_) => return None,
            }
        }
    }

    /// The current link estimate.
    pub fn link(&self) -> Link {
        self.estimator.link()
    }

    /// Counters so far.
    pub fn counters(&self) -> &DeviceCounters {
        &self.counters
    }

    fn input(&self, pixels: &[u8]) -> Result<Activation, ModelError> {
        let mut dims = vec![1];
        dims.extend(self.plan.input);
        Activation::from_values(normalize(pixels, self.plan.mean, self.plan.std), &dims)
    }

    /// The factor the deadline is divided by when planning (see
    /// [`DeviceConfig::safety_margin`]).
    pub fn margin(&self) -> f64 {
        if !self.config.safety_margin || self.overruns.len() < 5 {
            return 1.0;
        }
        let mut v: Vec<f64> = self.overruns.iter().copied().collect();
        v.sort_by(f64::total_cmp);
        v[(v.len() * 95 / 100).min(v.len() - 1)].clamp(1.0, 1.5)
    }

    /// What a whole local run of `exit` is expected to take: the latency models'
    /// prediction, or what this device measured if that was longer.
    fn local_cost(&self, exit: usize) -> f64 {
        self.plan.local_ms(exit).max(self.local_measured[exit - 1])
    }

    /// Runs every exit whole on this device a few times: the fallback's reference times.
    fn calibrate(&mut self) -> Result<(), ModelError> {
        let blank = vec![0u8; self.plan.input.iter().product()];
        for _ in 0..3 {
            for exit in 1..=self.plan.tables.len() {
                self.run_local(&blank, exit, self.plan.chain_len(exit))?;
            }
        }
        Ok(())
    }

    /// Runs layers `[0, end)` of `exit` on the device, stretched by the slowdown.
    fn run_local(
        &mut self,
        pixels: &[u8],
        exit: usize,
        end: usize,
    ) -> Result<(Activation, f64), ModelError> {
        self.settle();
        let input = self.input(pixels)?;
        let emulation = Emulation {
            clock: Some(&self.clock),
            cancel: None,
        };
        let (y, took) = run_slice_clocked(&*self.engine, exit, 0..end, &input, emulation)?;
        let ms = took.as_secs_f64() * 1e3;
        if end == self.plan.chain_len(exit) {
            self.learn_local(exit, ms);
        }
        Ok((y, ms))
    }

    /// Remembers a whole local run of `exit`: slow runs at once, fast ones slowly.
    fn learn_local(&mut self, exit: usize, ms: f64) {
        let m = &mut self.local_measured[exit - 1];
        *m = ms.max(0.95 * *m);
    }

    /// Starts the whole chain of `exit` on another thread (see [`DeviceConfig::speculate`]).
    fn speculate(&mut self, pixels: &[u8], exit: usize) -> Result<Speculation, ModelError> {
        self.settle();
        let input = self.input(pixels)?;
        let engine = Arc::clone(&self.engine);
        let end = self.plan.chain_len(exit);
        let clock = Arc::clone(&self.clock);
        let cancel = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&cancel);
        let handle = std::thread::spawn(move || {
            let emulation = Emulation {
                clock: Some(&clock),
                cancel: Some(&flag),
            };
            run_slice_clocked(&*engine, exit, 0..end, &input, emulation)
        });
        self.counters.speculated += 1;
        Ok(Speculation {
            exit,
            cancel,
            handle,
        })
    }

    /// Waits for a speculative run and returns its output and time (ms) if it finished. A
    /// panic in the run is a bug: it goes on here.
    fn join(&mut self, speculation: Speculation) -> Option<(Activation, f64)> {
        let out = match speculation.handle.join() {
            Ok(done) => done,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        match out {
            Ok((y, took)) => {
                let ms = took.as_secs_f64() * 1e3;
                self.learn_local(speculation.exit, ms);
                Some((y, ms))
            }
            Err(ModelError::Cancelled) => {
                self.counters.speculation_cancelled += 1;
                None
            }
            Err(_) => None,
        }
    }

    /// Cancels a speculative run whose answer is not needed, without waiting for it: it
    /// stops at its next layer, and is joined before the device runs layers again (so that
    /// two runs never share this machine's cores).
    fn cancel(&mut self, speculation: Speculation) {
        speculation.cancel.store(true, Ordering::Relaxed);
        self.settle();
        self.cancelled = Some(speculation);
    }

    /// Joins the cancelled speculative run, if any.
    fn settle(&mut self) {
        if let Some(speculation) = self.cancelled.take() {
            self.join(speculation);
        }
    }

    /// Encodes the prefix output for `(exit, p)` (the image when `prefix` is `None`) as
    /// `encoding` (the paper's raw image or `f32` when `None`), sends it, and waits until
    /// `until` for the reply. Returns the request id, the bytes sent, the (emulated) time
    /// spent encoding, ms, and the reply.
    #[allow(clippy::too_many_arguments)]
    fn offload(
        &mut self,
        pixels: &[u8],
        exit: usize,
        p: usize,
        prefix: Option<Activation>,
        encoding: Option<Encoding>,
        deadline_ms: f64,
        until: Instant,
    ) -> (u64, u64, f64, Reply) {
        let id = self.take_id();
        let started = Instant::now();
        let shape: Vec<usize> = match &prefix {
            None => self.plan.input.to_vec(),
            Some(x) => x.dims()[1..].to_vec(),
        };
        let chain = self.plan.chain_len(exit);
        let encoding = encoding
            .or(crate::plan::paper_encoding(p, chain))
            .unwrap_or(Encoding::F32);
        // The edge's first layer is a ReLU: sending relu(x) gives it the same result, and
        // zeros (half the values) shrink every encoding but raw f32.
        let relu = self.enters_relu(exit, p);
        let values: Option<Vec<f32>> = prefix.map(|x| {
            if relu {
                x.values().iter().map(|&v| v.max(0.0)).collect()
            } else {
                x.into_values()
            }
        });
        let deadline_us = (deadline_ms * 1e3).clamp(0.0, f64::from(u32::MAX)) as u32;
        let digest = self.plan.digest;
        let encode = || {
            let payload = match values.as_deref() {
                None => Payload::U8(pixels.to_vec()),
                Some(v) => Payload::encode_f32(v, encoding.values, &shape),
            };
            let mut msg = Message::infer(
                digest,
                id,
                exit as u8,
                p as u8,
                deadline_us,
                &shape,
                payload,
            );
            msg.header.set_encoding(encoding);
            msg.encode()
        };
        let frames = encode();
        let took = started.elapsed();
        let encode_ms = self.stretch_encoding((exit, p, encoding), took, encode);
        let bytes = frames[1].len() as u64;
        let sent = Instant::now();
        if let Err(e) = self.socket.send_multipart(frames, zmq::DONTWAIT) {
            let why = if e == zmq::Error::EAGAIN {
                "the edge is not connected".to_string()
            } else {
                format!("sending failed: {e}")
            };
            return (id, bytes, encode_ms, Reply::Refused(None, why));
        }
        self.in_flight.sent(id, sent, bytes);
        (id, bytes, encode_ms, self.await_reply(id, exit, p, until))
    }

    /// Whether layer `p` of exit `exit`'s chain, the edge's first, is a ReLU.
    fn enters_relu(&self, exit: usize, p: usize) -> bool {
        self.engine
            .table()
            .exit(exit)
            .and_then(|spec| spec.layers.get(p))
            .is_some_and(|l| l.kind == crate::model::layers::LayerKind::Relu)
    }

    /// Emulates encoding on the slower device: waits (K − 1) × this encoding's warm time
    /// for this (exit, partition) — the plan's encode time ÷ K where the plan has the route,
    /// else the median of `encode` run back to back the first time (so that this machine's
    /// jitter and a cold first call are not multiplied) — and returns the emulated time, ms.
    fn stretch_encoding<F: Fn() -> [Vec<u8>; 2]>(
        &mut self,
        key: (usize, usize, Encoding),
        took: Duration,
        encode: F,
    ) -> f64 {
        let factor = self.config.slowdown.factor();
        if factor <= 1.0 {
            return took.as_secs_f64() * 1e3;
        }
        // The plan's own figure for this encoding (its line, measured on this machine, × K)
        // when the plan has the route: the emulated device then encodes as it was planned,
        // as its layers run as they were profiled.
        let planned = self
            .planned_encode_ms(key)
            .map(|ms| Duration::from_secs_f64((ms / factor / 1e3).max(0.0)));
        let warm = *self.encode_warm.entry(key).or_insert_with(|| {
            if let Some(planned) = planned {
                return planned;
            }
            let mut times: Vec<Duration> = (0..5)
                .map(|_| {
                    let start = Instant::now();
                    std::hint::black_box(encode());
                    start.elapsed()
                })
                .collect();
            times.sort();
            times[times.len() / 2]
        });
        self.config.slowdown.stretch(took, warm, None).as_secs_f64() * 1e3
    }

    /// The plan's encode time (device, at its slowdown) of `encoding` at partition `p` of
    /// `exit`: the route's device time less its layers'.
    fn planned_encode_ms(&self, (exit, p, encoding): (usize, usize, Encoding)) -> Option<f64> {
        let layers = self.plan.tables.get(exit - 1)?.pairs.get(p)?.device_ms;
        self.plan
            .families
            .iter()
            .filter(|f| f.exit == exit)
            .flat_map(|f| f.remote.iter())
            .find(|r| r.partition == p && r.encoding == Some(encoding))
            .map(|r| r.cost.device_ms - layers)
    }

    /// Waits until `until` for the reply to request `id`, sent for `(exit, p)`.
    fn await_reply(&mut self, id: u64, exit: usize, p: usize, until: Instant) -> Reply {
        let Some(sent) = self.in_flight.sent_at(id) else {
            return Reply::Timeout;
        };
        loop {
            let Some(frames) = self.recv(until) else {
                return Reply::Timeout;
            };
            let round_trip_ms = sent.elapsed().as_secs_f64() * 1e3;
            let Some(msg) = self.sort_reply(&frames, id) else {
                continue;
            };
            self.in_flight.answered(id);
            push(&mut self.answered_ids, id, ANSWERED_IDS);
            let h = &msg.header;
            let classes = self.engine.table().classes;
            return match (h.kind, msg.payload) {
                (MessageType::Result, Payload::F32(logits))
                    if usize::from(h.exit) == exit
                        && usize::from(h.partition) == p
                        && logits.len() == classes =>
                {
                    let edge_ms = f64::from(h.edge_us) / 1e3;
                    let queue_ms = f64::from(h.queue_us) / 1e3;
                    let network_ms = (round_trip_ms - edge_ms - queue_ms).max(0.0);
                    Reply::Result {
                        logits,
                        edge_ms,
                        queue_ms,
                        network_ms,
                        batch: h.batch,
                    }
                }
                (MessageType::Error, Payload::Text(text)) => {
                    Reply::Refused(ErrorCode::from_u16(h.code), text)
                }
                (MessageType::Result, _) => {
                    self.counters.mismatched_replies += 1;
                    Reply::Refused(
                        None,
                        format!(
                            "a result for exit {} partition {}, not the exit {exit} partition {p} asked for",
                            h.exit, h.partition
                        ),
                    )
                }
                (kind, _) => Reply::Refused(None, format!("unexpected {kind:?} reply")),
            };
        }
    }

    /// Without speculation: when to stop waiting for the edge so that a local exit can
    /// still answer in time — but never before the reply is even due: when the fallback's
    /// reserve leaves less than the predicted remote time, trust the plan for 1.5× that
    /// time (within the deadline), else every request would time out and fall back.
    fn give_up_at(
        &self,
        plan: &Decision,
        now: Instant,
        deadline: Instant,
        left_ms: f64,
    ) -> Instant {
        let remote_ms = plan.network_ms + plan.edge_ms;
        let margin = self.config.fallback_margin;
        let fallback_exit = self
            .plan
            .best_local((left_ms - remote_ms) / margin, |e| self.local_cost(e));
        let reserve = wait_ms(self.local_cost(fallback_exit) * margin + 1.0);
        let until = deadline.checked_sub(reserve).unwrap_or(now);
        let due = later(now, wait_ms(remote_ms));
        if until < due {
            let trust = wait_ms(1.5 * remote_ms + 2.0);
            return later(now, trust).min(deadline);
        }
        until
    }

    /// Classifies one image (`u8` pixels `[C, H, W]`) within `deadline_ms`.
    pub fn infer(&mut self, pixels: &[u8], deadline_ms: f64) -> Result<Answer, ModelError> {
        let started = Instant::now();
        let deadline = later(started, wait_ms(deadline_ms));
        self.settle();
        self.drain_late_replies();
        let backing_off =
            self.config.fallback && self.backoff_until.is_some_and(|t| Instant::now() < t);
        let link = self.estimator.link();
        // The batch size the plan's edge times are taken at: the recent replies'.
        let batch = self.estimator.edge_batch();
        let margin = self.margin();
        let plan_deadline_ms = deadline_ms / margin;
        let plan = if backing_off {
            // The edge failed recently: plan as if there were no network.
            self.plan.decide(
                Link {
                    bandwidth_bps: f64::MIN_POSITIVE,
                    rtt_ms: f64::INFINITY,
                },
                plan_deadline_ms,
            )
        } else {
            self.plan
                .decide_policy(self.config.policy, link, plan_deadline_ms, batch)
        };
        let n = self.plan.chain_len(plan.exit);
        let mut answer = Answer {
            request_id: 0,
            class: 0,
            logits: Vec::new(),
            exit: plan.exit,
            partition: plan.partition,
            source: Source::Local,
            fallback: None,
            plan,
            link,
            deadline_ms,
            total_ms: 0.0,
            device_ms: 0.0,
            network_ms: 0.0,
            edge_ms: 0.0,
            queue_ms: 0.0,
            batch: 0,
            bytes: 0,
            met: false,
            margin: 1.0,
        };
        if plan.partition == n {
            let (y, ms) = self.run_local(pixels, plan.exit, n)?;
            answer.logits = y.to_values();
            answer.device_ms = ms;
            self.counters.local += 1;
        } else {
            let p = plan.partition;
            let prefix = if p == 0 {
                None
            } else {
                let (y, ms) = self.run_local(pixels, plan.exit, p)?;
                answer.device_ms = ms;
                Some(y)
            };
            let now = Instant::now();
            let left_ms = deadline_ms - (now - started).as_secs_f64() * 1e3;
            let fallback_margin = self.config.fallback_margin;
            let (speculation, mut until) = if self.config.fallback && self.config.speculate {
                // The local answer is made while waiting: the edge has until the deadline.
                let guard_ms = SPECULATION_GUARD.as_secs_f64() * 1e3;
                let exit = self
                    .plan
                    .best_local((left_ms - guard_ms) / fallback_margin, |e| {
                        self.local_cost(e)
                    });
                let until = deadline
                    .checked_sub(SPECULATION_GUARD)
                    .unwrap_or(now)
                    .max(now);
                (Some(self.speculate(pixels, exit)?), until)
            } else {
                (None, self.give_up_at(&plan, now, deadline, left_ms))
            };
            if !self.config.fallback {
                until = later(deadline.max(now), self.config.patience);
            }
            let (id, bytes, encode_ms, mut reply) = self.offload(
                pixels,
                plan.exit,
                p,
                prefix,
                plan.encoding,
                deadline_ms,
                until,
            );
            answer.device_ms += encode_ms;
            if let (Reply::Timeout, Some(running)) = (&reply, &speculation) {
                // The local run is late too: take whichever answer comes first.
                while !running.handle.is_finished() {
                    reply = self.await_reply(id, plan.exit, p, Instant::now() + POLL_SLICE);
                    if !matches!(reply, Reply::Timeout) {
                        break;
                    }
                }
            }
            answer.request_id = id;
            answer.bytes = bytes;
            match reply {
                Reply::Result {
                    logits,
                    edge_ms,
                    queue_ms,
                    network_ms,
                    batch: ran_in,
                } => {
                    if let Some(speculation) = speculation {
                        self.cancel(speculation);
                    }
                    self.estimator.observe(bytes, network_ms);
                    // The excess over what the plan says for the batch it actually ran in.
                    let planned = plan.in_batch(f64::from(ran_in.max(1)), plan_deadline_ms);
                    self.estimator
                        .observe_edge(edge_ms + queue_ms - planned.edge_ms);
                    self.estimator.observe_batch(ran_in);
                    answer.batch = ran_in;
                    self.backoff = INITIAL_BACKOFF;
                    self.backoff_until = None;
                    answer.logits = logits;
                    answer.source = Source::Edge;
                    answer.edge_ms = edge_ms;
                    answer.queue_ms = queue_ms;
                    answer.network_ms = network_ms;
                    self.counters.edge += 1;
                }
                failed => {
                    if matches!(failed, Reply::Timeout) {
                        self.in_flight
                            .give_up(id, Instant::now(), &mut self.estimator);
                    }
                    let reason = match failed {
                        Reply::Timeout => "no reply from the edge in time".to_string(),
                        Reply::Refused(code, text) => match code {
                            Some(code) => format!("edge refused: {} ({text})", code.name()),
                            None => text,
                        },
                        Reply::Result { .. } => unreachable!(),
                    };
                    self.backoff_until = Some(Instant::now() + self.backoff);
                    self.backoff = (self.backoff * 2).min(Duration::from_secs(8));
                    self.reopen_if_silent();
                    let speculated = speculation.and_then(|s| {
                        let exit = s.exit;
                        self.join(s).map(|run| (exit, run))
                    });
                    let (exit, (y, ms)) = match speculated {
                        Some(done) => done,
                        None => {
                            let left_ms = deadline_ms - started.elapsed().as_secs_f64() * 1e3;
                            let exit = self
                                .plan
                                .best_local(left_ms / fallback_margin, |e| self.local_cost(e));
                            (
                                exit,
                                self.run_local(pixels, exit, self.plan.chain_len(exit))?,
                            )
                        }
                    };
                    let chain = self.plan.chain_len(exit);
                    answer.logits = y.to_values();
                    answer.device_ms += ms;
                    answer.exit = exit;
                    answer.partition = chain;
                    answer.source = Source::Fallback;
                    answer.fallback = Some(reason);
                    self.counters.fallback += 1;
                }
            }
        }
        if answer.request_id == 0 {
            answer.request_id = self.take_id();
        }
        answer.class = argmax(&answer.logits);
        answer.total_ms = started.elapsed().as_secs_f64() * 1e3;
        answer.met = answer.total_ms <= deadline_ms;
        answer.margin = margin;
        if answer.source != Source::Fallback && answer.plan.predicted_ms > 0.0 {
            push(
                &mut self.overruns,
                answer.total_ms / answer.plan.predicted_ms,
                40,
            );
        }
        self.counters.answered += 1;
        Ok(answer)
    }

    /// Runs exactly `(exit, partition)`: the prefix here, the rest on the edge (no
    /// fallback), the tensor sent as `encoding` (the paper's raw image or `f32` when
    /// `None`). `partition` equal to the chain length runs locally. Returns the logits.
    pub fn infer_pair(
        &mut self,
        pixels: &[u8],
        exit: usize,
        partition: usize,
        encoding: Option<Encoding>,
        timeout: Duration,
    ) -> Result<Vec<f32>, DeviceError> {
        if !(1..=self.plan.tables.len()).contains(&exit) {
            return Err(DeviceError::Invalid(format!("exit {exit} does not exist")));
        }
        let n = self.plan.chain_len(exit);
        if partition > n {
            return Err(DeviceError::Invalid(format!(
                "partition {partition} is past exit {exit}'s {n} layers"
            )));
        }
        if partition == n {
            return Ok(self.run_local(pixels, exit, n)?.0.to_values());
        }
        let prefix = if partition == 0 {
            None
        } else {
            Some(self.run_local(pixels, exit, partition)?.0)
        };
        let until = later(Instant::now(), timeout);
        match self
            .offload(pixels, exit, partition, prefix, encoding, 0.0, until)
            .3
        {
            Reply::Result { logits, .. } => Ok(logits),
            Reply::Refused(code, text) => Err(DeviceError::Edge { code, text }),
            Reply::Timeout => Err(DeviceError::Timeout(timeout)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimator_separates_round_trip_from_bandwidth() {
        let mut e = LinkEstimator::new(
            Link {
                bandwidth_bps: 1e6,
                rtt_ms: 1.0,
            },
            8,
        );
        assert_eq!(e.link().bandwidth_bps, 1e6);
        e.observe_rtt(2.5);
        e.observe_rtt(2.0);
        // 1,000 bytes at 400 kbit/s = 20 ms of transfer, plus the 2 ms round trip.
        e.observe(1000, 22.0);
        e.observe(4000, 82.0);
        let link = e.link();
        assert!((link.rtt_ms - 2.0).abs() < 1e-9);
        assert!((link.bandwidth_bps - 400e3).abs() < 1.0, "{link:?}");
        // An edge 3 ms slower than its models adds 3 ms to the per-request overhead.
        e.observe_edge(3.0);
        e.observe_edge(2.0);
        e.observe_edge(3.5);
        assert!((e.link().rtt_ms - 5.0).abs() < 1e-9);
        assert!((e.link().bandwidth_bps - 400e3).abs() < 1.0);
    }

    #[test]
    fn estimator_forgets_old_transfers() {
        let mut e = LinkEstimator::new(
            Link {
                bandwidth_bps: 1e6,
                rtt_ms: 0.0,
            },
            2,
        );
        e.observe_rtt(0.0);
        e.observe(1000, 80.0); // 100 kbit/s
        e.observe(1000, 8.0); // 1 Mbit/s
        e.observe(1000, 8.0);
        assert!((e.link().bandwidth_bps - 1e6).abs() < 1.0);
        let fixed = LinkEstimator::fixed(Link {
            bandwidth_bps: 5.0,
            rtt_ms: 1.0,
        });
        assert_eq!(fixed.link().bandwidth_bps, 5.0);
    }

    #[test]
    fn a_stale_slow_transfer_gives_way_to_the_probe() {
        let mut e = LinkEstimator::new(
            Link {
                bandwidth_bps: 1e6,
                rtt_ms: 0.0,
            },
            8,
        );
        e.observe_rtt(0.0);
        e.set_initial_bandwidth(100e3);
        let now = Instant::now();
        e.observe_at(1000, 400.0, now); // 20 kbit/s: a time-out, say
        assert!((e.link_at(now).bandwidth_bps - 20e3).abs() < 1.0);
        let later = now + LinkEstimator::MAX_AGE + Duration::from_millis(1);
        assert!((e.link_at(later).bandwidth_bps - 100e3).abs() < 1.0);
    }

    /// An estimator that has seen four transfers of 4,096 bytes at 1 Mbit/s (32.8 ms each
    /// plus a 1 ms round trip) at `at`.
    fn one_megabit(at: Instant) -> LinkEstimator {
        let mut e = LinkEstimator::new(
            Link {
                bandwidth_bps: 1e6,
                rtt_ms: 1.0,
            },
            8,
        );
        e.observe_rtt(1.0);
        for _ in 0..4 {
            e.observe_at(4096, 33.768, at);
        }
        assert!((e.link_at(at).bandwidth_bps - 1e6).abs() < 1.0);
        e
    }

    #[test]
    fn a_late_reply_does_not_drag_the_estimate_down() {
        let t0 = Instant::now();
        let mut e = one_megabit(t0);
        let mut in_flight = InFlight::default();
        in_flight.sent(7, t0, 4096);
        // No reply within 200 ms: the device answers locally, and takes the link to be at
        // least that slow.
        let gave_up = t0 + Duration::from_millis(200);
        in_flight.give_up(7, gave_up, &mut e);
        let after_timeout = e.link_at(gave_up).bandwidth_bps;
        assert!(after_timeout < 0.6e6, "{after_timeout}");
        // The reply was late because the edge was busy (190 ms queued, 5 ms computed); it is
        // read 2.5 s after the request left, at the next request.
        let mut header = Header::new(MessageType::Result, [0; 32], 7);
        header.queue_us = 190_000;
        header.edge_us = 5_000;
        assert!(in_flight.late(&header, &mut e));
        let read = t0 + Duration::from_millis(2500);
        let after_late = e.link_at(read).bandwidth_bps;
        // Counted as a transfer of 2.5 s, it would have dropped the estimate to ~90 kbit/s;
        // the edge's share explains the wait: the link is as fast as before.
        assert!(
            after_late >= after_timeout,
            "{after_late} < {after_timeout}"
        );
        assert!((after_late - 1e6).abs() < 1.0, "{after_late}");
        // Read a second time (it cannot be), it changes nothing.
        assert!(!in_flight.late(&header, &mut e));
        assert_eq!(e.link_at(read).bandwidth_bps, after_late);
    }

    #[test]
    fn the_batch_to_plan_for_is_the_median_of_recent_replies() {
        let link = Link {
            bandwidth_bps: 1e6,
            rtt_ms: 2.0,
        };
        let mut e = LinkEstimator::new(link, 5);
        assert_eq!(e.edge_batch(), 1.0, "nothing heard yet: alone");
        e.observe_batch(0); // an edge that does not say: alone
        assert_eq!(e.edge_batch(), 1.0);
        for b in [8, 8, 16, 8] {
            e.observe_batch(b);
        }
        assert_eq!(e.edge_batch(), 8.0);
        for _ in 0..5 {
            e.observe_batch(1);
        }
        assert_eq!(
            e.edge_batch(),
            1.0,
            "the window forgets a load that has gone"
        );
        // Sizes heard longer ago than MAX_AGE are forgotten: back to planning alone.
        let now = Instant::now();
        e.observe_batch_at(32, now);
        e.observe_batch_at(32, now);
        e.observe_batch_at(32, now);
        e.observe_batch_at(32, now);
        assert_eq!(e.edge_batch_at(now), 32.0);
        let later = now + LinkEstimator::MAX_AGE + Duration::from_secs(1);
        assert_eq!(e.edge_batch_at(later), 1.0);
        let mut fixed = LinkEstimator::fixed(link);
        fixed.observe_batch(4);
        assert_eq!(
            fixed.edge_batch(),
            4.0,
            "a fixed link, a busy edge all the same"
        );
    }

    #[test]
    fn a_late_reply_from_a_quick_edge_keeps_the_slow_link() {
        let t0 = Instant::now();
        let mut e = one_megabit(t0);
        let mut in_flight = InFlight::default();
        in_flight.sent(8, t0, 4096);
        let gave_up = t0 + Duration::from_millis(300);
        in_flight.give_up(8, gave_up, &mut e);
        let after_timeout = e.link_at(gave_up).bandwidth_bps;
        // The edge took 2 ms: the network took at least 298 ms of the wait.
        let mut header = Header::new(MessageType::Result, [0; 32], 8);
        header.edge_us = 2_000;
        assert!(in_flight.late(&header, &mut e));
        let after_late = e.link_at(gave_up).bandwidth_bps;
        assert!(after_late >= after_timeout);
        let all_bits = 5.0 * 4096.0 * 8.0;
        let expected = all_bits * 1e3 / (4.0 * 32.768 + 297.0);
        assert!(
            (after_late - expected).abs() < 1.0,
            "{after_late} vs {expected}"
        );
        // An error reply, or a reply to a request never sent, teaches nothing.
        in_flight.sent(9, t0, 4096);
        let error = Header::new(MessageType::Error, [0; 32], 9);
        assert!(!in_flight.late(&error, &mut e));
        let stranger = Header::new(MessageType::Result, [0; 32], 99);
        assert!(!in_flight.late(&stranger, &mut e));
        assert_eq!(e.link_at(gave_up).bandwidth_bps, after_late);
    }

    #[test]
    fn edge_and_queue_times_add_without_overflow() {
        let mut header = Header::new(MessageType::Result, [0; 32], 1);
        header.edge_us = u32::MAX;
        header.queue_us = u32::MAX;
        assert_eq!(edge_time_ms(&header), 2.0 * f64::from(u32::MAX) / 1e3);
        header.edge_us = 1_500;
        header.queue_us = 250;
        assert_eq!(edge_time_ms(&header), 1.75);
    }

    #[test]
    fn a_poll_interrupted_by_a_signal_is_not_a_time_out() {
        let until = Instant::now() + Duration::from_secs(5);
        let mut calls = 0;
        let ready = wait_readable(until, |_| {
            calls += 1;
            if calls < 3 {
                Err(zmq::Error::EINTR)
            } else {
                Ok(1)
            }
        });
        assert!(ready);
        assert_eq!(calls, 3);
        // Another error ends the wait.
        let ready = wait_readable(until, |_| Err(zmq::Error::ETERM));
        assert!(!ready);
    }

    #[test]
    fn a_slice_under_a_millisecond_waits_a_millisecond_instead_of_spinning() {
        let started = Instant::now();
        let until = started + Duration::from_micros(300);
        let mut asked = Vec::new();
        let ready = wait_readable(until, |ms| {
            asked.push(ms);
            std::thread::sleep(Duration::from_millis(ms.unsigned_abs()));
            Ok(0)
        });
        assert!(!ready);
        assert_eq!(asked, [1]);
        // 2.2 ms left: 3 ms asked (rounded up), one poll.
        let mut asked = Vec::new();
        let until = Instant::now() + Duration::from_micros(2200);
        wait_readable(until, |ms| {
            asked.push(ms);
            std::thread::sleep(Duration::from_millis(ms.unsigned_abs()));
            Ok(0)
        });
        assert_eq!(asked.first(), Some(&3));
        assert_eq!(asked.len(), 1);
        // Nothing left: one poll that does not wait.
        let mut asked = Vec::new();
        wait_readable(Instant::now(), |ms| {
            asked.push(ms);
            Ok(0)
        });
        assert_eq!(asked, [0]);
    }

    #[test]
    fn waits_from_any_number_never_panic() {
        assert_eq!(wait_ms(250.0), Duration::from_millis(250));
        assert_eq!(wait_ms(1e23), LONGEST_WAIT);
        assert_eq!(wait_ms(f64::INFINITY), LONGEST_WAIT);
        assert_eq!(wait_ms(f64::MAX), LONGEST_WAIT);
        assert_eq!(wait_ms(f64::NAN), Duration::ZERO);
        assert_eq!(wait_ms(-5.0), Duration::ZERO);
        assert_eq!(wait_ms(f64::NEG_INFINITY), Duration::ZERO);
        let now = Instant::now();
        assert_eq!(later(now, Duration::MAX), now + LONGEST_WAIT);
    }

    #[test]
    fn the_fallback_exit_follows_the_planner_rule_on_ties() {
        let accuracy = [0.8, 0.9, 0.9, 0.95, 0.95];
        let tables = (1..=5)
            .map(|exit| ExitTable {
                exit,
                accuracy: accuracy[exit - 1],
                pairs: leak(vec![
                    crate::plan::PairCost {
                        device_ms: 0.0,
                        edge_ms: 1.0,
                        bytes: 1024,
                        edge_ms_per_image: 1.0,
                    },
                    crate::plan::PairCost {
                        device_ms: 10.0,
                        edge_ms: 0.0,
                        bytes: 0,
                        edge_ms_per_image: 0.0,
                    },
                ]),
            })
            .collect::<Vec<_>>();
        let plan = DevicePlan {
            digest: [0; 32],
            families: crate::plan::exact_families(&tables),
            families_by_accuracy: &[4, 3, 2, 1, 0],
            tables: leak(tables),
            by_accuracy: &[4, 3, 2, 1, 0],
            mean: &[0.5],
            std: &[0.25],
            input: &[1, 32, 32],
        };
        let cost = |exit: usize| [30.0, 60.0, 60.0, 90.0, 100.0][exit - 1];
        // Exits 4 and 5 fit and are as accurate: the cheaper, exit 4.
        assert_eq!(plan.best_local(120.0, cost), 4);
        assert_eq!(plan.best_local(95.0, cost), 4);
        // Exits 2 and 3 as accurate and as costly: the deeper.
        assert_eq!(plan.best_local(70.0, cost), 3);
        // Nothing fits: the fastest.
        assert_eq!(plan.best_local(10.0, cost), 1);
    }

    /// A link whose uplink is a token bucket of `rate_bps` with a burst of `burst_bytes`
    /// (full at the start) in front of a 1 Gbit/s line, `rtt_ms` of round trip, and
    /// `overhead` bytes of headers on every ping; pongs come back at once. Time is
    /// simulated: a ping leaves when the probe has read the pong before it.
    struct TokenBucket {
        start: Instant,
        rate: f64,
        burst: f64,
        tokens: f64,
        refilled_at: f64,
        line_free_at: f64,
        rtt_s: f64,
        overhead: usize,
        now: f64,
        pongs: HashMap<u64, f64>,
        sent_bytes: usize,
    }

    impl TokenBucket {
        fn new(rate_bps: f64, burst_bytes: f64, rtt_ms: f64) -> Self {
            Self {
                start: Instant::now(),
                rate: rate_bps / 8.0,
                burst: burst_bytes,
                tokens: burst_bytes,
                refilled_at: 0.0,
                line_free_at: 0.0,
                rtt_s: rtt_ms / 1e3,
                overhead: 200,
                now: 0.0,
                pongs: HashMap::new(),
                sent_bytes: 0,
            }
        }
    }

    impl PingLink for TokenBucket {
        fn send(&mut self, bytes: usize) -> Option<(u64, Instant)> {
            let size = (bytes + self.overhead) as f64;
            let at_bucket = (self.now + self.rtt_s / 2.0).max(self.line_free_at);
            self.tokens =
                (self.tokens + (at_bucket - self.refilled_at) * self.rate).min(self.burst);
            let wait = ((size - self.tokens) / self.rate).max(0.0);
            let leaves = at_bucket + wait;
            self.tokens = (self.tokens + wait * self.rate).min(self.burst) - size;
            self.refilled_at = leaves;
            self.line_free_at = leaves + size / 125e6;
            let id = self.pongs.len() as u64;
            self.pongs.insert(id, self.line_free_at + self.rtt_s / 2.0);
            self.sent_bytes += bytes;
            Some((id, self.start + Duration::from_secs_f64(self.now)))
        }

        fn pong(&mut self, id: u64) -> Option<Instant> {
            let at = self.pongs[&id];
            self.now = self.now.max(at);
            Some(self.start + Duration::from_secs_f64(at))
        }
    }

    /// The probe over a simulated link: the rate it measured, as a fraction of the bucket's
    /// rate in payload bytes (the headers take their share of the bucket).
    fn probe_through(rate_bps: f64, burst_kib: f64, rtt_ms: f64) -> (f64, TokenBucket) {
        let mut link = TokenBucket::new(rate_bps, burst_kib * 1024.0, rtt_ms);
        let stretch =
            measure_uplink(&mut link, 1024, Duration::from_secs_f64(rtt_ms / 1e3)).expect("a rate");
        let payload_bps = rate_bps * 1024.0 / (1024 + link.overhead) as f64;
        (stretch.bandwidth_bps() / payload_bps, link)
    }

    #[test]
    fn the_probe_sees_through_a_token_buckets_burst() {
        // What the probe can see through: a bucket that runs dry within its first stretch
        // (50 ms, or four round trips), counting three round trips of slow start, while the
        // probe sends up to 16 KiB per round trip.
        let mut cases = 0;
        for rtt_ms in [0.2f64, 5.0, 40.0] {
            let rtt = rtt_ms / 1e3;
            let probe_bps = 16.0 * 8192.0 / rtt;
            let stretch = (4.0 * rtt).max(0.05);
            for rate_bps in [100e3, 1e6, 10e6, 100e6] {
                for burst_kib in [2.0, 3.0, 16.0, 64.0, 256.0] {
                    let dry = burst_kib * 8192.0 / (probe_bps - rate_bps);
                    if rate_bps * 2.0 > probe_bps || 3.0 * rtt + dry > stretch {
                        continue;
                    }
                    let (ratio, link) = probe_through(rate_bps, burst_kib, rtt_ms);
                    let case = format!(
                        "{rate_bps} bit/s, burst {burst_kib} KiB, round trip {rtt_ms} ms: \
                         {ratio:.3} of the rate, {} bytes in {:.3} s",
                        link.sent_bytes, link.now
                    );
                    assert!((0.9..1.1).contains(&ratio), "{case}");
                    // Bounded: at 100 kbit/s, 16 KiB left in flight when the burst ends
                    // take 1.3 s to drain.
                    assert!(link.now < 2.5, "{case}");
                    cases += 1;
                }
            }
        }
        assert_eq!(cases, 36);
    }

    #[test]
    fn pongs_that_arrive_together_count_as_one_clump() {
        let t0 = Instant::now();
        let ms = |ms: f64| t0 + Duration::from_secs_f64(ms / 1e3);
        let mut probe = RateProbe::new(1024, Duration::from_micros(100));
        // A burst at line rate, then pairs of pongs every 200 ms (2 KiB per 200 ms, 81.92
        // kbit/s), the second 0.05 ms after the first, as a bucket releases them.
        for i in 0..20 {
            probe.pong(ms(0.1 * f64::from(i)));
        }
        let mut steady = None;
        for k in 1..=8 {
            let at = 200.0 * f64::from(k);
            probe.pong(ms(at));
            steady = steady.or_else(|| probe.steady());
            probe.pong(ms(at + 0.05));
            steady = steady.or_else(|| probe.steady());
        }
        let steady = steady.expect("steady");
        let ratio = steady.bandwidth_bps() / 81920.0;
        assert!((0.99..1.01).contains(&ratio), "{steady:?}");
        // A stretch is never cut inside a pair: always whole pairs of pings.
        assert_eq!(steady.bytes % 2048, 0, "{steady:?}");
    }

    #[test]
    fn the_probe_stops_at_its_byte_budget_on_a_link_faster_than_it_can_tell() {
        // A 1 Gbit/s line and nothing else: every stretch at the line rate; the probe stops
        // once two 50 ms stretches agree, within its budget.
        let mut link = TokenBucket::new(1e12, 1e12, 0.05);
        let stretch = measure_uplink(&mut link, 1024, Duration::from_micros(50)).unwrap();
        assert!(link.sent_bytes <= PROBE_MAX_BYTES);
        assert!(stretch.bandwidth_bps() > 100e6, "{stretch:?}");
        // A ping larger than the budget still goes once, and a single pong measures nothing.
        let mut link = TokenBucket::new(1e6, 1e9, 1.0);
        assert_eq!(
            measure_uplink(&mut link, PROBE_MAX_BYTES + 1, Duration::from_millis(1)),
            None
        );
        assert_eq!(link.sent_bytes, PROBE_MAX_BYTES + 1);
    }

    fn leak<T>(items: Vec<T>) -> &'static [T] {
        Box::leak(items.into_boxed_slice())
    }

    /// A device client on fresh weights (the generated kernels, portable instruction set)
    /// with a plan of made-up costs — each layer 2 ms on the device, 1 ms on the edge, 1 KiB
    /// on the wire — and nothing listening at its endpoint.
    fn client_without_edge(speculate: bool) -> DeviceClient {
        let device = crate::Backend::Flex.device();
        let model = crate::BranchyAlexNetConfig::new()
            .with_channels(1)
            .init(&device);
        let table = model.layer_table().clone();
        let engine =
            crate::PackedNetwork::new(&table, &model.weights(), crate::Isa::Portable).unwrap();
        let tables = table
            .exits
            .iter()
            .map(|spec| {
                let n = spec.len();
                let pairs = (0..=n)
                    .map(|p| crate::plan::PairCost {
                        device_ms: 2.0 * p as f64,
                        edge_ms: (n - p) as f64,
                        bytes: if p == n { 0 } else { 1024 },
                        edge_ms_per_image: (n - p) as f64 / 2.0,
                    })
                    .collect();
                ExitTable {
                    exit: spec.exit,
                    accuracy: 0.8 + 0.02 * spec.exit as f64,
                    pairs: leak(pairs),
                }
            })
            .collect::<Vec<_>>();
        // Every remote partition has the same slope; partition 0 costs least.
        let plan = DevicePlan {
            digest: [0; 32],
            families: crate::plan::exact_families(&tables),
            families_by_accuracy: &[4, 3, 2, 1, 0],
            tables: leak(tables),
            by_accuracy: &[4, 3, 2, 1, 0],
            mean: &[0.5],
            std: &[0.25],
            input: &[1, 32, 32],
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut config = DeviceConfig::new(format!("tcp://127.0.0.1:{port}"), Security::Null);
        config.speculate = speculate;
        DeviceClient::connect(Arc::new(engine), plan, config).unwrap()
    }

    #[test]
    fn huge_infinite_or_nan_deadlines_are_answered_without_panic() {
        for speculate in [true, false] {
            let mut client = client_without_edge(speculate);
            let pixels = vec![0u8; 1024];
            for deadline_ms in [1e23, f64::MAX, f64::INFINITY, f64::NAN, -5.0, 300.0] {
                let started = Instant::now();
                let answer = client.infer(&pixels, deadline_ms).unwrap();
                assert!(started.elapsed() < Duration::from_secs(20));
                // Nobody listens: the device answers on its own.
                assert_ne!(answer.source, Source::Edge, "{deadline_ms}");
                assert_eq!(answer.logits.len(), 10);
            }
        }
    }
}
