//! Co-inference over a tc-shaped link (DESIGN.md §8): device and edge in two network
//! namespaces joined by a veth pair, each direction limited by a token bucket
//! (`toolchain::shaping`). Needs root and `ip`/`tc` (CI has both); skips with the reason
//! otherwise.

mod common;

use std::time::Duration;

use common::*;
use toolchain::shaping::{ShapedLink, unavailable};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[test]
fn latency_matches_the_prediction_and_deadlines_hold_on_shaped_links() {
    if let Some(reason) = unavailable() {
        eprintln!("SKIPPED: {reason}");
        return;
    }
    let link = ShapedLink::new("edgent-shaped", 1).expect("network namespaces");
    let keys = Keys::new();
    let port = free_port();
    let mut args: Vec<String> = ["serve", "--bind", &format!("tcp://{}:{port}", link.edge_ip)]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(keys.server("edge"));
    let (ns_edge, ns_device) = (link.edge_exec(), link.device_exec());
    let edge = Server::start(&ns_edge, &args, "serving plan");
    let dir = tempfile::tempdir().unwrap();
    let mut summary = Vec::new();
    for (kbit, deadline) in [(150, "250ms"), (500, "150ms"), (1500, "100ms")] {
        let rate = format!("{kbit}kbit");
        link.shape(f64::from(kbit) * 1e3).unwrap();
        let trace = dir.path().join(format!("{rate}.jsonl"));
        let mut args: Vec<String> = ["eval", "--json", "--limit", "150", "--deadline", deadline]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(["--edge".into(), format!("tcp://{}:{port}", link.edge_ip)]);
        args.extend(["--trace".into(), trace.display().to_string()]);
        args.extend(keys.client("device", "edge"));
        device(&ns_device, &args, Duration::from_secs(300));
        let lines = read_jsonl(&trace);
        // The estimator needs a few transfers to learn the link: judge the rest.
        let steady = &lines[10..];
        let remote: Vec<_> = steady.iter().filter(|l| l["source"] == "edge").collect();
        let others: Vec<String> = steady
            .iter()
            .filter(|l| l["source"] != "edge")
            .map(|l| {
                format!(
                    "{} exit {} after {:.1} ms ({})",
                    l["source"], l["exit"], l["total_ms"], l["fallback"]
                )
            })
            .collect();
        assert!(
            remote.len() * 10 >= steady.len() * 9,
            "{rate}: the plan offloads ({} of {}); the others: {others:#?}",
            remote.len(),
            steady.len()
        );
        let measured = median(
            remote
                .iter()
                .map(|l| l["total_ms"].as_f64().unwrap())
                .collect(),
        );
        let predicted = median(
            remote
                .iter()
                .map(|l| l["plan"]["predicted_ms"].as_f64().unwrap())
                .collect(),
        );
        let error = (measured - predicted).abs() / measured;
        let feasible: Vec<_> = steady
            .iter()
            .filter(|l| l["plan"]["feasible"] == true)
            .collect();
        let met = feasible.iter().filter(|l| l["met"] == true).count();
        let hit = met as f64 / feasible.len() as f64;
        let bandwidth = median(
            remote
                .iter()
                .map(|l| l["link"]["bandwidth_bps"].as_f64().unwrap() / 1e3)
                .collect(),
        );
        let part =
            |f: &dyn Fn(&serde_json::Value) -> f64| median(remote.iter().map(|l| f(l)).collect());
        let network = part(&|l| l["network_ms"].as_f64().unwrap());
        let compute = part(&|l| l["edge_ms"].as_f64().unwrap() + l["queue_ms"].as_f64().unwrap());
        let network_plan = part(&|l| l["plan"]["network_ms"].as_f64().unwrap());
        let compute_plan = part(&|l| l["plan"]["edge_ms"].as_f64().unwrap());
        summary.push(format!(
            "{rate}, deadline {deadline}: median measured {measured:.2} ms vs predicted {predicted:.2} ms ({:.1} %) [network {network:.2} vs {network_plan:.2}, edge {compute:.2} vs {compute_plan:.2}], estimated {bandwidth:.0} kbit/s, deadline met {met}/{}",
            100.0 * error,
            feasible.len()
        ));
        eprintln!("{}", summary.last().unwrap());
        assert!(error <= 0.15, "{}", summary.join("\n"));
        assert!(hit >= 0.99, "{}", summary.join("\n"));
    }
    edge.stop();
    eprintln!("{}", summary.join("\n"));
}
