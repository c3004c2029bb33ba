//! Prometheus metrics of one registry process. One [`Metrics`] per server
//! (not a global registry) so that tests running several servers in one
//! process do not share counters.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// The registry's metrics and the Prometheus registry that exports them.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// Requests by route kind, method and status code.
    pub requests: IntCounterVec,
    /// Request durations by route kind and method.
    pub durations: HistogramVec,
    /// Requests being handled now: what a graceful shutdown waits for.
    pub in_flight: IntGauge,
    /// Blob and manifest bytes received.
    pub bytes_in: IntCounter,
    /// Blob and manifest bytes sent.
    pub bytes_out: IntCounter,
    /// Uploads in storage not yet completed or cancelled, across all
    /// replicas; refreshed from storage at each scrape.
    pub uploads_open: IntGauge,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some("berth".into()), None)?;
        let requests = IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests by route, method and status",
            ),
            &["route", "method", "status"],
        )?;
        let durations = HistogramVec::new(
            HistogramOpts::new("http_request_duration_seconds", "HTTP request latency").buckets(
                vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                    10.0, 60.0,
                ],
            ),
            &["route", "method"],
        )?;
        let in_flight =
            IntGauge::new("http_requests_in_flight", "HTTP requests being handled now")?;
        let bytes_in = IntCounter::new("bytes_received_total", "Blob and manifest bytes received")?;
        let bytes_out = IntCounter::new("bytes_sent_total", "Blob and manifest bytes sent")?;
        let uploads_open = IntGauge::new("uploads_open", "Uploads in storage not yet finished")?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(durations.clone()))?;
        registry.register(Box::new(in_flight.clone()))?;
        registry.register(Box::new(bytes_in.clone()))?;
        registry.register(Box::new(bytes_out.clone()))?;
        registry.register(Box::new(uploads_open.clone()))?;
        Ok(Self {
            registry,
            requests,
            durations,
            in_flight,
            bytes_in,
            bytes_out,
            uploads_open,
        })
    }

    /// The text exposition format.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf)?;
        String::from_utf8(buf).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}
