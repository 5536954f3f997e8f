//! `--metrics ADDR`: the switch's counters in the Prometheus text format over HTTP.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use vswitch_core::DropReason;
use vswitch_datapath::{Hook, Switch, SwitchStats};

/// Renders every counter in the Prometheus text exposition format.
pub fn render(stats: &SwitchStats) -> String {
    let mut out = String::new();
    type Counter = (
        &'static str,
        &'static str,
        fn(&vswitch_core::PortStats) -> u64,
    );
    let counters: [Counter; 7] = [
        (
            "vswitch_port_rx_packets_total",
            "Frames received from the port.",
            |s| s.rx_packets,
        ),
        (
            "vswitch_port_rx_bytes_total",
            "Bytes received from the port.",
            |s| s.rx_bytes,
        ),
        (
            "vswitch_port_tx_packets_total",
            "Frames sent out of the port.",
            |s| s.tx_packets,
        ),
        (
            "vswitch_port_tx_bytes_total",
            "Bytes sent out of the port.",
            |s| s.tx_bytes,
        ),
        (
            "vswitch_port_fast_path_rx_packets_total",
            "Of the frames received, those the in-kernel fast path forwarded.",
            |s| s.fast_rx_packets,
        ),
        (
            "vswitch_port_fast_path_tx_packets_total",
            "Of the frames sent, those the in-kernel fast path forwarded.",
            |s| s.fast_tx_packets,
        ),
        (
            "vswitch_port_kernel_drops_total",
            "Frames the kernel dropped before the switch read them (TAP ring or socket buffer full).",
            |s| s.kernel_drops,
        ),
    ];
    for (metric, help, get) in counters {
        let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} counter");
        for p in &stats.ports {
            let _ = writeln!(out, "{metric}{{port=\"{}\"}} {}", p.name, get(&p.counters));
        }
    }
    let _ = writeln!(
        out,
        "# HELP vswitch_port_drops_total Frames dropped, by reason.\n# TYPE vswitch_port_drops_total counter"
    );
    for p in &stats.ports {
        for reason in DropReason::ALL {
            let _ = writeln!(
                out,
                "vswitch_port_drops_total{{port=\"{}\",reason=\"{}\"}} {}",
                p.name,
                reason.name(),
                p.counters.drops(reason)
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP vswitch_vlan_drops_total Frames VLAN membership dropped on ingress, by the VID of their outer tag (0: untagged).\n# TYPE vswitch_vlan_drops_total counter"
    );
    for (vid, n) in &stats.vlan_drops {
        let _ = writeln!(out, "vswitch_vlan_drops_total{{vid=\"{vid}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "# HELP vswitch_port_up Whether the port is attached (0 once its device is gone).\n# TYPE vswitch_port_up gauge"
    );
    for p in &stats.ports {
        let _ = writeln!(
            out,
            "vswitch_port_up{{port=\"{}\"}} {}",
            p.name,
            u8::from(!p.gone)
        );
    }
    let _ = writeln!(
        out,
        "# HELP vswitch_pipeline_stage_total Pipeline stage counters, by port, direction, stage and counter.\n# TYPE vswitch_pipeline_stage_total counter"
    );
    for port in &stats.ports {
        for (hook, stages) in [Hook::Ingress, Hook::Egress].iter().zip(&port.pipelines) {
            for (i, (kind, counters)) in stages.iter().enumerate() {
                for (counter, value) in counters {
                    let _ = writeln!(
                        out,
                        "vswitch_pipeline_stage_total{{port=\"{}\",hook=\"{hook}\",stage=\"{i}\",kind=\"{kind}\",counter=\"{counter}\"}} {value}",
                        port.name
                    );
                }
            }
        }
    }
    let (entries, capacity) = (stats.table_entries, stats.table_capacity);
    let t = &stats.table;
    let _ = writeln!(
        out,
        "# HELP vswitch_fdb_entries MAC table entries.\n# TYPE vswitch_fdb_entries gauge\nvswitch_fdb_entries {entries}"
    );
    let _ = writeln!(
        out,
        "# HELP vswitch_fdb_capacity MAC table capacity.\n# TYPE vswitch_fdb_capacity gauge\nvswitch_fdb_capacity {capacity}"
    );
    let _ = writeln!(
        out,
        "# HELP vswitch_fdb_events_total MAC table changes, by kind.\n# TYPE vswitch_fdb_events_total counter"
    );
    for (event, n) in [
        ("learned", t.learned),
        ("moved", t.moved),
        ("aged", t.aged),
        ("evicted", t.evicted),
    ] {
        let _ = writeln!(out, "vswitch_fdb_events_total{{event=\"{event}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "# HELP vswitch_worker_busy_seconds_total Time a worker spent handling frames.\n# TYPE vswitch_worker_busy_seconds_total counter"
    );
    for (i, busy) in stats.workers_busy.iter().enumerate() {
        let _ = writeln!(
            out,
            "vswitch_worker_busy_seconds_total{{worker=\"{i}\"}} {:.6}",
            busy.as_secs_f64()
        );
    }
    out
}

/// The HTTP endpoint, serving until dropped.
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Listens on `addr` and answers `GET /metrics`.
    pub fn start(addr: SocketAddr, switch: Arc<Switch>) -> Result<MetricsServer> {
        let listener = TcpListener::bind(addr)
            .with_context(|| format!("couldn't listen on {addr} for metrics"))?;
        if !addr.ip().is_loopback() {
            tracing::warn!(
                %addr,
                "metrics listen beyond this machine: anyone who reaches {addr} reads every counter"
            );
        }
        let listener_addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = stop.clone();
        let thread = std::thread::Builder::new()
            .name("vswitch-metrics".into())
            .spawn(move || {
                // Blocks in accept; Drop wakes it by connecting once the stop flag is set.
                while !thread_stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok(_) if thread_stop.load(Ordering::Relaxed) => break,
                        Ok((stream, _)) => answer(stream, &switch),
                        Err(_) => std::thread::sleep(Duration::from_millis(200)),
                    }
                }
            })?;
        Ok(MetricsServer {
            addr: listener_addr,
            stop,
            thread: Some(thread),
        })
    }
}

/// The longest request head read.
const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// How long a client has to send its request, and to take the reply.
const DEADLINE: Duration = Duration::from_secs(2);

/// Reads one request head (at most [`MAX_REQUEST_BYTES`], within [`DEADLINE`] all told) and
/// answers it; a client too slow or too long gets nothing and is closed.
fn answer(mut stream: TcpStream, switch: &Switch) {
    let Some(head) = read_head(&mut stream) else {
        return;
    };
    let (status, body) = if head.starts_with(b"GET /metrics") {
        ("200 OK", render(&switch.stats()))
    } else {
        ("404 Not Found", "try /metrics\n".to_owned())
    };
    let _ = stream.set_write_timeout(Some(DEADLINE));
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// The request head up to its blank line, or `None` past the size or time limit.
fn read_head(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let deadline = Instant::now() + DEADLINE;
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        stream
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .ok()?;
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            // The client closed: answer what it sent if it was a request line at least.
            return head.contains(&b'\n').then_some(head);
        }
        head.extend_from_slice(&chunk[..n]);
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
            return Some(head);
        }
        if head.len() > MAX_REQUEST_BYTES {
            return None;
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = std::net::TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
