//! The per-port counters table printed at exit and on SIGUSR1.

use std::fmt::Write;

use vswitch_core::DropReason;
use vswitch_datapath::SwitchStats;

/// The counters of every port and of the MAC table, as an aligned text table.
pub fn render(stats: &SwitchStats) -> String {
    let mut out = String::new();
    let mut header = format!(
        "{:<15} {:<5} {:>10} {:>14} {:>10} {:>14}",
        "PORT", "STATE", "RX-PKTS", "RX-BYTES", "TX-PKTS", "TX-BYTES"
    );
    for reason in DropReason::ALL {
        let _ = write!(header, " {:>10}", reason.name());
    }
    let _ = write!(header, " {:>12}", "kernel_drops");
    let _ = writeln!(out, "{header}");
    for port in &stats.ports {
        let s = &port.counters;
        let state = if port.gone { "gone" } else { "up" };
        let _ = write!(
            out,
            "{:<15} {:<5} {:>10} {:>14} {:>10} {:>14}",
            port.name, state, s.rx_packets, s.rx_bytes, s.tx_packets, s.tx_bytes
        );
        for reason in DropReason::ALL {
            let _ = write!(out, " {:>10}", s.drops(reason));
        }
        let _ = write!(out, " {:>12}", s.kernel_drops);
        out.push('\n');
    }
    let t = &stats.table;
    let _ = writeln!(
        out,
        "mac table: {} entries; learned {}, moved {}, aged {}, evicted {}",
        stats.table_entries, t.learned, t.moved, t.aged, t.evicted
    );
    out
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use vswitch_datapath::{MemoryPort, PortDevice, Switch, SwitchConfig};

    /// The exit report, `/metrics` and `stats --json` render one snapshot: the same numbers.
    #[test]
    fn the_report_metrics_and_json_show_the_same_counts() {
        let mut peers = Vec::new();
        let mut ports: Vec<(String, Box<dyn PortDevice>)> = Vec::new();
        for name in ["a", "b"] {
            let (port, peer) = MemoryPort::pair(1500).expect("pair");
            ports.push((name.to_owned(), Box::new(port)));
            peers.push(peer);
        }
        let switch = Switch::start(SwitchConfig::default(), ports).expect("switch");
        let mut frame = vec![0xff; 6];
        frame.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x88, 0xb5]);
        frame.resize(60, 0);
        for _ in 0..7 {
            peers[0].send(&frame).expect("send");
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while switch.stats().ports[1].counters.tx_packets < 7 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let stats = switch.stats();
        let (a, b) = (&stats.ports[0].counters, &stats.ports[1].counters);
        assert_eq!((a.rx_packets, b.tx_packets), (7, 7));
        let report = super::render(&stats);
        let metrics = crate::metrics::render(&stats);
        let json = crate::control::stats_json(&stats);
        for (i, port) in stats.ports.iter().enumerate() {
            let c = &port.counters;
            let row = report
                .lines()
                .find(|l| l.split_whitespace().next() == Some(&port.name))
                .expect("a row per port");
            let cells: Vec<&str> = row.split_whitespace().collect();
            assert_eq!(
                cells[2..6],
                [c.rx_packets, c.rx_bytes, c.tx_packets, c.tx_bytes].map(|n| n.to_string())
            );
            for (metric, value) in [("rx_packets", c.rx_packets), ("tx_bytes", c.tx_bytes)] {
                let line = format!(
                    "vswitch_port_{metric}_total{{port=\"{}\"}} {value}",
                    port.name
                );
                assert!(metrics.contains(&line), "{line} not in /metrics");
                assert_eq!(json["ports"][i][metric], value);
            }
        }
        assert_eq!(json["table"]["entries"], stats.table_entries);
        assert!(report.contains(&format!("mac table: {} entries", stats.table_entries)));
    }
}
