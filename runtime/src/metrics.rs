//! Prometheus metrics for the edge and the broker (`--metrics ADDR`): the counters of
//! their stats and histograms of queue and compute time, in the OpenMetrics text format
//! (`prometheus-client`; Prometheus reads it) over HTTP (`tiny_http`) at `GET /metrics`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::broker::BrokerStats;
use crate::edge::EdgeStats;
use crate::wire::transport::TransportError;

/// Histograms of where a request's time went, in seconds.
#[derive(Debug, Clone)]
pub struct Timings {
    /// Waiting: for a worker (edge), for a free edge (broker).
    pub queue: Histogram,
    /// Working: running the layers (edge), the edge's round trip (broker).
    pub compute: Histogram,
}

impl Default for Timings {
    /// Buckets from 25 µs doubling to about 1.6 s.
    fn default() -> Self {
        let buckets = || exponential_buckets(25e-6, 2.0, 17);
        Self {
            queue: Histogram::new(buckets()),
            compute: Histogram::new(buckets()),
        }
    }
}

impl Timings {
    /// Records one request.
    pub fn observe(&self, queue: Duration, compute: Duration) {
        self.queue.observe(queue.as_secs_f64());
        self.compute.observe(compute.as_secs_f64());
    }
}

/// One scrape's worth of metrics, named `edgent_<role>_…`.
struct Exposition {
    registry: Registry,
}

impl Exposition {
    fn new(role: &str) -> Self {
        Self {
            registry: Registry::with_prefix(format!("edgent_{role}")),
        }
    }

    fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.registry.register(name, help, ConstCounter::new(value));
    }

    fn gauge(&mut self, name: &str, help: &str, value: f64) {
        self.registry.register(name, help, ConstGauge::new(value));
    }

    fn histogram(&mut self, name: &str, help: &str, histogram: &Histogram) {
        self.registry.register(name, help, histogram.clone());
    }

    fn render(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

/// The edge's metrics in the text exposition format.
pub fn edge_text(stats: &EdgeStats, timings: &Timings) -> String {
    let mut m = Exposition::new("edge");
    m.counter("requests", "Inference requests received", stats.requests);
    m.counter("results", "Results sent", stats.results);
    let errors = Family::<Vec<(String, String)>, Counter>::default();
    for (code, n) in &stats.errors_by_code {
        errors
            .get_or_create(&vec![("code".to_string(), code.clone())])
            .inc_by(*n);
    }
    m.registry
        .register("errors", "Error replies sent, by code", errors);
    m.counter("pings", "Pings answered", stats.pings);
    m.counter(
        "zap_allowed",
        "CURVE handshakes admitted",
        stats.zap_allowed,
    );
    m.counter("zap_denied", "CURVE handshakes refused", stats.zap_denied);
    m.counter(
        "zap_revoked",
        "Messages dropped: key removed from the allow-list",
        stats.zap_revoked,
    );
    m.counter("allow_reloads", "Allow-list reloads", stats.allow_reloads);
    m.gauge(
        "allow_keys",
        "Keys on the allow-list",
        stats.allow_keys as f64,
    );
    m.counter(
        "reconnects",
        "Reconnections to a silent broker",
        stats.reconnects,
    );
    m.gauge("uptime_seconds", "Seconds since start", stats.uptime_s);
    m.histogram(
        "queue_seconds",
        "Time a request waited for a worker",
        &timings.queue,
    );
    m.histogram(
        "compute_seconds",
        "Time a worker ran a request's layers",
        &timings.compute,
    );
    m.render()
}

/// The broker's metrics in the text exposition format.
pub fn broker_text(stats: &BrokerStats, timings: &Timings) -> String {
    let mut m = Exposition::new("broker");
    for (name, help, value) in [
        (
            "forwarded",
            "Requests forwarded to an edge",
            stats.forwarded,
        ),
        ("replies", "Replies returned to devices", stats.replies),
        ("pongs", "Pings answered", stats.pongs),
        ("refused", "Malformed messages refused", stats.refused),
        ("busy", "Requests refused: queue full", stats.busy),
        (
            "unavailable",
            "Requests answered unavailable (no edge, or their edge lost)",
            stats.unavailable,
        ),
        (
            "expired",
            "Requests that waited past their deadline",
            stats.expired,
        ),
        ("edges_joined", "Edges registered", stats.edges_joined),
        (
            "edges_lost",
            "Edges dropped (silent, unreachable, revoked)",
            stats.edges_lost,
        ),
        ("edges_left", "Edges that left cleanly", stats.edges_left),
        (
            "stray_replies",
            "Replies matching no outstanding request",
            stats.stray_replies,
        ),
        ("zap_denied", "CURVE handshakes refused", stats.zap_denied),
        (
            "zap_revoked",
            "Messages dropped: key removed from an allow-list",
            stats.zap_revoked,
        ),
        ("allow_reloads", "Allow-list reloads", stats.allow_reloads),
    ] {
        m.counter(name, help, value);
    }
    for (name, help, value) in [
        ("edges", "Edges connected", stats.edges),
        ("workers", "Workers of the connected edges", stats.workers),
        ("queued", "Requests waiting for an edge", stats.queued),
        ("outstanding", "Requests held by edges", stats.outstanding),
    ] {
        m.gauge(name, help, value as f64);
    }
    m.gauge("uptime_seconds", "Seconds since start", stats.uptime_s);
    m.histogram(
        "queue_seconds",
        "Time a request waited at the broker for a free edge",
        &timings.queue,
    );
    m.histogram(
        "edge_seconds",
        "Time from forwarding a request to its reply",
        &timings.compute,
    );
    m.render()
}

/// The HTTP endpoint serving metrics; stops when dropped.
#[derive(Debug)]
pub struct MetricsServer {
    /// Where it listens (the port chosen when asked for port 0).
    pub address: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Serves `render()` at `GET /metrics` on `address` (e.g. `127.0.0.1:9100`), one request
/// at a time on its own thread.
pub fn serve_metrics(
    address: &str,
    render: impl Fn() -> String + Send + 'static,
) -> Result<MetricsServer, TransportError> {
    let server = tiny_http::Server::http(address).map_err(|e| TransportError::Io {
        path: format!("--metrics {address}").into(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let bound = server
        .server_addr()
        .to_ip()
        .ok_or_else(|| TransportError::Io {
            path: format!("--metrics {address}").into(),
            source: std::io::Error::other("not an IP address"),
        })?;
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = Arc::clone(&stop);
    let thread = std::thread::Builder::new()
        .name("edgent-metrics".into())
        .spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                let Ok(Some(request)) = server.recv_timeout(Duration::from_millis(100)) else {
                    continue;
                };
                let response =
                    if request.url() == "/metrics" && *request.method() == tiny_http::Method::Get {
                        let content_type = tiny_http::Header::from_bytes(
                            "Content-Type",
                            // prometheus-client writes OpenMetrics text (`# EOF`, `_total`).
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )
                        .expect("a valid header");
                        tiny_http::Response::from_string(render()).with_header(content_type)
                    } else {
                        tiny_http::Response::from_string("metrics are at GET /metrics\n")
                            .with_status_code(404)
                    };
                let _ = request.respond(response);
            }
        })
        .map_err(|source| TransportError::Io {
            path: "<metrics thread>".into(),
            source,
        })?;
    Ok(MetricsServer {
        address: bound,
        stop,
        thread: Some(thread),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn get(address: SocketAddr, path: &str) -> String {
        let mut s = std::net::TcpStream::connect(address).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn edge_metrics_are_served_in_the_exposition_format() {
        let timings = Timings::default();
        timings.observe(Duration::from_micros(40), Duration::from_micros(900));
        let mut stats = EdgeStats {
            requests: 12,
            results: 10,
            ..EdgeStats::default()
        };
        stats.errors_by_code.insert("busy".into(), 2);
        let server = {
            let timings = timings.clone();
            serve_metrics("127.0.0.1:0", move || edge_text(&stats, &timings)).unwrap()
        };
        let text = get(server.address, "/metrics");
        assert!(
            text.starts_with("HTTP/1.1 200") || text.starts_with("HTTP/1.0 200"),
            "{text}"
        );
        assert!(
            text.contains("application/openmetrics-text; version=1.0.0"),
            "{text}"
        );
        assert!(text.contains("edgent_edge_requests_total 12"), "{text}");
        assert!(
            text.contains("edgent_edge_errors_total{code=\"busy\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("edgent_edge_compute_seconds_count 1"),
            "{text}"
        );
        assert!(
            text.contains("edgent_edge_queue_seconds_bucket{le=\"0.00005\"} 1"),
            "{text}"
        );
        assert!(text.trim_end().ends_with("# EOF"), "{text}");
        assert!(get(server.address, "/other").contains("404"));
    }

    #[test]
    fn broker_metrics_name_every_counter() {
        let stats = BrokerStats {
            edges: 2,
            unavailable: 3,
            ..BrokerStats::default()
        };
        let text = broker_text(&stats, &Timings::default());
        assert!(text.contains("edgent_broker_edges 2"), "{text}");
        assert!(text.contains("edgent_broker_unavailable_total 3"), "{text}");
        assert!(
            text.contains("edgent_broker_edge_seconds_count 0"),
            "{text}"
        );
    }

    #[test]
    fn a_bad_address_is_a_clear_error() {
        let err = serve_metrics("not an address", String::new).unwrap_err();
        assert!(
            err.to_string().contains("--metrics not an address"),
            "{err}"
        );
    }
}
