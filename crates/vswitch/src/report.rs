//! The per-port counters table printed at exit and on SIGUSR1.

use std::fmt::Write;

use vswitch_core::DropReason;
use vswitch_datapath::Switch;

/// The counters of every port and of the MAC table, as an aligned text table.
pub fn render(switch: &Switch) -> String {
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
    switch.sync_counters();
    for port in switch.ports() {
        let s = port.counters().snapshot();
        let state = if port.is_gone() { "gone" } else { "up" };
        let _ = write!(
            out,
            "{:<15} {:<5} {:>10} {:>14} {:>10} {:>14}",
            port.name(),
            state,
            s.rx_packets,
            s.rx_bytes,
            s.tx_packets,
            s.tx_bytes
        );
        for reason in DropReason::ALL {
            let _ = write!(out, " {:>10}", s.drops(reason));
        }
        let _ = write!(out, " {:>12}", s.kernel_drops);
        out.push('\n');
    }
    let t = switch.table_stats();
    let _ = writeln!(
        out,
        "mac table: {} entries; learned {}, moved {}, aged {}, evicted {}",
        switch.fdb().len(),
        t.learned,
        t.moved,
        t.aged,
        t.evicted
    );
    out
}
