//! The control protocol: any bytes sent to a running switch's socket are answered line by line
//! with a reply of the protocol's shape (`ok` and a result, or not ok and an error), never a
//! panic, and the switch goes on. The switch has in-memory ports; requests that would reach
//! outside the process (port add, capture, a mirror to a file) are skipped.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vswitch_datapath::{MemoryPort, Switch, SwitchConfig};

fn switch() -> &'static Switch {
    static SWITCH: OnceLock<Switch> = OnceLock::new();
    SWITCH.get_or_init(|| {
        let ports = ["p0", "p1", "p2", "vx"]
            .into_iter()
            .map(|name| {
                let (port, peer) = MemoryPort::pair(1500).expect("socketpair");
                // The far end stays open for the life of the process.
                std::mem::forget(peer);
                (
                    name.to_owned(),
                    Box::new(port) as Box<dyn vswitch_datapath::PortDevice>,
                )
            })
            .collect();
        Switch::start(
            SwitchConfig {
                threads: 1,
                ..SwitchConfig::default()
            },
            ports,
        )
        .expect("switch")
    })
}

fuzz_target!(|bytes: &[u8]| {
    vswitch::fuzzing::control(bytes, switch());
});
