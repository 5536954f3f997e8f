//! Software segmentation: cutting a GSO frame (one 64 KiB TCP segment, or a train of UDP
//! datagrams, behind a virtio-net header) into frames the wire can carry, each with complete
//! IP and L4 checksums.
//!
//! The switch moves GSO frames whole between ports that take them (TAPs with offloads, packet
//! sockets): that is what makes it fast. This is the fallback for an egress port that can't: one
//! without virtio-net headers (a TAP opened without offloads, an in-memory port), or one whose MTU
//! is smaller than the segments the sender cut for ([`tcp_mss_for_mtu`] then re-cuts TCP to fit;
//! UDP datagrams can't be re-cut).
//!
//! It does what the kernel's `tcp_gso_segment` / `__udp_gso_segment` do: copy the headers to
//! each segment, fix the IP lengths (and IPv4 identification and header checksum), advance the
//! TCP sequence number, keep FIN and PSH for the last segment and CWR for the first, and compute
//! each segment's L4 checksum over its pseudo-header.

use crate::checksum::{fold, pseudo_header, sum_bytes};
use crate::field::{ipv4, ipv6, proto, tcp, udp};
use crate::vnet::{VnetHeader, gso};
use crate::wire::{ETHERNET_HEADER_LEN, ETHERTYPE_QINQ, ETHERTYPE_VLAN, VLAN_TAG_LEN};

/// Why a GSO frame could not be segmented (the switch drops it and counts `gso_unsupp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GsoError {
    /// A `gso_type` software segmentation doesn't handle (legacy UDP fragmentation offload).
    #[error("GSO type {0:#x} is not supported")]
    Unsupported(u8),
    /// The headers don't describe the frame (wrong protocol, lengths out of range, zero size).
    #[error("malformed GSO frame: {0}")]
    Malformed(&'static str),
}

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;

/// Where the headers of a GSO frame are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Layout {
    /// Start of the IP header.
    l3: usize,
    /// Start of the TCP or UDP header.
    l4: usize,
    /// End of the headers: where payload starts.
    payload: usize,
    /// End of the IP packet (trailing padding excluded).
    end: usize,
    ipv4: bool,
    tcp: bool,
}

fn u16_at(b: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([b[i], b[i + 1]])
}

fn put_u16(b: &mut [u8], i: usize, v: u16) {
    b[i..i + 2].copy_from_slice(&v.to_be_bytes());
}

impl Layout {
    /// The size of the IP packets a frame laid out so is cut into at `gso_size`.
    pub(crate) fn segment_len(&self, gso_size: u16) -> usize {
        self.payload - self.l3 + usize::from(gso_size)
    }
}

/// Finds the headers of the GSO frame `frame` described by `vnet`, checking that they agree.
pub(crate) fn layout(frame: &[u8], vnet: &VnetHeader) -> Result<Layout, GsoError> {
    let tcp = match vnet.gso_type & !gso::ECN {
        gso::TCPV4 | gso::TCPV6 => true,
        gso::UDP_L4 => false,
        other => return Err(GsoError::Unsupported(other)),
    };
    let malformed = GsoError::Malformed;
    let mut l3 = ETHERNET_HEADER_LEN;
    let mut ethertype = frame
        .get(12..14)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .ok_or(malformed("runt"))?;
    while matches!(ethertype, ETHERTYPE_VLAN | ETHERTYPE_QINQ) {
        ethertype = frame
            .get(l3 + 2..l3 + 4)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or(malformed("truncated VLAN tag"))?;
        l3 += VLAN_TAG_LEN;
    }
    let want = if tcp { proto::TCP } else { proto::UDP };
    let (l4, end, ipv4) = match ethertype {
        ETHERTYPE_IPV4 => {
            let ip = frame
                .get(l3..l3 + ipv4::HEADER_LEN)
                .ok_or(malformed("truncated IPv4"))?;
            let ihl = usize::from(ip[ipv4::VER_IHL] & 0x0f) * 4;
            if ip[ipv4::VER_IHL] >> 4 != 4 || ihl < ipv4::HEADER_LEN || ip[ipv4::PROTOCOL] != want {
                return Err(malformed("IPv4 header doesn't match the GSO type"));
            }
            if u16_at(ip, ipv4::FLG_OFF.start) & 0x3fff != 0 {
                return Err(malformed("IPv4 fragment"));
            }
            let end = l3 + usize::from(u16_at(ip, ipv4::LENGTH.start));
            if end > frame.len() {
                return Err(malformed("IPv4 length past the frame"));
            }
            (l3 + ihl, end, true)
        }
        ETHERTYPE_IPV6 => {
            let ip = frame
                .get(l3..l3 + ipv6::HEADER_LEN)
                .ok_or(malformed("truncated IPv6"))?;
            if ip[0] >> 4 != 6 {
                return Err(malformed("IPv6 version"));
            }
            // Extension headers: trust the checksum offload's start, as the kernel does.
            let l4 = if ip[ipv6::NXT_HDR] == want {
                l3 + ipv6::HEADER_LEN
            } else if vnet.needs_csum() && usize::from(vnet.csum_start) > l3 + ipv6::HEADER_LEN {
                usize::from(vnet.csum_start)
            } else {
                return Err(malformed("IPv6 header doesn't match the GSO type"));
            };
            let payload_len = usize::from(u16_at(ip, ipv6::LENGTH.start));
            let end = if payload_len == 0 {
                frame.len()
            } else {
                l3 + ipv6::HEADER_LEN + payload_len
            };
            if end > frame.len() {
                return Err(malformed("IPv6 length past the frame"));
            }
            (l4, end, false)
        }
        _ => return Err(malformed("not IP")),
    };
    let type_ip_matches = match vnet.gso_type & !gso::ECN {
        gso::TCPV4 => ipv4,
        gso::TCPV6 => !ipv4,
        _ => true,
    };
    if !type_ip_matches {
        return Err(malformed("TCP GSO type and IP version disagree"));
    }
    let l4_header = if tcp {
        let offset = *frame
            .get(l4 + tcp::DATA_OFF)
            .ok_or(malformed("truncated TCP"))?;
        usize::from(offset >> 4) * 4
    } else {
        udp::HEADER_LEN
    };
    let payload = l4 + l4_header;
    // A TCP header is at least 20 bytes (data offset 5): segmentation writes its sequence
    // number and checksum, and a shorter one would put them past the headers (found by fuzzing).
    if l4_header
        < if tcp {
            tcp::HEADER_LEN
        } else {
            udp::HEADER_LEN
        }
        || payload > end
    {
        return Err(malformed("L4 header past the packet"));
    }
    if vnet.gso_size == 0 {
        return Err(malformed("gso_size 0"));
    }
    Ok(Layout {
        l3,
        l4,
        payload,
        end,
        ipv4,
        tcp,
    })
}

/// A GSO frame whose headers were found and checked once: what the MTU check, the re-cut size
/// and the segmentation of one frame all need, without parsing it three times.
#[derive(Debug, Clone, Copy)]
pub struct GsoFrame<'a> {
    frame: &'a [u8],
    l: Layout,
    gso_size: u16,
}

impl<'a> GsoFrame<'a> {
    /// Finds the headers of the GSO frame `frame` (without its virtio-net header `vnet`).
    pub fn parse(frame: &'a [u8], vnet: &VnetHeader) -> Result<GsoFrame<'a>, GsoError> {
        Ok(GsoFrame {
            frame,
            l: layout(frame, vnet)?,
            gso_size: vnet.gso_size,
        })
    }

    /// `frame`, whose headers are laid out as `l` (found by [`layout`] before).
    pub(crate) fn laid_out(frame: &'a [u8], l: Layout, gso_size: u16) -> GsoFrame<'a> {
        GsoFrame { frame, l, gso_size }
    }

    /// The size of the IP packets it will be cut into: what an interface's MTU limits.
    pub fn segment_len(&self) -> usize {
        self.l.segment_len(self.gso_size)
    }

    /// The largest TCP payload per segment for which the segments fit an MTU of `mtu`, or
    /// `None` if it isn't TCP (UDP datagrams can't be re-cut) or even its headers don't fit.
    pub fn tcp_mss_for_mtu(&self, mtu: u32) -> Option<u16> {
        if !self.l.tcp {
            return None;
        }
        let room = (mtu as usize)
            .checked_sub(self.l.payload - self.l.l3)
            .filter(|&r| r > 0)?;
        u16::try_from(room.min(usize::from(self.gso_size))).ok()
    }

    /// Cuts the frame into segments of at most `max_payload` L4 payload bytes each (`None`: the
    /// sender's `gso_size`), and hands each finished frame, checksums complete, to `emit`.
    /// `scratch` holds one segment at a time; reusing it keeps the datapath free of
    /// allocations. Returns the number of segments.
    pub fn segment(
        &self,
        max_payload: Option<u16>,
        scratch: &mut Vec<u8>,
        emit: impl FnMut(&[u8]),
    ) -> usize {
        let mut emit = emit;
        let mss = self.mss(max_payload);
        scratch.clear();
        cut(self.frame, &self.l, mss, scratch, &[], |buf, start| {
            emit(&buf[start..]);
            buf.clear();
        })
    }

    /// [`GsoFrame::segment`] at the sender's `gso_size`, each segment appended to `out` behind
    /// `prefix` (a tunnel's header, say), so segments and headers lie back to back as one
    /// `UDP_SEGMENT` send takes them, with no copy between; `lens` gets each one's length with
    /// its prefix. Returns the number of segments.
    pub fn segment_into(&self, prefix: &[u8], out: &mut Vec<u8>, lens: &mut Vec<usize>) -> usize {
        let mss = self.mss(None);
        cut(self.frame, &self.l, mss, out, prefix, |buf, start| {
            lens.push(buf.len() - start + prefix.len());
        })
    }

    fn mss(&self, max_payload: Option<u16>) -> usize {
        let mss = max_payload.map_or(self.gso_size, |m| m.min(self.gso_size));
        // `layout` refused a zero `gso_size`; a zero limit is taken as one byte.
        usize::from(mss.max(1))
    }
}

/// Parses and cuts `frame` in one call: see [`GsoFrame::parse`] and [`GsoFrame::segment`].
pub fn segment(
    frame: &[u8],
    vnet: &VnetHeader,
    max_payload: Option<u16>,
    scratch: &mut Vec<u8>,
    emit: impl FnMut(&[u8]),
) -> Result<usize, GsoError> {
    Ok(GsoFrame::parse(frame, vnet)?.segment(max_payload, scratch, emit))
}

/// Cuts `frame`, laid out as `l`, into segments of `mss` payload bytes.
/// Each segment is appended to `out` behind `prefix`; `emit` gets `out` and where the segment
/// (after the prefix) starts, once it is complete.
fn cut(
    frame: &[u8],
    l: &Layout,
    mss: usize,
    out: &mut Vec<u8>,
    prefix: &[u8],
    mut emit: impl FnMut(&mut Vec<u8>, usize),
) -> usize {
    let headers = &frame[..l.payload];
    let data = &frame[l.payload..l.end];
    let count = data.len().div_ceil(mss).max(1);
    let ip_id = if l.ipv4 {
        u16_at(frame, l.l3 + ipv4::IDENT.start)
    } else {
        0
    };
    let seq = if l.tcp {
        let at = at(l.l4, tcp::SEQ_NUM);
        u32::from_be_bytes([
            frame[at.start],
            frame[at.start + 1],
            frame[at.start + 2],
            frame[at.start + 3],
        ])
    } else {
        0
    };
    for i in 0..count {
        let chunk = &data[(i * mss).min(data.len())..((i + 1) * mss).min(data.len())];
        out.extend_from_slice(prefix);
        let start = out.len();
        out.extend_from_slice(headers);
        out.extend_from_slice(chunk);
        let seg = &mut out[start..];
        let l4_len = seg.len() - l.l4;
        if l.ipv4 {
            let ihl = l.l4 - l.l3;
            put_u16(seg, l.l3 + ipv4::LENGTH.start, (seg.len() - l.l3) as u16);
            put_u16(seg, l.l3 + ipv4::IDENT.start, ip_id.wrapping_add(i as u16));
            put_u16(seg, l.l3 + ipv4::CHECKSUM.start, 0);
            let sum = crate::checksum::of(&seg[l.l3..l.l3 + ihl]);
            put_u16(seg, l.l3 + ipv4::CHECKSUM.start, sum);
        } else {
            let len = seg.len() - l.l3 - ipv6::HEADER_LEN;
            put_u16(seg, l.l3 + ipv6::LENGTH.start, len as u16);
        }
        let field = if l.tcp {
            let first = i == 0;
            let last = i + 1 == count;
            let s = seq.wrapping_add((i * mss) as u32);
            seg[at(l.l4, tcp::SEQ_NUM)].copy_from_slice(&s.to_be_bytes());
            let mut flags = seg[l.l4 + tcp::FLAGS];
            if !last {
                flags &= !(tcp::FIN | tcp::PSH);
            }
            if !first {
                flags &= !tcp::CWR;
            }
            seg[l.l4 + tcp::FLAGS] = flags;
            l.l4 + tcp::CHECKSUM.start
        } else {
            put_u16(seg, l.l4 + udp::LENGTH.start, l4_len as u16);
            l.l4 + udp::CHECKSUM.start
        };
        put_u16(seg, field, 0);
        let pseudo = pseudo_header_sum(seg, l, l4_len);
        let sum = !fold(sum_bytes(pseudo, &seg[l.l4..]));
        // UDP sends a computed zero as all ones (zero means "no checksum").
        let sum = if sum == 0 && !l.tcp { 0xffff } else { sum };
        put_u16(seg, field, sum);
        emit(out, start);
    }
    count
}

/// The one's complement sum of the pseudo-header of the segment `seg` laid out as `l`.
fn pseudo_header_sum(seg: &[u8], l: &Layout, l4_len: usize) -> u64 {
    let protocol = if l.tcp { proto::TCP } else { proto::UDP };
    let addresses = if l.ipv4 {
        at(l.l3, ipv4::ADDRESSES)
    } else {
        at(l.l3, ipv6::ADDRESSES)
    };
    pseudo_header(&seg[addresses], protocol, l4_len)
}

/// Field `field` of a header that starts at `base`.
fn at(base: usize, field: crate::field::Field) -> std::ops::Range<usize> {
    base + field.start..base + field.end
}

/// Whether `frame` may leave through an interface with MTU `mtu`: its payload (after the header
/// and one VLAN tag) must fit, as in the kernel's `is_skb_forwardable`; for a GSO frame, each
/// segment it will be cut into must fit (and its headers must make sense). Runts never fit.
pub fn fits_mtu(frame: &[u8], vnet: &VnetHeader, mtu: u32) -> bool {
    crate::view::FrameView::new(frame, *vnet).is_ok_and(|v| v.fits_mtu(mtu))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::field::proto::{TCP as PROTO_TCP, UDP as PROTO_UDP};
    use crate::field::tcp::{CWR as TCP_CWR, FIN as TCP_FIN, PSH as TCP_PSH};
    use crate::testing::{KERNEL_TSO4, tcp4_frame};
    use crate::vnet::F_NEEDS_CSUM;
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};

    const PAYLOAD: usize = 10_000;

    fn payload() -> Vec<u8> {
        (0..PAYLOAD).map(|i| (i * 7 % 251) as u8).collect()
    }

    /// A GSO frame as a sender's kernel hands it over: headers for the whole payload, the L4
    /// checksum left partial (garbage here: segmentation must not depend on it).
    fn gso_frame(ipv6: bool, tcp: bool, tcp_flags: u8) -> (Vec<u8>, VnetHeader) {
        let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1];
        let l4_header = if tcp { 20 } else { 8 };
        let l4_len = l4_header + PAYLOAD;
        let proto = if tcp { PROTO_TCP } else { PROTO_UDP };
        if ipv6 {
            f.extend_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
            f.extend_from_slice(&[0x60, 0, 0, 0]);
            f.extend_from_slice(&(l4_len as u16).to_be_bytes());
            f.extend_from_slice(&[proto, 64]);
            f.extend_from_slice(&[0xfd, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
            f.extend_from_slice(&[0xfd, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        } else {
            f.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
            f.extend_from_slice(&[0x45, 0]);
            f.extend_from_slice(&((20 + l4_len) as u16).to_be_bytes());
            f.extend_from_slice(&[0x12, 0x34, 0x40, 0, 64, proto, 0xde, 0xad]);
            f.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
        }
        let l4 = f.len();
        if tcp {
            f.extend_from_slice(&[0x30, 0x39, 0x00, 0x50]); // ports 12345 -> 80
            f.extend_from_slice(&0xffff_f000u32.to_be_bytes()); // seq, wraps
            f.extend_from_slice(&7u32.to_be_bytes()); // ack
            f.extend_from_slice(&[0x50, tcp_flags, 0xff, 0xff, 0xbe, 0xef, 0, 0]);
        } else {
            f.extend_from_slice(&[0x30, 0x39, 0x00, 0x35]);
            f.extend_from_slice(&(l4_len as u16).to_be_bytes());
            f.extend_from_slice(&[0xbe, 0xef]);
        }
        f.extend_from_slice(&payload());
        let gso_type = match (ipv6, tcp) {
            (false, true) => gso::TCPV4,
            (true, true) => gso::TCPV6,
            (_, false) => gso::UDP_L4,
        };
        let vnet = VnetHeader {
            flags: F_NEEDS_CSUM,
            gso_type,
            hdr_len: (l4 + l4_header) as u16,
            gso_size: 1400,
            csum_start: l4 as u16,
            csum_offset: if tcp { 16 } else { 6 },
        };
        (f, vnet)
    }

    /// Checks every checksum of a segment independently of the code under test, and returns
    /// (IPv4 id, TCP seq, TCP flags, payload).
    fn verify(seg: &[u8]) -> (u16, u32, u8, Vec<u8>) {
        let p = SlicedPacket::from_ethernet(seg).expect("segment parses");
        let (l4_len, pseudo, id) = match p.net.as_ref().unwrap() {
            NetSlice::Ipv4(ip) => {
                let h = ip.header();
                assert_eq!(usize::from(h.total_len()), seg.len() - 14);
                assert_eq!(h.to_header().calc_header_checksum(), h.header_checksum());
                let len = seg.len() - 14 - 20;
                let pseudo = sum_bytes(u64::from(h.protocol().0) + len as u64, &seg[26..34]);
                (len, pseudo, h.identification())
            }
            NetSlice::Ipv6(ip) => {
                let h = ip.header();
                assert_eq!(usize::from(h.payload_length()), seg.len() - 14 - 40);
                let len = seg.len() - 54;
                let pseudo = sum_bytes(u64::from(h.next_header().0) + len as u64, &seg[22..54]);
                (len, pseudo, 0)
            }
            _ => panic!("not IP"),
        };
        let l4 = &seg[seg.len() - l4_len..];
        assert_eq!(fold(sum_bytes(pseudo, l4)), 0xffff, "L4 checksum");
        match p.transport.as_ref().unwrap() {
            TransportSlice::Tcp(t) => (id, t.sequence_number(), l4[13], t.payload().to_vec()),
            TransportSlice::Udp(u) => {
                assert_eq!(usize::from(u.length()), l4_len);
                (id, 0, 0, u.payload().to_vec())
            }
            _ => panic!("not TCP/UDP"),
        }
    }

    fn cut(frame: &[u8], vnet: &VnetHeader, max: Option<u16>) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut scratch = Vec::new();
        let n = segment(frame, vnet, max, &mut scratch, |s| out.push(s.to_vec())).unwrap();
        assert_eq!(n, out.len());
        out
    }

    #[test]
    fn tcp_segments_carry_the_payload_in_order_with_valid_checksums() {
        for ipv6 in [false, true] {
            let (frame, vnet) = gso_frame(ipv6, true, 0x80 | 0x18 | 0x01); // CWR PSH ACK FIN
            let segs = cut(&frame, &vnet, None);
            assert_eq!(segs.len(), PAYLOAD.div_ceil(1400));
            let mut data = Vec::new();
            for (i, seg) in segs.iter().enumerate() {
                let (id, seq, flags, chunk) = verify(seg);
                assert!(chunk.len() <= 1400);
                assert_eq!(seq, 0xffff_f000u32.wrapping_add(data.len() as u32));
                if !ipv6 {
                    assert_eq!(id, 0x1234 + i as u16);
                }
                let first = i == 0;
                let last = i + 1 == segs.len();
                assert_eq!(flags & TCP_CWR != 0, first, "CWR on the first only");
                assert_eq!(
                    flags & (TCP_FIN | TCP_PSH) != 0,
                    last,
                    "FIN/PSH on the last"
                );
                assert!(flags & 0x10 != 0, "ACK on all");
                data.extend_from_slice(&chunk);
            }
            assert_eq!(data, payload());
        }
    }

    #[test]
    fn a_tcp_header_shorter_than_20_bytes_is_malformed() {
        // Found by fuzzing: data offset 2 (8 bytes) with the frame ending there; cutting it
        // wrote the checksum past the end.
        for offset in 0..5u8 {
            let (mut frame, vnet) = gso_frame(false, true, 0x10);
            frame[34 + 12] = offset << 4;
            frame.truncate(34 + usize::from(offset) * 4);
            let total = (frame.len() - 14) as u16;
            frame[16..18].copy_from_slice(&total.to_be_bytes());
            assert!(matches!(
                GsoFrame::parse(&frame, &vnet),
                Err(GsoError::Malformed(_))
            ));
        }
    }

    #[test]
    fn segments_laid_back_to_back_behind_a_prefix_are_the_same_segments() {
        for (ipv6, tcp) in [(false, true), (true, true), (false, false)] {
            let (frame, vnet) = gso_frame(ipv6, tcp, 0x10);
            let g = GsoFrame::parse(&frame, &vnet).unwrap();
            let (mut out, mut lens) = (b"old".to_vec(), Vec::new());
            let n = g.segment_into(b"VXLANHDR", &mut out, &mut lens);
            let mut expected = b"old".to_vec();
            for seg in cut(&frame, &vnet, None) {
                expected.extend_from_slice(b"VXLANHDR");
                expected.extend_from_slice(&seg);
            }
            assert_eq!(lens.iter().sum::<usize>() + 3, expected.len());
            assert_eq!((n, out), (lens.len(), expected));
        }
    }

    #[test]
    fn udp_segments_are_datagrams_of_their_own() {
        for ipv6 in [false, true] {
            let (frame, vnet) = gso_frame(ipv6, false, 0);
            let segs = cut(&frame, &vnet, None);
            let data: Vec<u8> = segs.iter().flat_map(|s| verify(s).3).collect();
            assert_eq!(data, payload());
        }
    }

    #[test]
    fn a_smaller_limit_recuts_tcp() {
        let (frame, vnet) = gso_frame(false, true, 0x10);
        let segs = cut(&frame, &vnet, Some(1000));
        assert_eq!(segs.len(), PAYLOAD.div_ceil(1000));
        assert!(segs.iter().all(|s| s.len() <= 14 + 20 + 20 + 1000));
        let data: Vec<u8> = segs.iter().flat_map(|s| verify(s).3).collect();
        assert_eq!(data, payload());
    }

    #[test]
    fn mss_for_an_mtu_counts_ip_and_tcp_headers() {
        let tcp_mss_for_mtu = |frame: &[u8], vnet: &VnetHeader, mtu| {
            GsoFrame::parse(frame, vnet).unwrap().tcp_mss_for_mtu(mtu)
        };
        let (frame, vnet) = gso_frame(false, true, 0x10);
        assert_eq!(tcp_mss_for_mtu(&frame, &vnet, 1500), Some(1400));
        assert_eq!(tcp_mss_for_mtu(&frame, &vnet, 1280), Some(1240));
        assert_eq!(tcp_mss_for_mtu(&frame, &vnet, 40), None);
        let (frame6, vnet6) = gso_frame(true, true, 0x10);
        assert_eq!(tcp_mss_for_mtu(&frame6, &vnet6, 1280), Some(1220));
        let (udp, udp_vnet) = gso_frame(false, false, 0);
        assert_eq!(tcp_mss_for_mtu(&udp, &udp_vnet, 1500), None);
        assert_eq!(GsoFrame::parse(&frame, &vnet).unwrap().segment_len(), 1440);
    }

    #[test]
    fn rejects_what_it_cannot_cut() {
        let (frame, vnet) = gso_frame(false, true, 0x10);
        let mut scratch = Vec::new();
        let mut run = |f: &[u8], v: &VnetHeader| segment(f, v, None, &mut scratch, |_| {});
        let ufo = VnetHeader {
            gso_type: gso::UDP,
            ..vnet
        };
        assert_eq!(run(&frame, &ufo), Err(GsoError::Unsupported(gso::UDP)));
        let as_v6 = VnetHeader {
            gso_type: gso::TCPV6,
            ..vnet
        };
        assert!(matches!(run(&frame, &as_v6), Err(GsoError::Malformed(_))));
        let zero = VnetHeader {
            gso_size: 0,
            ..vnet
        };
        assert!(matches!(run(&frame, &zero), Err(GsoError::Malformed(_))));
        for len in [0, 13, 20, 40, 60] {
            assert!(run(&frame[..len], &vnet).is_err(), "truncated to {len}");
        }
    }

    #[test]
    fn sums_match_the_16_bit_definition() {
        let bytes: Vec<u8> = (0..=255u8).cycle().take(1001).collect();
        let mut reference: u64 = 0;
        for pair in bytes.chunks(2) {
            reference += u64::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
        }
        assert_eq!(fold(sum_bytes(0, &bytes)), fold(reference));
    }

    #[test]
    fn plain_frames_fit_by_payload_ignoring_header_and_tag() {
        let none = VnetHeader::default();
        let mut frame = vec![0u8; 14 + 1500];
        assert!(fits_mtu(&frame, &none, 1500));
        assert!(!fits_mtu(&frame, &none, 1499));
        frame[12..14].copy_from_slice(&crate::wire::ETHERTYPE_VLAN.to_be_bytes());
        assert!(fits_mtu(&frame, &none, 1496) && !fits_mtu(&frame, &none, 1495));
        // A QinQ service tag rides beyond the MTU too (one tag, as the kernel allows).
        frame[12..14].copy_from_slice(&crate::wire::ETHERTYPE_QINQ.to_be_bytes());
        assert!(fits_mtu(&frame, &none, 1496) && !fits_mtu(&frame, &none, 1495));
        assert!(!fits_mtu(&frame[..10], &none, 9000));
    }

    #[test]
    fn gso_frames_fit_when_their_segments_do() {
        let frame = tcp4_frame(64_000);
        let mut h = VnetHeader::parse(&KERNEL_TSO4).unwrap();
        // segment = 20 (IP) + 32 (TCP) + 1448 = 1500
        assert!(fits_mtu(&frame, &h, 1500));
        assert!(!fits_mtu(&frame, &h, 1499));
        h.gso_size = 8948;
        assert!(fits_mtu(&frame, &h, 9000) && !fits_mtu(&frame, &h, 1500));
        let plain = VnetHeader::default();
        assert!(
            !fits_mtu(&frame, &plain, 9000),
            "a non-GSO 64 KB frame never fits"
        );
    }
}
