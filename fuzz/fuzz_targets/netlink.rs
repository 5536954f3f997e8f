//! The netlink reply parser: arbitrary datagrams never panic, and a link message built with the
//! request builder reads back as what was put in.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use vswitch_netns::message::{RTM_NEWLINK, Reply, Request, parse_replies};

#[derive(Debug, Arbitrary)]
enum Input {
    /// Bytes as the kernel (or anything) might send them.
    Raw(Vec<u8>),
    /// A link message, to read back.
    Link {
        seq: u32,
        index: u32,
        flags: u32,
        mtu: Option<u32>,
        mac: Option<[u8; 6]>,
        name: Option<String>,
        /// Other attributes: (kind, data).
        extra: Vec<(u16, Vec<u8>)>,
        /// Bytes after the message (a truncated next one, say).
        tail: Vec<u8>,
    },
}

fuzz_target!(|input: Input| {
    match input {
        Input::Raw(bytes) => {
            let _ = parse_replies(&bytes);
            let _ = vswitch_netns::icmp::parse_echo_reply(&bytes, [10, 0, 0, 1].into());
            let _ =
                vswitch_netns::icmp::parse_echo_reply(&bytes, std::net::Ipv6Addr::LOCALHOST.into());
        }
        Input::Link {
            seq,
            index,
            flags,
            mtu,
            mac,
            name,
            extra,
            tail,
        } => {
            let mut request = Request::new(RTM_NEWLINK, 0, seq).ifinfo(index, flags, 0);
            if let Some(name) = name
                .as_deref()
                .filter(|n| !n.contains('\0') && n.len() < 64)
            {
                request = request.ifname(name);
            }
            for (kind, data) in extra
                .iter()
                .filter(|(k, d)| ![1, 4, 13].contains(&(k & 0x7fff)) && d.len() < 1024)
            {
                request = request.attr(*kind, data);
            }
            if let Some(mtu) = mtu {
                request = request.mtu(mtu);
            }
            if let Some(mac) = mac {
                request = request.mac(mac);
            }
            let mut bytes = request.finish();
            bytes.extend_from_slice(&tail);
            let replies = parse_replies(&bytes);
            match replies.first() {
                Some(Reply::Link { seq: s, info }) => {
                    assert_eq!(*s, seq);
                    assert_eq!(info.index, index);
                    assert_eq!(info.flags, flags);
                    assert_eq!(info.mtu, mtu);
                    assert_eq!(info.mac, mac);
                }
                other => panic!("a link message read back as {other:?}"),
            }
        }
    }
});
