//! Whatever bytes arrive, the pure logic answers and never panics: frames of any length and
//! content through the forwarding decision, MACVLAN dispatch, every pipeline stage, the MTU
//! check, checksum completion and software segmentation with any virtio-net header; any text through the parsers.

use proptest::prelude::*;
use vswitch_core::FrameView;
use vswitch_core::forward::decide;
use vswitch_core::gso::fits_mtu;
use vswitch_core::gso::{GsoFrame, segment};
use vswitch_core::pipeline::corrupt_on_the_wire;
use vswitch_core::vnet::{complete_checksum, insert_vlan_tag};
use vswitch_core::{
    ForwardingConfig, MacAddr, MacTable, MacvlanMode, MacvlanTable, Pipeline, PortId, TableConfig,
    Timestamp, VnetHeader,
};

fn any_frame() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..80),
        // Plausible EtherTypes (IPv4, IPv6, VLAN, ARP) with random headers behind them.
        (
            proptest::collection::vec(any::<u8>(), 15..200),
            prop_oneof![Just(0x0800u16), Just(0x86dd), Just(0x8100), Just(0x0806)]
        )
            .prop_map(|(mut f, ethertype)| {
                f[12..14].copy_from_slice(&ethertype.to_be_bytes());
                if ethertype == 0x0800 {
                    f[14] = 0x40 | (f[14] & 0x0f);
                }
                f
            }),
    ]
}

proptest! {
    #[test]
    fn forwarding_and_dispatch_answer_any_frame(
        frames in proptest::collection::vec(any_frame(), 1..50),
        port in 0u16..4,
    ) {
        let mut table = MacTable::new(TableConfig { capacity: 8, ..TableConfig::default() });
        let cfg = ForwardingConfig { link_local_mask: 0x4000 };
        let sub_ports = [
            (PortId(1), vec![MacAddr([2, 0, 0, 0, 0, 1])]),
            (PortId(2), vec![MacAddr([2, 0, 0, 0, 0, 2])]),
        ];
        let macvlan = MacvlanTable::new(MacvlanMode::Vepa, PortId(0), &sub_ports, vec![]).unwrap();
        for (i, f) in frames.iter().enumerate() {
            let now = Timestamp::from_millis(i as u64);
            let Ok(view) = FrameView::new(f, VnetHeader::default()) else {
                continue;
            };
            let d = decide(&table, &cfg, now, PortId(port), &view);
            if let Some(req) = d.learn {
                table.learn(req.key, req.port, now, &mut Vec::new());
            }
            let _ = macvlan.dispatch(PortId(port % 3), &view);
        }
        prop_assert!(table.len() <= 8);
    }

    #[test]
    fn pipelines_answer_any_frame(frames in proptest::collection::vec(any_frame(), 1..50)) {
        let mut p = Pipeline::parse(
            "filter count src 10.0.0.0/8; filter drop proto udp dst-port 53; filter allow vlan 5; \
             rate 1mbit queue 10ms; storm 100pps; impair loss 5% delay 1ms jitter 500us \
             reorder 10% duplicate 5% corrupt 5% seed 3; mirror port x",
        )
        .unwrap();
        for (i, f) in frames.iter().enumerate() {
            let o = p.process(Timestamp::from_micros(i as u64 * 100), f, i % 2 == 0);
            if let Some((offset, _)) = o.corrupt {
                prop_assert!(offset < f.len());
            }
        }
    }

    #[test]
    fn offload_helpers_survive_any_header(
        frame in any_frame(),
        header in proptest::array::uniform10(any::<u8>()),
        mtu in 0u32..70_000,
    ) {
        let vnet = VnetHeader::parse(&header).unwrap();
        let _ = fits_mtu(&frame, &vnet, mtu);
        let mut copy = frame.clone();
        if !complete_checksum(&mut copy, &vnet) {
            prop_assert_eq!(&copy, &frame, "a refused completion must leave the frame alone");
        }
        if let Ok(g) = GsoFrame::parse(&frame, &vnet) {
            let _ = (g.segment_len(), g.tcp_mss_for_mtu(mtu));
        }
        let mut buf = header.to_vec();
        buf.extend_from_slice(&frame);
        if let Ok(view) = FrameView::parse(&buf) {
            let damaged = corrupt_on_the_wire(&buf, &view, mtu as usize, (mtu % 8) as u8);
            prop_assert!(!damaged.is_empty());
        }
        let mut scratch = Vec::new();
        let limit = u16::try_from(mtu).ok();
        let mut total = 0;
        if let Ok(n) = segment(&frame, &vnet, limit, &mut scratch, |s| total += s.len()) {
            prop_assert!(n >= 1 && total >= n * 14);
        }
        let len = buf.len();
        buf.resize(len + (mtu % 6) as usize, 0);
        let before = buf.clone();
        match insert_vlan_tag(&mut buf, len, 0x8100, mtu as u16) {
            Some(n) => prop_assert_eq!(n, len + 4),
            None => prop_assert_eq!(&buf, &before, "a refused tag must leave the bytes alone"),
        }
    }

    #[test]
    fn parsers_answer_any_text(text in ".{0,80}") {
        let _ = Pipeline::parse(&text);
        let _ = text.parse::<MacAddr>();
        let _ = text.parse::<MacvlanMode>();
    }
}
