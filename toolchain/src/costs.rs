//! The planner's build-time input: every (exit, partition) pair's predicted device time,
//! edge time and bytes on the wire, from the layer table and the latency models
//! (DESIGN.md §5). The deployed device decides from these costs with [`runtime::plan`].

use runtime::model::layers::LayerTable;
use runtime::plan::{ExitCosts, PairCost, wire_bytes};

use crate::batching::BatchProfile;
use crate::latency::LatencyModels;
use crate::profile::Role;

/// Costs of every (exit, partition) pair from the layer table and the latency models.
/// `accuracies[i]` is the accuracy of exit `i + 1`. Each further request of a batch is
/// charged the whole batch-1 edge time (no sharing) until [`apply_batching`] says better.
pub fn exit_costs(
    table: &LayerTable,
    models: &LatencyModels,
    accuracies: &[f64],
) -> Result<Vec<ExitCosts>, String> {
    if accuracies.len() != table.exits.len() {
        return Err(format!(
            "{} accuracies for {} exits",
            accuracies.len(),
            table.exits.len()
        ));
    }
    table
        .exits
        .iter()
        .zip(accuracies)
        .map(|(spec, &accuracy)| {
            let pairs = (0..=spec.len())
                .map(|p| {
                    // `+ 0.0` turns an empty sum's -0.0 into 0.0.
                    let edge_ms = models.chain_ms(Role::Edge, &spec.layers[p..])? + 0.0;
                    Ok(PairCost {
                        device_ms: models.chain_ms(Role::Device, &spec.layers[..p])? + 0.0,
                        edge_ms,
                        bytes: wire_bytes(table, spec.exit, p),
                        edge_ms_per_image: edge_ms,
                    })
                })
                .collect::<Result<_, String>>()?;
            Ok(ExitCosts {
                exit: spec.exit,
                accuracy,
                pairs,
                families: Vec::new(),
            })
        })
        .collect()
}

/// Sets every pair's edge time per further request of a batch from `profile`: the
/// measured slope's fraction of the batch-1 time, applied to the pair's (calibrated)
/// batch-1 prediction. Fails when the profile lacks a suffix the costs have.
pub fn apply_batching(costs: &mut [ExitCosts], profile: &BatchProfile) -> Result<(), String> {
    profile.check()?;
    for exit in costs {
        let n = exit.pairs.len() - 1;
        for (p, pair) in exit.pairs.iter_mut().enumerate().take(n) {
            let ratio = profile.per_image_ratio(exit.exit, p).ok_or_else(|| {
                format!(
                    "the batch profile has no time for exit {} partition {p}: measure it for this model with `cargo xtask profile-batches`",
                    exit.exit
                )
            })?;
            pair.edge_ms_per_image = pair.edge_ms * ratio;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batching::SuffixTimes;
    use runtime::model::layers::b_alexnet;
    use runtime::plan::{Link, Policy, best_partition, decide, decide_policy};

    fn paper_costs() -> Vec<ExitCosts> {
        let table = b_alexnet(3, 10);
        exit_costs(
            &table,
            &LatencyModels::paper(),
            &[0.6, 0.7, 0.75, 0.8, 0.85],
        )
        .unwrap()
    }

    #[test]
    fn batching_scales_each_pairs_batch_one_time_and_refuses_a_missing_suffix() {
        let mut costs = paper_costs();
        let batches = vec![1, 2, 4];
        let suffixes = costs
            .iter()
            .flat_map(|e| (0..e.pairs.len() - 1).map(move |p| (e.exit, p)))
            .map(|(exit, p)| SuffixTimes {
                exit,
                partition: p,
                // 2 ms alone, 0.5 ms for each further request: a quarter.
                ms: vec![2.0, 2.5, 3.5],
            })
            .collect();
        let mut profile = BatchProfile {
            engine: "generated".into(),
            backend: "kernels".into(),
            threads: 1,
            channels: 3,
            batches,
            suffixes,
        };
        apply_batching(&mut costs, &profile).unwrap();
        for exit in &costs {
            let (local, remote) = exit.pairs.split_last().unwrap();
            assert_eq!(local.edge_ms_per_image, 0.0, "device-only shares nothing");
            for pair in remote {
                assert!((pair.edge_ms_per_image - pair.edge_ms / 4.0).abs() < 1e-9);
                let eight = pair.edge_ms_at(8.0);
                assert!((eight - pair.edge_ms * (1.0 + 7.0 / 4.0)).abs() < 1e-9);
            }
        }
        profile
            .suffixes
            .retain(|s| !(s.exit == 3 && s.partition == 2));
        let err = apply_batching(&mut paper_costs(), &profile).unwrap_err();
        assert!(err.contains("exit 3 partition 2"), "{err}");
    }

    #[test]
    fn plenty_of_time_picks_the_best_exit_and_none_is_explicit() {
        let costs = paper_costs();
        let link = Link {
            bandwidth_bps: 1e6,
            rtt_ms: 5.0,
        };
        let d = decide(&costs, link, 1e6);
        assert!(d.feasible);
        assert_eq!(d.exit, 5);
        let d = decide(&costs, link, 0.001);
        assert!(!d.feasible);
        let fastest = costs
            .iter()
            .map(|e| best_partition(e, link, 0.0).predicted_ms)
            .fold(f64::INFINITY, f64::min);
        assert_eq!(d.predicted_ms, fastest);
        assert!((d.device_ms + d.network_ms + d.edge_ms - d.predicted_ms).abs() < 1e-9);
    }

    #[test]
    fn policies_keep_to_their_partitions_and_edgent_is_decide() {
        let costs = paper_costs();
        let exits: Vec<(f64, &[PairCost])> = costs
            .iter()
            .map(|e| (e.accuracy, e.pairs.as_slice()))
            .collect();
        for bandwidth_bps in [5e4, 2e5, 1e6, 1e7] {
            let link = Link {
                bandwidth_bps,
                rtt_ms: 2.0,
            };
            for deadline in [50.0, 200.0, 1000.0] {
                let edgent = decide_policy(&exits, Policy::Edgent, link, deadline);
                assert_eq!(edgent, decide(&costs, link, deadline));
                let d = decide_policy(&exits, Policy::DeviceOnly, link, deadline);
                assert_eq!((d.exit, d.partition), (5, costs[4].pairs.len() - 1));
                let d = decide_policy(&exits, Policy::EdgeOnly, link, deadline);
                assert_eq!((d.exit, d.partition), (5, 0));
                assert_eq!(
                    decide_policy(&exits, Policy::PartitionOnly, link, deadline).exit,
                    5
                );
                let d = decide_policy(&exits, Policy::RightSizingOnly, link, deadline);
                assert!(d.partition == 0 || d.partition == costs[d.exit - 1].pairs.len() - 1);
                // Edgent is at least as accurate as any baseline whenever that one is feasible.
                for policy in Policy::ALL {
                    let b = decide_policy(&exits, policy, link, deadline);
                    if b.feasible {
                        assert!(edgent.feasible);
                        assert!(costs[edgent.exit - 1].accuracy >= costs[b.exit - 1].accuracy);
                    }
                }
            }
        }
    }
}
