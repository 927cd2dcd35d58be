//! The Edgent optimizer (DESIGN.md §5): for a bandwidth and a deadline, the most accurate
//! exit whose best partition meets the deadline, and that partition.
//!
//! The device runs layers `[0, p)`, sends the activation entering layer `p`, the edge runs
//! `[p, N)` and returns the logits. `p = N` is device-only; `p = 0` uploads the raw `u8`
//! image and is edge-only. For exit `i`, partition `p`, bandwidth `B` and round trip `r`:
//!
//! `T(i, p) = Σ_{j<p} ED_j + Σ_{j≥p} ES_j + [p < N_i]·(bytes(i, p)/B + r)`

use serde::{Deserialize, Serialize};

use crate::model::layers::LayerTable;

/// Build-time cost of one (exit, partition) pair.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PairCost {
    /// Predicted device time of layers `[0, p)`, ms.
    pub device_ms: f64,
    /// Predicted edge time of layers `[p, N)`, ms.
    pub edge_ms: f64,
    /// Bytes sent to the edge (0 when device-only).
    pub bytes: u64,
}

impl PairCost {
    /// Predicted network time over `link`, ms: transfer plus round trip, or 0 when device-only.
    pub fn network_ms(&self, link: Link, device_only: bool) -> f64 {
        if device_only {
            0.0
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
    /// `pairs[p]` for partitions `p = 0..=N`.
    pub pairs: Vec<PairCost>,
}

/// The network as the device currently sees it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Link {
    /// Uplink bandwidth, bits per second.
    pub bandwidth_bps: f64,
    /// Round-trip overhead per request (latency, reply), ms.
    pub rtt_ms: f64,
}

/// The chosen plan and its predicted breakdown.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Exit, 1 to 5.
    pub exit: usize,
    /// Partition point: the device runs `[0, p)`, the edge `[p, N)`.
    pub partition: usize,
    /// Whether the plan meets the deadline. When no plan does, this is the fastest plan.
    pub feasible: bool,
    /// Predicted end-to-end latency, ms.
    pub predicted_ms: f64,
    /// Predicted device time, ms.
    pub device_ms: f64,
    /// Predicted network time, ms.
    pub network_ms: f64,
    /// Predicted edge time, ms.
    pub edge_ms: f64,
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
    let pair = pairs[p];
    let device_only = p + 1 == pairs.len();
    let network_ms = pair.network_ms(link, device_only);
    let predicted_ms = pair.device_ms + network_ms + pair.edge_ms;
    Decision {
        exit,
        partition: p,
        feasible: predicted_ms <= deadline_ms,
        predicted_ms,
        device_ms: pair.device_ms,
        network_ms,
        edge_ms: pair.edge_ms,
    }
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

/// The decision by searching every pair: the most accurate exit (deeper on ties) whose best
/// partition meets the deadline; if none does, the fastest plan overall, marked infeasible.
pub fn decide(exits: &[ExitCosts], link: Link, deadline_ms: f64) -> Decision {
    let mut order: Vec<&ExitCosts> = exits.iter().collect();
    order.sort_by(|a, b| b.accuracy.total_cmp(&a.accuracy).then(b.exit.cmp(&a.exit)));
    let mut fastest: Option<Decision> = None;
    for exit in order {
        let best = best_partition(exit, link, deadline_ms);
        if best.feasible {
            return best;
        }
        if fastest.is_none_or(|f| best.predicted_ms < f.predicted_ms) {
            fastest = Some(best);
        }
    }
    fastest.expect("at least one exit")
}

/// From `from_x` on (x = 1/B in seconds per bit), `partition` is the fastest of an exit's
/// partitions that use the network (`p < N`). An exit's segments, ordered by `from_x` and
/// starting at 0, are the lower envelope of the lines `device + edge + bytes·8000·x` (ms).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    /// Where the segment starts, seconds per bit.
    pub from_x: f64,
    /// The partition that is fastest on this segment.
    pub partition: usize,
}

/// The build-time tables of one exit, as the code generator emits them.
#[derive(Debug, Clone, Copy)]
pub struct ExitTable {
    /// Exit, 1 to 5.
    pub exit: usize,
    /// Test accuracy.
    pub accuracy: f64,
    /// `pairs[p]` for `p = 0..=N`; `pairs[N]` is device-only.
    pub pairs: &'static [PairCost],
    /// Lower envelope of the partitions `p < N` over x = 1/B.
    pub envelope: &'static [Segment],
}

impl ExitTable {
    /// The fastest plan of this exit for `link`, from the envelope: a few comparisons.
    #[inline]
    pub fn best(&self, link: Link, deadline_ms: f64) -> Decision {
        let x = 1.0 / link.bandwidth_bps;
        let mut p = self.envelope[0].partition;
        for segment in &self.envelope[1..] {
            if segment.from_x > x {
                break;
            }
            p = segment.partition;
        }
        let n = self.pairs.len() - 1;
        let remote = self.pairs[p];
        let network_ms = remote.network_ms(link, false);
        let remote_ms = remote.device_ms + network_ms + remote.edge_ms;
        let local = self.pairs[n];
        let local_ms = local.device_ms + local.edge_ms;
        let (partition, pair, network_ms, predicted_ms) = if local_ms < remote_ms {
            (n, local, 0.0, local_ms)
        } else {
            (p, remote, network_ms, remote_ms)
        };
        Decision {
            exit: self.exit,
            partition,
            feasible: predicted_ms <= deadline_ms,
            predicted_ms,
            device_ms: pair.device_ms,
            network_ms,
            edge_ms: pair.edge_ms,
        }
    }
}

/// The decision from generated tables: `by_accuracy` lists indices into `exits`, most
/// accurate first. Same answer as [`decide`], without a search over partitions.
#[inline]
pub fn decide_tables(
    exits: &[ExitTable],
    by_accuracy: &[usize],
    link: Link,
    deadline_ms: f64,
) -> Decision {
    let mut fastest: Option<Decision> = None;
    for &i in by_accuracy {
        let best = exits[i].best(link, deadline_ms);
        if best.feasible {
            return best;
        }
        if fastest.is_none_or(|f| best.predicted_ms < f.predicted_ms) {
            fastest = Some(best);
        }
    }
    fastest.expect("at least one exit")
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
/// `i + 1`, `pairs[p]` for `p = 0..=N`): the most accurate allowed exit whose fastest
/// allowed partition meets the deadline, else the fastest allowed plan. For
/// [`Policy::Edgent`] this is [`decide`].
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
    order.sort_by(|&a, &b| exits[b - 1].0.total_cmp(&exits[a - 1].0));
    let mut fastest: Option<Decision> = None;
    for exit in order {
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
        if best.feasible {
            return best;
        }
        if fastest.is_none_or(|f| best.predicted_ms < f.predicted_ms) {
            fastest = Some(best);
        }
    }
    fastest.expect("at least one exit")
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
}
