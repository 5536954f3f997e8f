//! The frame path: arbitrary bytes, each behind an arbitrary virtio-net header, received on the
//! ports of real switches (learning, VLAN modes and flags, pipelines of every stage, MACVLAN)
//! and taken the whole way a worker takes them: pipelines, the decision, VLAN tags, MTU checks,
//! checksum completion and software segmentation, out to the devices. Nothing may panic, and no
//! port may be sent a frame it can't take: a plain device never more than its MTU (plus the
//! Ethernet header and the two tags the switch allows beyond it), an offloading one never a
//! GSO frame whose segments exceed its MTU. And the same frames, joined as a VXLAN port joins a
//! train of TCP segments, cut again give back what was joined.
#![no_main]

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::{Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;
use vswitch_core::{MacAddr, MacvlanMode, VNET_HDR_LEN, VnetHeader, gro, gso::GsoFrame};
use vswitch_datapath::switch::Injector;
use vswitch_datapath::{
    DeviceCapabilities, DeviceStatus, Hook, MacvlanConfig, PortDevice, Switch, SwitchConfig,
};

/// A device that takes every frame it is sent after checking it fits, and never has one to read.
#[derive(Debug)]
struct CheckedPort {
    name: &'static str,
    vnet: bool,
    mtu: u32,
    /// Never readable: the other end is kept and never written.
    sock: UnixStream,
    _peer: UnixStream,
}

impl CheckedPort {
    fn boxed(name: &'static str, vnet: bool, mtu: u32) -> Box<dyn PortDevice> {
        let (sock, _peer) = UnixStream::pair().expect("socketpair");
        Box::new(CheckedPort {
            name,
            vnet,
            mtu,
            sock,
            _peer,
        })
    }
}

impl PortDevice for CheckedPort {
    fn capabilities(&self) -> DeviceCapabilities {
        DeviceCapabilities {
            mac: Some(MacAddr([2, 0, 0, 0, 0, self.name.as_bytes()[1]])),
            ..DeviceCapabilities::new("fuzz").vnet_header(self.vnet)
        }
    }

    fn recv(&self, _queue: usize, _buf: &mut [u8]) -> io::Result<usize> {
        Err(io::ErrorKind::WouldBlock.into())
    }

    fn send(&self, bytes: &[u8]) -> io::Result<()> {
        // The Ethernet header and up to two VLAN tags ride beyond the MTU.
        let limit = self.mtu as usize + 14 + 8;
        if !self.vnet {
            assert!(
                bytes.len() <= limit,
                "{}: sent {} bytes, MTU {}",
                self.name,
                bytes.len(),
                self.mtu
            );
            return Ok(());
        }
        assert!(
            bytes.len() >= VNET_HDR_LEN,
            "{}: no virtio-net header",
            self.name
        );
        let vnet = VnetHeader::parse(bytes).expect("a header the switch wrote");
        let frame = &bytes[VNET_HDR_LEN..];
        if vnet.is_gso() {
            let gso =
                GsoFrame::parse(frame, &vnet).expect("a GSO frame the switch sent is well-formed");
            assert!(
                gso.segment_len() <= self.mtu as usize + 8,
                "{}: GSO segments of {} bytes, MTU {}",
                self.name,
                gso.segment_len(),
                self.mtu
            );
        } else {
            assert!(
                frame.len() <= limit,
                "{}: sent {} bytes, MTU {}",
                self.name,
                frame.len(),
                self.mtu
            );
        }
        Ok(())
    }

    fn fd(&self, _queue: usize) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }

    fn status(&self) -> DeviceStatus {
        DeviceStatus::with_mtu(self.mtu)
    }
}

const PORTS: [(&str, bool, u32); 4] = [
    ("p0", true, 1500),
    ("p1", true, 9000),
    ("p2", false, 1500),
    ("p3", false, 1280),
];

fn ports() -> Vec<(String, Box<dyn PortDevice>)> {
    PORTS
        .iter()
        .map(|&(name, vnet, mtu)| (name.to_owned(), CheckedPort::boxed(name, vnet, mtu)))
        .collect()
}

/// One switch of each kind, and a thread-less worker for each.
fn switches() -> &'static [Mutex<(Switch, Injector)>] {
    static SWITCHES: OnceLock<Vec<Mutex<(Switch, Injector)>>> = OnceLock::new();
    SWITCHES.get_or_init(|| {
        let learning = || SwitchConfig { threads: 1, ..SwitchConfig::default() };
        let plain = Switch::start(learning(), ports()).expect("switch");

        let vlans = Switch::start(learning(), ports()).expect("switch");
        for (port, mode) in [("p0", "trunk 10,20,100 native 10"), ("p1", "access 20"), ("p2", "tunnel 100 tpid 0x88a8"), ("p3", "trunk 10,20 native 20 tagged")] {
            vlans.set_vlan(port, mode.parse().expect("mode")).expect("set_vlan");
        }
        vlans.set_port_flag("p1", "hairpin", "on").expect("flag");
        vlans.set_port_flag("p3", "mcast-flood", "off").expect("flag");

        let pipelines = Switch::start(learning(), ports()).expect("switch");
        for (port, hook, text) in [
            ("p0", Hook::Ingress, "filter drop proto udp dst-port 9; filter count src 10.0.0.0/8; impair corrupt 30% duplicate 30% seed 3"),
            ("p1", Hook::Egress, "rate 10mbit burst 4k queue 5ms; mirror port p3"),
            ("p2", Hook::Ingress, "storm 100pps; impair delay 1ms jitter 1ms reorder 20% loss 5%"),
            ("p3", Hook::Egress, "impair corrupt 50%; filter allow ethertype ipv6; filter drop vlan 7"),
        ] {
            pipelines.set_pipeline(port, hook, text).expect("pipeline");
        }

        let macvlan = Switch::start(
            SwitchConfig {
                macvlan: Some(MacvlanConfig {
                    mode: MacvlanMode::Bridge,
                    uplink: "p0".into(),
                    bindings: vec![("p2".into(), vec![MacAddr([2, 0, 0, 0, 0, 0x22])])],
                    allow_spoofing: vec!["p3".into()],
                }),
                ..learning()
            },
            ports(),
        )
        .expect("switch");

        [plain, vlans, pipelines, macvlan]
            .into_iter()
            .map(|s| {
                let injector = s.injector().expect("injector");
                Mutex::new((s, injector))
            })
            .collect()
    })
}

/// The input: a byte choosing the switch, then frames, each as its ingress port (one byte), its
/// length (two bytes, big-endian) and `[virtio-net header | frame]`; a short last one is taken
/// as it is. A plain layout, so seeds are easy to write (`fuzz/seeds/frame/make.py`).
fn frames(data: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    let mut rest = data;
    std::iter::from_fn(move || {
        let (&port, after) = rest.split_first()?;
        let (len, after) = match after {
            [a, b, after @ ..] => (usize::from(u16::from_be_bytes([*a, *b])), after),
            _ => return None,
        };
        let (frame, after) = after.split_at(len.min(after.len()));
        rest = after;
        Some((usize::from(port), frame))
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, data)) = data.split_first() else {
        return;
    };
    let all = switches();
    let mut guard = all[usize::from(which) % all.len()]
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let (switch, injector) = &mut *guard;
    // Each input starts from an empty table, so a crash replays from its input alone.
    let _ = switch.flush_fdb(None);
    for (port, bytes) in frames(data).take(16) {
        let (name, _, _) = PORTS[port % PORTS.len()];
        let port = switch.port(name).expect("port");
        injector.inject(&port, bytes);
    }
    drop(guard);
    joined_segments_cut_back_into_the_same(data);
});

/// Software GRO (what a VXLAN port does with a train of datagrams): if the frames join, the
/// joined GSO frame is well-formed and cut again gives back the same payloads in order.
fn joined_segments_cut_back_into_the_same(data: &[u8]) {
    let inner: Vec<&[u8]> = frames(data)
        .take(64)
        .map(|(_, bytes)| bytes.get(VNET_HDR_LEN..).unwrap_or_default())
        .collect();
    let mut out = vec![0u8; 65_536 + 64];
    let Some((vnet, taken, len)) = gro::join(&inner, &mut out) else {
        return;
    };
    assert!(taken >= 2 && taken <= inner.len());
    let joined = GsoFrame::parse(&out[..len], &vnet).expect("a joined frame is a GSO frame");
    let headers = usize::from(vnet.hdr_len);
    let mut payloads = Vec::new();
    let count = joined.segment(None, &mut Vec::new(), |seg| {
        payloads.extend_from_slice(&seg[headers..])
    });
    assert_eq!(count, taken, "joined {taken}, cut into {count}");
    let sent: Vec<u8> = inner[..taken]
        .iter()
        .flat_map(|f| {
            let ihl = usize::from(f[14] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([f[16], f[17]]));
            f[14 + ihl + usize::from(f[14 + ihl + 12] >> 4) * 4..14 + total]
                .iter()
                .copied()
        })
        .collect();
    assert!(payloads == sent, "payloads differ after join and cut");
}
