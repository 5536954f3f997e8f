//! Software GRO: joining consecutive TCP segments of one flow back into one GSO frame, the
//! inverse of [`crate::gso`], as the kernel's `tcp_gro_receive` does.
//!
//! A VXLAN port receives a sender's 64 KiB TCP segment as ~45 datagrams; handed on one by one,
//! each costs the switch a system call and the receiving host a trip through its stack. Joined,
//! they cost one. Only what the kernel would join is joined: untagged TCP over IPv4 (not
//! fragments) or IPv6 (no extension headers), only ACK and PSH set, headers equal but for the
//! fields that differ per segment (IP length, IPv4 identification and checksum; TCP sequence
//! number, PSH and checksum), sequence numbers
//! contiguous, every segment but the last as long as the first, nothing after a PSH, at most
//! 64 KiB of IP packet. Each segment's TCP checksum is checked first: the joined frame carries
//! a partial checksum the receiver trusts, so a damaged segment must not be hidden in it (it
//! goes on alone, for the receiver to drop).

use crate::checksum::{fold, pseudo_header, sum_bytes};
use crate::field::{ipv4, ipv6, proto, tcp};
use crate::vnet::{F_NEEDS_CSUM, VnetHeader, gso};
use crate::wire::ETHERNET_HEADER_LEN;

const ETHERTYPE_IPV4: [u8; 2] = [0x08, 0x00];
const ETHERTYPE_IPV6: [u8; 2] = [0x86, 0xdd];
/// TCP flags a joinable segment may carry: ACK and PSH.
const JOINABLE_FLAGS: u8 = 0x10 | tcp::PSH;

/// Where a joinable segment's parts lie.
#[derive(Debug, Clone, Copy)]
struct Segment {
    ipv6: bool,
    /// Start of the TCP header.
    l4: usize,
    /// Start of the payload.
    payload: usize,
    /// End of the IP packet.
    end: usize,
    seq: u32,
    flags: u8,
}

impl Segment {
    fn payload_len(&self) -> usize {
        self.end - self.payload
    }
}

/// Where the IP header's parts lie: (start of TCP, end of the packet, the addresses).
fn ip_layout(frame: &[u8]) -> Option<(bool, usize, usize, std::ops::Range<usize>)> {
    let l3 = ETHERNET_HEADER_LEN;
    let ethertype = frame.get(12..14)?;
    if ethertype == ETHERTYPE_IPV4 {
        let ip = frame.get(l3..l3 + ipv4::HEADER_LEN)?;
        let ihl = usize::from(ip[ipv4::VER_IHL] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
        let frag = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff;
        let v4_tcp = ip[ipv4::VER_IHL] >> 4 == 4
            && ihl >= ipv4::HEADER_LEN
            && ip[ipv4::PROTOCOL] == proto::TCP;
        let (l4, end) = (l3 + ihl, l3 + total);
        if !v4_tcp || frag != 0 || end > frame.len() || total < ihl {
            return None;
        }
        let addresses = l3 + ipv4::ADDRESSES.start..l3 + ipv4::ADDRESSES.end;
        Some((false, l4, end, addresses))
    } else if ethertype == ETHERTYPE_IPV6 {
        // Without extension headers: TCP right behind the fixed header.
        let ip = frame.get(l3..l3 + ipv6::HEADER_LEN)?;
        let payload = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
        let (l4, end) = (l3 + ipv6::HEADER_LEN, l3 + ipv6::HEADER_LEN + payload);
        if ip[0] >> 4 != 6 || ip[ipv6::NXT_HDR] != proto::TCP || end > frame.len() {
            return None;
        }
        let addresses = l3 + ipv6::ADDRESSES.start..l3 + ipv6::ADDRESSES.end;
        Some((true, l4, end, addresses))
    } else {
        None
    }
}

/// Finds the parts of `frame` if it is a segment GRO may join, with a correct checksum.
fn segment(frame: &[u8]) -> Option<Segment> {
    let (ipv6, l4, end, addresses) = ip_layout(frame)?;
    let thl = usize::from(*frame.get(l4 + tcp::DATA_OFF)? >> 4) * 4;
    let payload = l4 + thl;
    if thl < tcp::HEADER_LEN || payload >= end {
        return None;
    }
    let flags = frame[l4 + tcp::FLAGS];
    if flags & !JOINABLE_FLAGS != 0 {
        return None;
    }
    let sum = sum_bytes(
        pseudo_header(&frame[addresses], proto::TCP, end - l4),
        &frame[l4..end],
    );
    if fold(sum) != 0xffff {
        return None;
    }
    let s = &frame[l4 + tcp::SEQ_NUM.start..l4 + tcp::SEQ_NUM.end];
    Some(Segment {
        ipv6,
        l4,
        payload,
        end,
        seq: u32::from_be_bytes([s[0], s[1], s[2], s[3]]),
        flags,
    })
}

/// Whether `b`'s headers are `a`'s but for the fields that differ per segment.
fn same_headers(a: &[u8], sa: &Segment, b: &[u8], sb: &Segment) -> bool {
    let l3 = ETHERNET_HEADER_LEN;
    if sa.ipv6 != sb.ipv6 || sa.l4 != sb.l4 || sa.payload != sb.payload {
        return false;
    }
    let (l4, payload) = (sa.l4, sa.payload);
    let same = |r: std::ops::Range<usize>| a[r.clone()] == b[r];
    let ip = if sa.ipv6 {
        // Ethernet header, version/class/flow label; next header, hop limit, addresses.
        same(0..l3 + ipv6::LENGTH.start) && same(l3 + ipv6::NXT_HDR..l4)
    } else {
        // Ethernet header, version/IHL/TOS, flags/TTL/protocol, addresses and IP options.
        same(0..l3 + ipv4::LENGTH.start)
            && same(l3 + ipv4::FLG_OFF.start..l3 + ipv4::CHECKSUM.start)
            && same(l3 + ipv4::ADDRESSES.start..l4)
    };
    ip
        // Ports; acknowledgement, data offset; window, urgent pointer, options.
        && same(l4..l4 + tcp::SEQ_NUM.start)
        && same(l4 + tcp::SEQ_NUM.end..l4 + tcp::FLAGS)
        && same(l4 + tcp::FLAGS + 1..l4 + tcp::CHECKSUM.start)
        && same(l4 + tcp::CHECKSUM.end..payload)
}

/// Joins the longest run of leading `frames` that GRO may join into one GSO frame in `out`:
/// returns its virtio-net header, how many frames it took (at least two) and its length; `None`
/// if the first two don't join (hand the first on as it is).
pub fn join(frames: &[&[u8]], out: &mut [u8]) -> Option<(VnetHeader, usize, usize)> {
    let first = frames.first()?;
    let s0 = segment(first)?;
    let size = s0.payload_len();
    // Each segment is parsed (and its checksum summed) once: its payload goes into `out` as
    // soon as it joins. The first goes in whole, at the cost of one wasted copy if none joins.
    if s0.end > out.len() {
        return None;
    }
    out[..s0.end].copy_from_slice(&first[..s0.end]);
    let mut taken = 1;
    let mut last = s0;
    let mut at = s0.end;
    for frame in &frames[1..] {
        let Some(s) = segment(frame) else { break };
        let fits = at + s.payload_len() <= out.len()
            && at + s.payload_len() - ETHERNET_HEADER_LEN <= usize::from(u16::MAX);
        let joinable = last.flags & tcp::PSH == 0
            && last.payload_len() == size
            && s.payload_len() <= size
            && s.seq == last.seq.wrapping_add(last.payload_len() as u32)
            && same_headers(first, &s0, frame, &s);
        if !fits || !joinable {
            break;
        }
        out[at..at + s.payload_len()].copy_from_slice(&frame[s.payload..s.end]);
        at += s.payload_len();
        last = s;
        taken += 1;
    }
    if taken < 2 {
        return None;
    }
    let l3 = ETHERNET_HEADER_LEN;
    let l4 = s0.l4;
    let addresses = if s0.ipv6 {
        let len = (at - l4) as u16;
        out[l3 + ipv6::LENGTH.start..l3 + ipv6::LENGTH.end].copy_from_slice(&len.to_be_bytes());
        l3 + ipv6::ADDRESSES.start..l3 + ipv6::ADDRESSES.end
    } else {
        let len = (at - l3) as u16;
        out[l3 + ipv4::LENGTH.start..l3 + ipv4::LENGTH.end].copy_from_slice(&len.to_be_bytes());
        out[l3 + ipv4::CHECKSUM.start..l3 + ipv4::CHECKSUM.end].fill(0);
        let ip_sum = crate::checksum::of(&out[l3..l4]);
        out[l3 + ipv4::CHECKSUM.start..l3 + ipv4::CHECKSUM.end]
            .copy_from_slice(&ip_sum.to_be_bytes());
        l3 + ipv4::ADDRESSES.start..l3 + ipv4::ADDRESSES.end
    };
    out[l4 + tcp::FLAGS] |= last.flags & tcp::PSH;
    // A partial checksum: the pseudo-header's sum, for the receiver's offload to finish.
    let partial = fold(pseudo_header(&out[addresses], proto::TCP, at - l4));
    out[l4 + tcp::CHECKSUM.start..l4 + tcp::CHECKSUM.end].copy_from_slice(&partial.to_be_bytes());
    let vnet = VnetHeader {
        flags: F_NEEDS_CSUM,
        gso_type: if s0.ipv6 { gso::TCPV6 } else { gso::TCPV4 },
        hdr_len: s0.payload as u16,
        gso_size: size as u16,
        csum_start: l4 as u16,
        csum_offset: tcp::CHECKSUM.start as u16,
    };
    Some((vnet, taken, at))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gso::GsoFrame;
    use crate::vnet::complete_checksum;

    /// A 64 KiB IPv4 TCP GSO frame as a sender hands it over (payload bytes all different).
    fn gso_frame(payload: usize, flags: u8) -> (Vec<u8>, VnetHeader) {
        let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00];
        f.extend_from_slice(&[0x45, 0]);
        f.extend_from_slice(&((20 + 32 + payload) as u16).to_be_bytes());
        f.extend_from_slice(&[0x12, 0x34, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
        f.extend_from_slice(&[0x30, 0x39, 0x00, 0x50]);
        f.extend_from_slice(&0xffff_f000u32.to_be_bytes());
        f.extend_from_slice(&7u32.to_be_bytes());
        f.extend_from_slice(&[0x80, flags, 0xff, 0xff, 0, 0, 0, 0]);
        f.extend_from_slice(&[1, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 3]); // NOP NOP timestamps
        f.extend((0..payload).map(|i| (i * 7 % 251) as u8));
        let vnet = VnetHeader {
            flags: F_NEEDS_CSUM,
            gso_type: gso::TCPV4,
            hdr_len: 66,
            gso_size: 1398,
            csum_start: 34,
            csum_offset: 16,
        };
        (f, vnet)
    }

    fn segments(frame: &[u8], vnet: &VnetHeader) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        GsoFrame::parse(frame, vnet)
            .expect("gso")
            .segment(None, &mut Vec::new(), |s| out.push(s.to_vec()));
        out
    }

    /// The payload of an IPv4 TCP frame with 32 bytes of TCP header.
    fn payload(frame: &[u8]) -> &[u8] {
        &frame[66..]
    }

    #[test]
    fn segments_join_back_into_the_frame_they_were_cut_from() {
        let (frame, vnet) = gso_frame(60_000, 0x18); // ACK PSH
        let segs = segments(&frame, &vnet);
        let refs: Vec<&[u8]> = segs.iter().map(Vec::as_slice).collect();
        let mut out = vec![0u8; 70_000];
        let (h, taken, len) = join(&refs, &mut out).expect("joins");
        assert_eq!(taken, segs.len());
        assert_eq!(len, frame.len());
        assert_eq!(payload(&out[..len]), payload(&frame));
        assert_eq!((h.gso_size, h.hdr_len, h.gso_type), (1398, 66, gso::TCPV4));
        // The headers are the first segment's, PSH from the last; the IP header checksums.
        assert_eq!(out[47], 0x18);
        assert_eq!(crate::checksum::of(&out[14..34]), 0);
        // Finishing the partial checksum gives a correct one.
        let mut done = out[..len].to_vec();
        assert!(complete_checksum(&mut done, &h));
        assert!(segment(&done).is_some(), "checksum wrong once finished");
        // And cut again, it gives the same segments.
        assert_eq!(segments(&out[..len], &h), segs);
    }

    #[test]
    fn ipv6_segments_join_back_too() {
        let (v4, _) = gso_frame(20_000, 0x10);
        // The same TCP segment behind an IPv6 header.
        let mut f = v4[..12].to_vec();
        f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
        f.extend_from_slice(&((v4.len() - 34) as u16).to_be_bytes());
        f.extend_from_slice(&[6, 64]);
        f.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        f.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        f.extend_from_slice(&v4[34..]);
        let vnet = VnetHeader {
            flags: F_NEEDS_CSUM,
            gso_type: gso::TCPV6,
            hdr_len: 86,
            gso_size: 1378,
            csum_start: 54,
            csum_offset: 16,
        };
        let segs = segments(&f, &vnet);
        let refs: Vec<&[u8]> = segs.iter().map(Vec::as_slice).collect();
        let mut out = vec![0u8; 70_000];
        let (h, taken, len) = join(&refs, &mut out).expect("joins");
        assert_eq!((taken, len), (segs.len(), f.len()));
        assert_eq!(&out[86..len], &f[86..]);
        assert_eq!(
            (h.gso_type, h.gso_size, h.csum_start),
            (gso::TCPV6, 1378, 54)
        );
        let mut done = out[..len].to_vec();
        assert!(complete_checksum(&mut done, &h));
        assert!(segment(&done).is_some(), "checksum wrong once finished");
        assert_eq!(segments(&out[..len], &h), segs);
    }

    #[test]
    fn only_what_the_kernel_would_join_is_joined() {
        let (frame, vnet) = gso_frame(5 * 1398, 0x10);
        let segs = segments(&frame, &vnet);
        let mut out = vec![0u8; 70_000];
        let join_of = |segs: &[Vec<u8>], out: &mut [u8]| {
            let refs: Vec<&[u8]> = segs.iter().map(Vec::as_slice).collect();
            join(&refs, out).map(|(_, taken, _)| taken)
        };
        assert_eq!(join_of(&segs, &mut out), Some(5));
        // A gap in the sequence ends the run.
        let gap = [segs[0].clone(), segs[1].clone(), segs[3].clone()];
        assert_eq!(join_of(&gap, &mut out), Some(2));
        // A damaged segment is not joined (it goes on alone, for its receiver to drop).
        let mut damaged = segs.clone();
        damaged[2][100] ^= 1;
        assert_eq!(join_of(&damaged, &mut out), Some(2));
        damaged[0][100] ^= 1;
        assert_eq!(join_of(&damaged, &mut out), None);
        // Another flow, or a FIN, is not joined.
        let mut other = segs.clone();
        other[1][35] ^= 1; // source port
        other[1][50..52].fill(0);
        let sum = pseudo_header(&other[1][26..34], proto::TCP, other[1].len() - 34);
        let sum = !fold(sum_bytes(sum, &other[1][34..]));
        other[1][50..52].copy_from_slice(&sum.to_be_bytes());
        assert!(segment(&other[1]).is_some());
        assert_eq!(join_of(&other, &mut out), None);
        // FIN stays on the last segment, which is not joined.
        let (fin, vnet) = gso_frame(3 * 1398, 0x11);
        assert_eq!(join_of(&segments(&fin, &vnet), &mut out), Some(2));
        // Nothing beyond the room in `out`.
        assert_eq!(join_of(&segs, &mut out[..66 + 3 * 1398]), Some(3));
    }
}
