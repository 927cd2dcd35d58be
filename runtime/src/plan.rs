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

/// The decision by searching every pair (Algorithm 1): the most accurate exit whose best
/// partition meets the deadline — among equally accurate ones the faster, then the deeper
/// (the rule of [`choose`]); if none does, the fastest plan overall, marked infeasible.
/// Over a link that is not [usable](Link::usable), only device-only plans can meet a
/// deadline: the decision is the best local exit.
pub fn decide(exits: &[ExitCosts], link: Link, deadline_ms: f64) -> Decision {
    let mut order: Vec<&ExitCosts> = exits.iter().collect();
    order.sort_by(|a, b| algorithm_order((a.exit, a.accuracy), (b.exit, b.accuracy)));
    choose(
        order
            .into_iter()
            .map(|exit| (exit.accuracy, best_partition(exit, link, deadline_ms))),
    )
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

/// The decision from generated tables: `by_accuracy` lists indices into `exits` in
/// Algorithm 1's order (most accurate first, the deeper first on ties). Same answer as
/// [`decide`] (same rule, [`choose`]), without a search over partitions.
#[inline]
pub fn decide_tables(
    exits: &[ExitTable],
    by_accuracy: &[usize],
    link: Link,
    deadline_ms: f64,
) -> Decision {
    choose(
        by_accuracy
            .iter()
            .map(|&i| (exits[i].accuracy, exits[i].best(link, deadline_ms))),
    )
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
    fn tied_tables() -> (Vec<ExitTable>, Vec<usize>) {
        let tables = tied_exits()
            .into_iter()
            .map(|e| ExitTable {
                exit: e.exit,
                accuracy: e.accuracy,
                pairs: Box::leak(e.pairs.into_boxed_slice()),
                envelope: Box::leak(Box::new([Segment {
                    from_x: 0.0,
                    partition: 0,
                }])),
            })
            .collect();
        (tables, vec![4, 3, 2, 1, 0])
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
                let tabled = decide_tables(&tables, &by_accuracy, link, deadline_ms);
                assert_eq!(tabled, search, "{link:?}, deadline {deadline_ms} ms");
                checked += 1;
            }
        }
        assert_eq!(checked, 210 * 91);
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
                    decide_tables(&tables, &by_accuracy, link, deadline_ms),
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
}
