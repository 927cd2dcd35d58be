//! The Edgent optimizer (DESIGN.md §5): for a bandwidth and a deadline, the most accurate
//! exit whose best partition meets the deadline, and that partition.
//!
//! The device runs layers `[0, p)`, sends the activation entering layer `p`, the edge runs
//! `[p, N)` and returns the logits. `p = N` is device-only; `p = 0` uploads the raw `u8`
//! image and is edge-only. For exit `i`, partition `p`, bandwidth `B` and round trip `r`:
//!
//! `T(i, p) = Σ_{j<p} ED_j + Σ_{j≥p} ES_j + [p < N_i]·(bytes(i, p)/B + r)`
//!
//! With encodings (DESIGN.md §12) the tensor at the split is a third choice: a [`Route`] is
//! a partition and an encoding, with the encoding's time on each side and its bytes. Routes
//! that give the same accuracy form a [`Family`] — an exit's exact routes (device-only, the
//! image raw or compressed, `f32` activations with or without zstd) or those of one lossy
//! kind of values — and Algorithm 1 ranks families as it ranked exits: the most accurate
//! family whose fastest route meets the deadline.

use serde::{Deserialize, Serialize};

use crate::model::layers::LayerTable;
use crate::wire::encoding::{Encoding, Values};

/// Build-time cost of one (exit, partition) pair.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PairCost {
    /// Predicted device time of layers `[0, p)`, ms.
    pub device_ms: f64,
    /// Predicted edge time of layers `[p, N)`, ms.
    pub edge_ms: f64,
    /// Bytes sent to the edge (0 when device-only).
    pub bytes: u64,
    /// Predicted edge time each further request adds when the edge runs this suffix for a
    /// batch of them (DESIGN.md §11), ms: a batch of `b` takes
    /// [`edge_ms_at(b)`](PairCost::edge_ms_at). 0 when device-only.
    pub edge_ms_per_image: f64,
}

impl PairCost {
    /// Predicted edge time of a batch of `batch` requests of this pair (at least 1), ms:
    /// the time every request of the batch waits for its result.
    pub fn edge_ms_at(&self, batch: f64) -> f64 {
        self.edge_ms + (batch - 1.0).max(0.0) * self.edge_ms_per_image
    }

    /// Predicted network time over `link`, ms: transfer plus round trip, 0 when device-only,
    /// and infinite over a link that is not [usable](Link::usable): no plan that needs the
    /// network can then meet a deadline.
    pub fn network_ms(&self, link: Link, device_only: bool) -> f64 {
        if device_only {
            0.0
        } else if !link.usable() {
            f64::INFINITY
        } else {
            self.bytes as f64 * 8_000.0 / link.bandwidth_bps + link.rtt_ms
        }
    }
}

/// Costs of every partition of one exit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExitCosts {
    /// Exit, 1 to 5.
    pub exit: usize,
    /// Test accuracy of the exit.
    pub accuracy: f64,
    /// `pairs[p]` for partitions `p = 0..=N`: the paper's routes (the raw image at 0, `f32`
    /// activations after), which the baselines use.
    pub pairs: Vec<PairCost>,
    /// Every family of routes Edgent chooses from, the exact one included; empty when only
    /// the paper's routes are known (then [`ExitCosts::families`] is their exact family).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub families: Vec<Family>,
}

impl ExitCosts {
    /// The exit's accuracy when its tensor is sent as `encoding`: its lossy family's for a
    /// lossy encoding (when there is one), else the exact accuracy.
    pub fn accuracy_of(&self, encoding: Option<Encoding>) -> f64 {
        let lossy = encoding.map(|e| e.values).filter(|v| v.lossy());
        self.families
            .iter()
            .find(|f| lossy.is_some() && f.lossy == lossy)
            .map_or(self.accuracy, |f| f.accuracy)
    }

    /// The costs compiled into generated tables: each exit's paper routes, and every family.
    pub fn from_tables(exits: &[ExitTable], families: &[FamilyTable]) -> Vec<ExitCosts> {
        exits
            .iter()
            .map(|t| ExitCosts {
                exit: t.exit,
                accuracy: t.accuracy,
                pairs: t.pairs.to_vec(),
                families: families
                    .iter()
                    .filter(|f| f.exit == t.exit)
                    .map(FamilyTable::family)
                    .collect(),
            })
            .collect()
    }

    /// The families Edgent chooses from: `families`, or the exact family of `pairs`.
    pub fn families(&self) -> Vec<Family> {
        if self.families.is_empty() {
            vec![Family::exact(self.exit, self.accuracy, &self.pairs)]
        } else {
            self.families.clone()
        }
    }
}

/// One way to run an exit's chain: split at `partition`, the tensor at the split sent in
/// `encoding` (`None`: device-only, nothing is sent).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Route {
    /// Partition point: the device runs `[0, p)`, the edge `[p, N)`.
    pub partition: usize,
    /// How the tensor at the split is sent; `None` when device-only.
    pub encoding: Option<Encoding>,
    /// Device time (layers and encoding), edge time (decoding and layers), bytes sent.
    pub cost: PairCost,
}

impl Route {
    /// The predicted breakdown of this route of `exit`, its request run alone.
    pub fn evaluate(&self, exit: usize, link: Link, deadline_ms: f64) -> Decision {
        self.evaluate_at(exit, link, deadline_ms, 1.0)
    }

    /// The predicted breakdown of this route of `exit` when the edge runs it in batches of
    /// `batch` requests.
    pub fn evaluate_at(&self, exit: usize, link: Link, deadline_ms: f64, batch: f64) -> Decision {
        let device_only = self.encoding.is_none();
        let network_ms = self.cost.network_ms(link, device_only);
        let (edge_ms, batch) = if device_only {
            (self.cost.edge_ms, 1.0)
        } else {
            (self.cost.edge_ms_at(batch), batch.max(1.0))
        };
        let predicted_ms = self.cost.device_ms + network_ms + edge_ms;
        Decision {
            exit,
            partition: self.partition,
            encoding: self.encoding,
            feasible: predicted_ms <= deadline_ms,
            predicted_ms,
            device_ms: self.cost.device_ms,
            network_ms,
            edge_ms,
            edge_ms_per_image: if device_only {
                0.0
            } else {
                self.cost.edge_ms_per_image
            },
            edge_batch: batch,
        }
    }
}

/// The routes of one exit that give the same accuracy: its exact routes (`lossy` `None`:
/// device-only, the image raw or compressed, `f32` activations with or without zstd), or
/// the routes that send one lossy kind of values (`f16`, `q8`, `q8c`, with or without zstd).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Family {
    /// Exit, 1 to 5.
    pub exit: usize,
    /// The lossy values every route sends, or `None` for the exact family.
    pub lossy: Option<Values>,
    /// Test accuracy of the exit through these routes (for a lossy family: the worst over
    /// its partitions, and never above the exact family's).
    pub accuracy: f64,
    /// The routes, in order of partition.
    pub routes: Vec<Route>,
}

impl Family {
    /// The exact family of the paper's routes: `pairs[p]`, the raw image at 0, `f32`
    /// activations after, device-only at `N`.
    pub fn exact(exit: usize, accuracy: f64, pairs: &[PairCost]) -> Self {
        let n = pairs.len() - 1;
        let routes = pairs
            .iter()
            .enumerate()
            .map(|(p, &cost)| Route {
                partition: p,
                encoding: paper_encoding(p, n),
                cost,
            })
            .collect();
        Self {
            exit,
            lossy: None,
            accuracy,
            routes,
        }
    }

    /// The fastest route for `link` (the first on ties).
    pub fn best(&self, link: Link, deadline_ms: f64) -> Decision {
        fastest(self.exit, self.routes.iter(), link, deadline_ms, 1.0)
    }
}

/// The fastest of `routes` of `exit` for `link`, the edge running batches of `batch` (the
/// first on ties).
fn fastest<'r>(
    exit: usize,
    routes: impl Iterator<Item = &'r Route>,
    link: Link,
    deadline_ms: f64,
    batch: f64,
) -> Decision {
    routes
        .map(|r| r.evaluate_at(exit, link, deadline_ms, batch))
        .reduce(|best, d| {
            if d.predicted_ms < best.predicted_ms {
                d
            } else {
                best
            }
        })
        .expect("a family has at least one route")
}

/// The encoding the paper's routes send at partition `p` of `n`: the raw image at 0, `f32`
/// activations in between, nothing at `n`.
pub fn paper_encoding(p: usize, n: usize) -> Option<Encoding> {
    match p {
        0 => Some(Encoding::RAW),
        p if p < n => Some(Encoding::F32),
        _ => None,
    }
}

/// The network as the device currently sees it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Link {
    /// Uplink bandwidth, bits per second.
    pub bandwidth_bps: f64,
    /// Round-trip overhead per request (latency, reply), ms.
    pub rtt_ms: f64,
}

impl Link {
    /// Whether anything can be sent over this link: a positive bandwidth (an infinite one
    /// is allowed) and a round trip that is a number, at least 0. A NaN, zero or negative
    /// bandwidth, or a NaN or negative round trip, means no network: every decision is then
    /// device-only.
    pub fn usable(&self) -> bool {
        self.bandwidth_bps > 0.0 && self.rtt_ms >= 0.0
    }
}

/// The chosen plan and its predicted breakdown.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Exit, 1 to 5.
    pub exit: usize,
    /// Partition point: the device runs `[0, p)`, the edge `[p, N)`.
    pub partition: usize,
    /// How the tensor at the split is sent; `None` when device-only.
    pub encoding: Option<Encoding>,
    /// Whether the plan meets the deadline. When no plan does, this is the fastest plan.
    pub feasible: bool,
    /// Predicted end-to-end latency, ms.
    pub predicted_ms: f64,
    /// Predicted device time, ms.
    pub device_ms: f64,
    /// Predicted network time, ms.
    pub network_ms: f64,
    /// Predicted edge time, ms (of the batch the request is predicted to run in).
    pub edge_ms: f64,
    /// Predicted edge time each further request of a batch adds, ms ([`PairCost`]; 0 when
    /// device-only).
    pub edge_ms_per_image: f64,
    /// The batch size `edge_ms` is predicted at (1: the request alone).
    pub edge_batch: f64,
}

impl Decision {
    /// This decision's prediction when the edge runs its request in a batch of `batch`
    /// (at least 1) instead of [`Decision::edge_batch`] (a device-only plan does not
    /// change).
    pub fn in_batch(mut self, batch: f64, deadline_ms: f64) -> Self {
        let batch = batch.max(1.0);
        let extra = (batch - self.edge_batch) * self.edge_ms_per_image;
        self.edge_ms += extra;
        self.predicted_ms += extra;
        self.edge_batch = batch;
        self.feasible = self.predicted_ms <= deadline_ms;
        self
    }
}

/// Bytes on the wire at partition `p` of a chain of `n` layers: the raw `u8` image at 0,
/// the `f32` activation entering layer `p` in between, nothing at `n`.
pub fn wire_bytes(table: &LayerTable, exit: usize, p: usize) -> u64 {
    let spec = table.exit(exit).expect("exit from the table");
    if p == 0 {
        table.input.iter().product::<usize>() as u64
    } else if p >= spec.len() {
        0
    } else {
        4 * spec.layers[p].input_len() as u64
    }
}

fn evaluate(exit: &ExitCosts, p: usize, link: Link, deadline_ms: f64) -> Decision {
    evaluate_pair(exit.exit, &exit.pairs, p, link, deadline_ms)
}

/// The predicted breakdown of partition `p` of `exit`, whose costs are `pairs`.
fn evaluate_pair(
    exit: usize,
    pairs: &[PairCost],
    p: usize,
    link: Link,
    deadline_ms: f64,
) -> Decision {
    Route {
        partition: p,
        encoding: paper_encoding(p, pairs.len() - 1),
        cost: pairs[p],
    }
    .evaluate(exit, link, deadline_ms)
}

/// The fastest partition of one exit (the first one on ties).
pub fn best_partition(exit: &ExitCosts, link: Link, deadline_ms: f64) -> Decision {
    (0..exit.pairs.len())
        .map(|p| evaluate(exit, p, link, deadline_ms))
        .reduce(|best, d| {
            if d.predicted_ms < best.predicted_ms {
                d
            } else {
                best
            }
        })
        .expect("a chain has at least one partition")
}

/// The choice among exits, one rule for [`decide`], [`decide_tables`] and
/// [`decide_policy`]: the most accurate exit whose fastest plan meets the deadline; among
/// equally accurate exits that meet it, the one predicted faster; at equal accuracy and
/// equal time, the deeper exit. If no exit meets the deadline: the fastest plan overall,
/// marked infeasible (on equal time, the first in the order below).
///
/// The paper's Algorithm 1 walks the exits from the deepest (`i = M, …, 1`) and returns the
/// first whose best partition meets the deadline: it assumes a deeper exit is more accurate,
/// so it ranks by accuracy and, between two exits of the same accuracy, reaches the deeper
/// one first. This rule keeps its order and only adds that, at the same accuracy, a faster
/// plan is the better one.
///
/// `candidates` yields each exit's accuracy and its fastest plan, in Algorithm 1's order:
/// most accurate first, the deeper first among equally accurate exits. It is read lazily:
/// nothing past the first feasible exit's accuracy is evaluated.
pub(crate) fn choose(candidates: impl IntoIterator<Item = (f64, Decision)>) -> Decision {
    let mut chosen: Option<(f64, Decision)> = None;
    let mut fastest: Option<Decision> = None;
    for (accuracy, best) in candidates {
        if let Some((chosen_accuracy, chosen_plan)) = chosen {
            if accuracy.total_cmp(&chosen_accuracy).is_ne() {
                break;
            }
            if best.feasible && best.predicted_ms < chosen_plan.predicted_ms {
                chosen = Some((accuracy, best));
            }
        } else if best.feasible {
            chosen = Some((accuracy, best));
        } else if fastest.is_none_or(|f| best.predicted_ms < f.predicted_ms) {
            fastest = Some(best);
        }
    }
    chosen
        .map(|(_, plan)| plan)
        .or(fastest)
        .expect("at least one exit")
}

/// Algorithm 1's order of exits `(exit, accuracy)`: most accurate first, the deeper first
/// among equally accurate ones (see [`choose`]).
fn algorithm_order(a: (usize, f64), b: (usize, f64)) -> std::cmp::Ordering {
    b.1.total_cmp(&a.1).then(b.0.cmp(&a.0))
}

/// Algorithm 1's order of families `(exit, lossy, accuracy)`: as [`algorithm_order`], then
/// the exact family before lossy ones, then by kind of values.
pub fn family_order(
    a: (usize, Option<Values>, f64),
    b: (usize, Option<Values>, f64),
) -> std::cmp::Ordering {
    algorithm_order((a.0, a.2), (b.0, b.2)).then(a.1.cmp(&b.1))
}

/// The decision by searching every route (Algorithm 1 over families): the most accurate
/// family whose fastest route meets the deadline — among equally accurate ones the faster,
/// then the deeper exit (the rule of [`choose`]); if none does, the fastest plan overall,
/// marked infeasible. Over a link that is not [usable](Link::usable), only device-only
/// plans can meet a deadline: the decision is the best local exit. Without encodings
/// (`families` empty) this is the paper's choice of exit and partition.
pub fn decide(exits: &[ExitCosts], link: Link, deadline_ms: f64) -> Decision {
    let mut families: Vec<Family> = exits.iter().flat_map(ExitCosts::families).collect();
    families
        .sort_by(|a, b| family_order((a.exit, a.lossy, a.accuracy), (b.exit, b.lossy, b.accuracy)));
    choose(
        families
            .iter()
            .map(|family| (family.accuracy, family.best(link, deadline_ms))),
    )
}

/// From `from_x` on (x = 1/B in seconds per bit), route `route` is the fastest of a
/// family's routes that use the network. A family's segments, ordered by `from_x` and
/// starting at 0, are the lower envelope of the lines `device + edge + bytes·8000·x` (ms).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    /// Where the segment starts, seconds per bit.
    pub from_x: f64,
    /// Index of the route (in [`FamilyTable::remote`]) that is fastest on this segment.
    pub route: usize,
}

/// The build-time costs of one exit's paper routes, as the code generator emits them: what
/// the baselines and the device's local fallback read.
#[derive(Debug, Clone, Copy)]
pub struct ExitTable {
    /// Exit, 1 to 5.
    pub exit: usize,
    /// Test accuracy.
    pub accuracy: f64,
    /// `pairs[p]` for `p = 0..=N` (raw image at 0, `f32` after); `pairs[N]` is device-only.
    pub pairs: &'static [PairCost],
}

/// The build-time tables of one [`Family`], as the code generator emits them.
#[derive(Debug, Clone, Copy)]
pub struct FamilyTable {
    /// Exit, 1 to 5.
    pub exit: usize,
    /// The lossy values of its routes, `None` for the exact family.
    pub lossy: Option<Values>,
    /// Accuracy of the exit through these routes.
    pub accuracy: f64,
    /// The routes that use the network.
    pub remote: &'static [Route],
    /// Lower envelope of `remote` over x = 1/B (empty when `remote` is).
    pub envelope: &'static [Segment],
    /// The device-only route (the exact family's).
    pub local: Option<Route>,
}

impl FamilyTable {
    /// The family these tables were made from (its routes: remote ones, then the local).
    pub fn family(&self) -> Family {
        Family {
            exit: self.exit,
            lossy: self.lossy,
            accuracy: self.accuracy,
            routes: self.remote.iter().copied().chain(self.local).collect(),
        }
    }

    /// The fastest route of this family for `link`, from the envelope: a few comparisons.
    #[inline]
    pub fn best(&self, link: Link, deadline_ms: f64) -> Decision {
        self.best_at(link, deadline_ms, 1.0)
    }

    /// [`FamilyTable::best`] when the edge runs requests in batches of `batch`. The envelope
    /// holds for batch 1; a larger batch adds a different time to each route, so then every
    /// remote route is compared (a family has a few dozen).
    #[inline]
    pub fn best_at(&self, link: Link, deadline_ms: f64, batch: f64) -> Decision {
        if batch > 1.0 {
            let routes = self.remote.iter().chain(self.local.iter());
            return fastest(self.exit, routes, link, deadline_ms, batch);
        }
        let remote = self.envelope.first().map(|first| {
            let x = 1.0 / link.bandwidth_bps;
            let mut route = first.route;
            for segment in &self.envelope[1..] {
                if segment.from_x > x {
                    break;
                }
                route = segment.route;
            }
            self.remote[route].evaluate(self.exit, link, deadline_ms)
        });
        let local = self
            .local
            .map(|route| route.evaluate(self.exit, link, deadline_ms));
        match (remote, local) {
            (Some(remote), Some(local)) if local.predicted_ms < remote.predicted_ms => local,
            (Some(remote), _) => remote,
            (None, Some(local)) => local,
            (None, None) => unreachable!("a family table has a route"),
        }
    }
}

/// Test tables: the exact family of each exit's paper routes, whose envelope is the
/// single segment of partition 0 (right when partition 0 has the least time and the least
/// bytes of the remote routes, as the tests' costs do).
#[cfg(test)]
pub(crate) fn exact_families(tables: &[ExitTable]) -> &'static [FamilyTable] {
    let families: Vec<FamilyTable> = tables
        .iter()
        .map(|t| {
            let family = Family::exact(t.exit, t.accuracy, t.pairs);
            let (local, remote) = family.routes.split_last().expect("routes");
            FamilyTable {
                exit: t.exit,
                lossy: None,
                accuracy: t.accuracy,
                remote: Box::leak(remote.to_vec().into_boxed_slice()),
                envelope: Box::leak(Box::new([Segment {
                    from_x: 0.0,
                    route: 0,
                }])),
                local: Some(*local),
            }
        })
        .collect();
    Box::leak(families.into_boxed_slice())
}

/// The decision from generated tables: `by_accuracy` lists indices into `families` in
/// Algorithm 1's order ([`family_order`]). Same answer as [`decide`] (same rule,
/// [`choose`]), without a search over routes.
#[inline]
pub fn decide_tables(
    families: &[FamilyTable],
    by_accuracy: &[usize],
    link: Link,
    deadline_ms: f64,
) -> Decision {
    decide_tables_at(families, by_accuracy, link, deadline_ms, 1.0)
}

/// [`decide_tables`] when the edge runs requests in batches of `batch`
/// ([`FamilyTable::best_at`]).
#[inline]
pub fn decide_tables_at(
    families: &[FamilyTable],
    by_accuracy: &[usize],
    link: Link,
    deadline_ms: f64,
    batch: f64,
) -> Decision {
    choose(by_accuracy.iter().map(|&i| {
        let family = &families[i];
        (family.accuracy, family.best_at(link, deadline_ms, batch))
    }))
}

/// What the device may choose: Edgent's joint choice of exit and partition, or one of the
/// baselines of the paper's evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// The most accurate exit that meets the deadline, at its best partition (Edgent).
    Edgent,
    /// The whole network (the last exit) on the device.
    DeviceOnly,
    /// The whole network on the edge: the raw image is uploaded.
    EdgeOnly,
    /// The whole network at its best partition, no early exit (Neurosurgeon).
    PartitionOnly,
    /// The most accurate exit that meets the deadline, run whole on the device or whole
    /// on the edge, never split.
    RightSizingOnly,
}

impl Policy {
    /// Every policy, Edgent first.
    pub const ALL: [Policy; 5] = [
        Self::Edgent,
        Self::DeviceOnly,
        Self::EdgeOnly,
        Self::PartitionOnly,
        Self::RightSizingOnly,
    ];

    /// The name used on command lines and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Edgent => "edgent",
            Self::DeviceOnly => "device-only",
            Self::EdgeOnly => "edge-only",
            Self::PartitionOnly => "partition-only",
            Self::RightSizingOnly => "right-sizing-only",
        }
    }
}

impl std::str::FromStr for Policy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|p| p.name()).collect();
                format!("unknown policy `{s}`: one of {}", names.join(", "))
            })
    }
}

/// The decision under `policy` over per-exit `(accuracy, pairs)` (`exits[i]` is exit
/// `i + 1`, `pairs[p]` for `p = 0..=N`): by the rule of [`decide`] (the most accurate
/// allowed exit whose fastest allowed partition meets the deadline, the faster then the
/// deeper among equally accurate ones), else the fastest allowed plan. For
/// [`Policy::Edgent`] this is [`decide`], ties included.
pub fn decide_policy(
    exits: &[(f64, &[PairCost])],
    policy: Policy,
    link: Link,
    deadline_ms: f64,
) -> Decision {
    let last = exits.len();
    let mut order: Vec<usize> = match policy {
        Policy::Edgent | Policy::RightSizingOnly => (1..=last).collect(),
        Policy::DeviceOnly | Policy::EdgeOnly | Policy::PartitionOnly => vec![last],
    };
    order.sort_by(|&a, &b| algorithm_order((a, exits[a - 1].0), (b, exits[b - 1].0)));
    choose(order.into_iter().map(|exit| {
        let pairs = exits[exit - 1].1;
        let n = pairs.len() - 1;
        let partitions: Vec<usize> = match policy {
            Policy::DeviceOnly => vec![n],
            Policy::EdgeOnly => vec![0],
            Policy::RightSizingOnly => vec![0, n],
            Policy::Edgent | Policy::PartitionOnly => (0..=n).collect(),
        };
        let best = partitions
            .into_iter()
            .map(|p| evaluate_pair(exit, pairs, p, link, deadline_ms))
            .min_by(|a, b| a.predicted_ms.total_cmp(&b.predicted_ms))
            .expect("at least one partition");
        (exits[exit - 1].0, best)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::layers::b_alexnet;

    #[test]
    fn wire_bytes_follow_the_orientation() {
        let table = b_alexnet(1, 10);
        assert_eq!(wire_bytes(&table, 5, 0), 1024); // raw u8 image
        assert_eq!(wire_bytes(&table, 5, 1), 4 * 32 * 32 * 32); // conv1 output
        assert_eq!(wire_bytes(&table, 5, 22), 0); // device-only
    }

    fn pair(device_ms: f64, edge_ms: f64, bytes: u64) -> PairCost {
        PairCost {
            device_ms,
            edge_ms,
            bytes,
            edge_ms_per_image: 0.0,
        }
    }

    /// Five exits of three partitions each, with accuracy ties: exits 2 and 3 are the same
    /// in every cost (a tie in time too); exits 4 and 5 are equally accurate, exit 5 faster
    /// on the edge (10 against 12 ms) and slower on the device alone (100 against 90 ms).
    fn tied_exits() -> Vec<ExitCosts> {
        let exit = |exit, accuracy, pairs| ExitCosts {
            exit,
            accuracy,
            pairs,
            families: Vec::new(),
        };
        vec![
            exit(
                1,
                0.80,
                vec![
                    pair(0.0, 5.0, 1024),
                    pair(18.0, 3.0, 8192),
                    pair(30.0, 0.0, 0),
                ],
            ),
            exit(
                2,
                0.90,
                vec![
                    pair(0.0, 8.0, 1024),
                    pair(25.0, 5.0, 4096),
                    pair(60.0, 0.0, 0),
                ],
            ),
            exit(
                3,
                0.90,
                vec![
                    pair(0.0, 8.0, 1024),
                    pair(25.0, 5.0, 4096),
                    pair(60.0, 0.0, 0),
                ],
            ),
            exit(
                4,
                0.95,
                vec![
                    pair(0.0, 12.0, 1024),
                    pair(40.0, 6.0, 2048),
                    pair(90.0, 0.0, 0),
                ],
            ),
            exit(
                5,
                0.95,
                vec![
                    pair(0.0, 10.0, 1024),
                    pair(45.0, 6.0, 2048),
                    pair(100.0, 0.0, 0),
                ],
            ),
        ]
    }

    /// The generated tables of [`tied_exits`]: partition 0 has the lowest time and the
    /// lowest slope in 1/B of every exit's remote partitions, so it is the whole envelope.
    fn tied_tables() -> (&'static [FamilyTable], Vec<usize>) {
        let tables: Vec<ExitTable> = tied_exits()
            .into_iter()
            .map(|e| ExitTable {
                exit: e.exit,
                accuracy: e.accuracy,
                pairs: Box::leak(e.pairs.into_boxed_slice()),
            })
            .collect();
        (exact_families(&tables), vec![4, 3, 2, 1, 0])
    }

    fn policy_input(exits: &[ExitCosts]) -> Vec<(f64, &[PairCost])> {
        exits.iter().map(|e| (e.accuracy, &e.pairs[..])).collect()
    }

    /// Links of the sweeps: 1 kbit/s to 100 Mbit/s, several round trips, and links that
    /// carry nothing.
    fn sweep_links() -> Vec<Link> {
        let mut links = Vec::new();
        for step in 0..=50 {
            let bandwidth_bps = 1e3 * 10f64.powf(f64::from(step) / 10.0);
            for rtt_ms in [0.0, 1.0, 5.0, 50.0] {
                links.push(Link {
                    bandwidth_bps,
                    rtt_ms,
                });
            }
        }
        for bandwidth_bps in [0.0, -0.0, -1e6, f64::NEG_INFINITY, f64::NAN] {
            links.push(Link {
                bandwidth_bps,
                rtt_ms: 1.0,
            });
        }
        links.push(Link {
            bandwidth_bps: 1e6,
            rtt_ms: f64::NAN,
        });
        links
    }

    #[test]
    fn edgent_policy_decides_like_decide_and_the_tables_ties_included() {
        let exits = tied_exits();
        let input = policy_input(&exits);
        let (tables, by_accuracy) = tied_tables();
        let mut checked = 0;
        for link in sweep_links() {
            for step in 0..=90 {
                let deadline_ms = 1.25 * f64::from(step);
                let search = decide(&exits, link, deadline_ms);
                let policy = decide_policy(&input, Policy::Edgent, link, deadline_ms);
                assert_eq!(policy, search, "{link:?}, deadline {deadline_ms} ms");
                let tabled = decide_tables(tables, &by_accuracy, link, deadline_ms);
                assert_eq!(tabled, search, "{link:?}, deadline {deadline_ms} ms");
                checked += 1;
            }
        }
        assert_eq!(checked, 210 * 91);
    }

    /// Exit 1 with its exact routes (raw image at 0: 1 KiB; f32 at 1: 32 KiB; device-only
    /// 200 ms) and a q8 family at partition 1: 4 KiB plus 2 ms of encoding, `q8_accuracy`.
    fn with_q8(q8_accuracy: f64) -> Vec<ExitCosts> {
        let pairs = vec![
            pair(0.0, 5.0, 1024),
            pair(20.0, 4.0, 32768),
            pair(200.0, 0.0, 0),
        ];
        let q8 = Family {
            exit: 1,
            lossy: Some(Values::Q8),
            accuracy: q8_accuracy,
            routes: vec![Route {
                partition: 1,
                encoding: Some(Encoding::new(Values::Q8, false)),
                cost: pair(22.0, 4.5, 4096),
            }],
        };
        let exact = Family::exact(1, 0.9, &pairs);
        vec![ExitCosts {
            exit: 1,
            accuracy: 0.9,
            pairs,
            families: vec![exact, q8],
        }]
    }

    #[test]
    fn a_lossy_family_is_taken_when_it_is_as_accurate_and_faster_or_the_only_one_in_time() {
        // 100 kbit/s: the raw image costs 82 ms + 1 ms, q8 at partition 1 328 ms, f32 2.6 s.
        let slow = Link {
            bandwidth_bps: 100e3,
            rtt_ms: 1.0,
        };
        let d = decide(&with_q8(0.9), slow, 150.0);
        assert_eq!((d.partition, d.encoding), (0, Some(Encoding::RAW)));
        // 10 Mbit/s: raw 0.82 + 1 + 5 ms, q8 22 + 3.3 + 1 + 4.5 ms: raw still wins.
        // Without an edge fast enough for the image, the split wins: make the edge slow.
        let mut exits = with_q8(0.9);
        exits[0].families[0].routes[0].cost.edge_ms = 60.0;
        let fast = Link {
            bandwidth_bps: 10e6,
            rtt_ms: 1.0,
        };
        let d = decide(&exits, fast, 50.0);
        assert_eq!(
            (d.partition, d.encoding, d.feasible),
            (1, Some(Encoding::new(Values::Q8, false)), true)
        );
        // Less accurate: the exact family is taken whenever one of its routes fits…
        let mut exits = with_q8(0.89);
        exits[0].families[0].routes[0].cost.edge_ms = 40.0;
        let d = decide(&exits, fast, 50.0);
        assert_eq!((d.partition, d.encoding), (0, Some(Encoding::RAW)));
        assert!(d.predicted_ms > 40.0, "slower than q8's {d:?}");
        // …and q8 only when none does.
        let d = decide(&exits, fast, 35.0);
        assert_eq!(
            (d.partition, d.encoding, d.feasible),
            (1, Some(Encoding::new(Values::Q8, false)), true)
        );
        // The baselines never see the lossy family.
        let input = policy_input(&exits);
        let d = decide_policy(&input, Policy::PartitionOnly, fast, 35.0);
        assert_ne!(d.encoding, Some(Encoding::new(Values::Q8, false)));
    }

    #[test]
    fn equally_accurate_exits_go_to_the_faster_then_the_deeper() {
        let exits = tied_exits();
        let fast = Link {
            bandwidth_bps: 1e8,
            rtt_ms: 0.0,
        };
        // Exits 4 and 5 both meet 50 ms on the edge: exit 5 is faster there.
        let d = decide(&exits, fast, 50.0);
        assert_eq!((d.exit, d.partition), (5, 0));
        // 9 ms: only exits 2 and 3 (8.08 ms), the same in every cost: the deeper one.
        let d = decide(&exits, fast, 9.0);
        assert_eq!((d.exit, d.partition, d.feasible), (3, 0, true));
        // No network, 120 ms: exits 4 (90 ms) and 5 (100 ms) both fit on the device alone;
        // exit 4 is as accurate and faster.
        let none = Link {
            bandwidth_bps: 0.0,
            rtt_ms: 1.0,
        };
        let d = decide(&exits, none, 120.0);
        assert_eq!((d.exit, d.partition), (4, 2));
        // Nothing fits 1 ms: the fastest plan, marked infeasible.
        let d = decide(&exits, fast, 1.0);
        assert_eq!((d.exit, d.partition, d.feasible), (1, 0, false));
    }

    #[test]
    fn a_link_that_carries_nothing_gives_the_best_local_exit() {
        let exits = tied_exits();
        let input = policy_input(&exits);
        let (tables, by_accuracy) = tied_tables();
        for bandwidth_bps in [f64::NAN, f64::NEG_INFINITY, 0.0, -0.0, -400e3] {
            for (rtt_ms, deadline_ms, exit) in [
                (1.0, 95.0, 4),
                (0.0, 70.0, 3),
                (5.0, 35.0, 1),
                (1.0, 1000.0, 4),
            ] {
                let link = Link {
                    bandwidth_bps,
                    rtt_ms,
                };
                assert!(!link.usable());
                for d in [
                    decide(&exits, link, deadline_ms),
                    decide_tables(tables, &by_accuracy, link, deadline_ms),
                    decide_policy(&input, Policy::Edgent, link, deadline_ms),
                ] {
                    assert_eq!(
                        (d.exit, d.partition, d.feasible, d.network_ms),
                        (exit, 2, true, 0.0),
                        "{link:?}, deadline {deadline_ms} ms"
                    );
                }
            }
        }
        // A round trip that is not a number is no network either.
        let link = Link {
            bandwidth_bps: 1e9,
            rtt_ms: f64::NAN,
        };
        assert!(!link.usable());
        let d = decide(&exits, link, 95.0);
        assert_eq!((d.exit, d.partition), (4, 2));
        // Too short a deadline: the fastest local plan, marked infeasible, never an upload.
        let link = Link {
            bandwidth_bps: f64::NAN,
            rtt_ms: 1.0,
        };
        let d = decide(&exits, link, 10.0);
        assert_eq!((d.exit, d.partition, d.feasible), (1, 2, false));
        // An infinitely fast link is a link.
        let link = Link {
            bandwidth_bps: f64::INFINITY,
            rtt_ms: 0.0,
        };
        assert!(link.usable());
        assert_eq!(decide(&exits, link, 50.0).partition, 0);
    }

    /// A batching edge changes which route is fastest: a split whose suffix shares little
    /// across a batch loses to one that shares more, and the tables then compare every
    /// route instead of trusting the batch-1 envelope.
    #[test]
    fn batch_sizes_price_each_route_by_its_own_share_of_a_batch() {
        let route = |partition, edge_ms, edge_ms_per_image| Route {
            partition,
            encoding: Some(if partition == 0 {
                Encoding::RAW
            } else {
                Encoding::F32
            }),
            cost: PairCost {
                device_ms: 2.0 * partition as f64,
                edge_ms,
                bytes: 1000,
                edge_ms_per_image,
            },
        };
        let local = Route {
            partition: 3,
            encoding: None,
            cost: pair(50.0, 0.0, 0),
        };
        // Partition 0 shares nothing across a batch, partition 1 most of it.
        let remote = [route(0, 3.0, 3.0), route(1, 4.0, 0.2)];
        let table = FamilyTable {
            exit: 1,
            lossy: None,
            accuracy: 0.9,
            remote: Box::leak(Box::new(remote)),
            // The batch-1 envelope: partition 0 everywhere (fewer ms, same bytes).
            envelope: Box::leak(Box::new([Segment {
                from_x: 0.0,
                route: 0,
            }])),
            local: Some(local),
        };
        let link = Link {
            bandwidth_bps: 1e6,
            rtt_ms: 1.0,
        };
        let alone = table.best(link, 100.0);
        assert_eq!(alone.partition, 0);
        assert!((alone.edge_ms - 3.0).abs() < 1e-12);
        let busy = table.best_at(link, 100.0, 8.0);
        assert_eq!(busy.partition, 1, "{busy:?}");
        assert!((busy.edge_ms - (4.0 + 7.0 * 0.2)).abs() < 1e-12);
        assert_eq!(busy.edge_ms_per_image, 0.2);
        assert!((busy.predicted_ms - (2.0 + 8.0 + 1.0 + 5.4)).abs() < 1e-12);
        // The same answer as evaluating every route of the family at that batch.
        let family = table.family();
        let best = family
            .routes
            .iter()
            .map(|r| r.evaluate_at(1, link, 100.0, 8.0))
            .min_by(|a, b| a.predicted_ms.total_cmp(&b.predicted_ms))
            .unwrap();
        assert_eq!(best, busy);
        let tables = [table];
        assert_eq!(decide_tables_at(&tables, &[0], link, 100.0, 8.0), busy);
        // A decision moves between batch sizes by its own per-request time.
        let back = busy.in_batch(1.0, 100.0);
        assert!((back.edge_ms - 4.0).abs() < 1e-12 && back.edge_batch == 1.0);
        assert!((back.predicted_ms - (busy.predicted_ms - 1.4)).abs() < 1e-12);
        // A device-only route never waits for a batch, even with a per-request cost set.
        let odd_local = Route {
            cost: PairCost {
                edge_ms_per_image: 9.0,
                ..local.cost
            },
            ..local
        };
        let d = odd_local.evaluate_at(1, link, 100.0, 8.0);
        assert_eq!((d.edge_ms, d.edge_batch), (0.0, 1.0));
        assert_eq!(d.in_batch(8.0, 100.0).predicted_ms, 50.0);
    }
}
