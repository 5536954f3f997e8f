//! The virtio-net header (`struct virtio_net_hdr`) that travels in front of each frame on TAPs
//! opened with `IFF_VNET_HDR` and packet sockets with `PACKET_VNET_HDR`.
//!
//! It is what lets a 64 KiB TCP segment with a partial checksum cross the switch untouched:
//! `gso_type`/`gso_size` say how the kernel will cut it, `csum_start`/`csum_offset` where the
//! checksum still has to be finished. When a frame goes to a port without offloads, the switch
//! finishes the checksum itself ([`complete_checksum`]) and cuts GSO frames ([`crate::gso`]).
//! This module knows nothing of segmentation: `gso` reads its header, not the other way round.
//!
//! Fields are little-endian: TAPs use the host's byte order unless told otherwise, and vswitch
//! runs on little-endian hosts (x86-64, arm64).

use crate::checksum::{fold, sum_bytes};
use crate::wire::ETHERNET_HEADER_LEN;

/// Length of `struct virtio_net_hdr`.
pub const VNET_HDR_LEN: usize = 10;

/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the checksum at `csum_start + csum_offset` is partial.
pub const F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_F_DATA_VALID`: the checksum was verified already.
pub const F_DATA_VALID: u8 = 2;

/// `VIRTIO_NET_HDR_GSO_*` values of `gso_type` (the ECN bit, 0x80, may be or-ed in).
pub mod gso {
    /// Not a GSO frame.
    pub const NONE: u8 = 0;
    /// TCP over IPv4.
    pub const TCPV4: u8 = 1;
    /// UDP fragmentation offload (legacy).
    pub const UDP: u8 = 3;
    /// TCP over IPv6.
    pub const TCPV6: u8 = 4;
    /// UDP segmentation (USO).
    pub const UDP_L4: u8 = 5;
    /// ECN flag.
    pub const ECN: u8 = 0x80;
}

/// A parsed virtio-net header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VnetHeader {
    /// `F_NEEDS_CSUM`, `F_DATA_VALID`.
    pub flags: u8,
    /// One of [`gso`].
    pub gso_type: u8,
    /// Length of the headers to copy into each segment.
    pub hdr_len: u16,
    /// Payload bytes per segment.
    pub gso_size: u16,
    /// Where checksumming starts, from the start of the Ethernet frame.
    pub csum_start: u16,
    /// Where the checksum is stored, from `csum_start`.
    pub csum_offset: u16,
}

impl VnetHeader {
    /// Reads a header from the first [`VNET_HDR_LEN`] bytes of `bytes`.
    pub fn parse(bytes: &[u8]) -> Option<VnetHeader> {
        let b = bytes.get(..VNET_HDR_LEN)?;
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Some(VnetHeader {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16_at(2),
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
        })
    }

    /// Writes the header into the first [`VNET_HDR_LEN`] bytes of `out`.
    pub fn emit(&self, out: &mut [u8; VNET_HDR_LEN]) {
        out[0] = self.flags;
        out[1] = self.gso_type;
        out[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        out[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        out[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        out[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
    }

    /// A segmentation-offload frame: larger than one packet on the wire.
    pub fn is_gso(&self) -> bool {
        self.gso_type & !gso::ECN != gso::NONE
    }

    /// The checksum still has to be finished.
    pub fn needs_csum(&self) -> bool {
        self.flags & F_NEEDS_CSUM != 0
    }
}

/// Finishes a partial checksum in place: the one's complement sum of `frame[csum_start..]`
/// (which already holds the pseudo-header sum in the checksum field) is stored at
/// `csum_start + csum_offset`. Returns false, leaving the frame alone, if the offsets are out of
/// range.
pub fn complete_checksum(frame: &mut [u8], vnet: &VnetHeader) -> bool {
    let start = usize::from(vnet.csum_start);
    let field = start + usize::from(vnet.csum_offset);
    if start < ETHERNET_HEADER_LEN || field + 2 > frame.len() {
        return false;
    }
    let folded = !fold(sum_bytes(0, &frame[start..]));
    // UDP transmits a computed zero as all ones; for TCP both mean the same sum.
    let value = if folded == 0 { 0xffff } else { folded };
    frame[field..field + 2].copy_from_slice(&value.to_be_bytes());
    true
}

/// The virtio-net header that makes an untagged IPv4 TCP `frame` longer than the link's `mtu`
/// (as a tunnel delivers one the sender's kernel never cut: a local underlay keeps GSO whole) a
/// GSO frame of segments that fit `mtu`, with a partial checksum; `None` for anything else.
pub fn tcp_gso_header(frame: &[u8], mtu: u32) -> Option<VnetHeader> {
    let ip = ETHERNET_HEADER_LEN;
    if frame.len() <= ip + mtu as usize || frame.get(12..14)? != [0x08, 0x00] {
        return None;
    }
    let ihl = usize::from(frame.get(ip)? & 0x0f) * 4;
    if frame[ip] >> 4 != 4 || ihl < 20 || frame.get(ip + 9)? != &6 {
        return None;
    }
    let thl = usize::from(frame.get(ip + ihl + 12)? >> 4) * 4;
    let headers = ihl + thl;
    if thl < 20 || headers >= mtu as usize {
        return None;
    }
    Some(VnetHeader {
        flags: F_NEEDS_CSUM,
        gso_type: gso::TCPV4,
        hdr_len: (ip + headers) as u16,
        gso_size: (mtu as usize - headers) as u16,
        csum_start: (ip + ihl) as u16,
        csum_offset: 16,
    })
}

/// Finishes the TCP or UDP checksum of an untagged IPv4 `frame` if it was left partial (the
/// field holds only the pseudo-header sum, as a sender's stack leaves it for offload, and as it
/// arrives when the frame crossed a local tunnel without ever meeting a NIC). A complete
/// checksum, and a wrong one that isn't a partial sum (damage), are left alone, so a receiver
/// still catches damage. Returns true if it finished one.
pub fn finish_partial_checksum(frame: &mut [u8]) -> bool {
    if frame.len() < ETHERNET_HEADER_LEN + 20 || frame[12..14] != [0x08, 0x00] {
        return false;
    }
    let ip = ETHERNET_HEADER_LEN;
    let ihl = usize::from(frame[ip] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([frame[ip + 2], frame[ip + 3]]));
    let fragment = u16::from_be_bytes([frame[ip + 6], frame[ip + 7]]) & 0x3fff != 0;
    let proto = frame[ip + 9];
    let field = match proto {
        6 => 16,
        17 => 6,
        _ => return false,
    };
    let l4 = ip + ihl;
    let end = ip + total;
    if frame[ip] >> 4 != 4 || ihl < 20 || fragment || end > frame.len() || l4 + field + 2 > end {
        return false;
    }
    let l4_len = (end - l4) as u64;
    let pseudo = sum_bytes(0, &frame[ip + 12..ip + 20]) + u64::from(proto) + l4_len;
    let stored = u16::from_be_bytes([frame[l4 + field], frame[l4 + field + 1]]);
    if proto == 17 && stored == 0 {
        return false; // no checksum: nothing to finish
    }
    if fold(sum_bytes(pseudo, &frame[l4..end])) == 0xffff {
        return false; // complete and right
    }
    if stored != fold(pseudo) {
        return false; // not a partial sum: damage, for the receiver to catch
    }
    let vnet = VnetHeader {
        flags: F_NEEDS_CSUM,
        csum_start: l4 as u16,
        csum_offset: field as u16,
        ..VnetHeader::default()
    };
    complete_checksum(&mut frame[..end], &vnet)
}

/// Puts back the 802.1Q/802.1ad tag (`tpid`, `tci`) that the kernel keeps beside a received
/// frame rather than in it (a packet socket reports it in `PACKET_AUXDATA`), as `tun` does
/// when it hands a frame to userspace: `buf[..len]` holds `[virtio-net header | frame]`, the
/// tag goes after the two MAC addresses, and the header's offsets move with the bytes behind
/// it. Returns the new length, or `None` (nothing changed) if the frame is shorter than its
/// MAC addresses or `buf` has no room for 4 more bytes.
pub fn insert_vlan_tag(buf: &mut [u8], len: usize, tpid: u16, tci: u16) -> Option<usize> {
    let at = VNET_HDR_LEN + 12;
    if len < at || buf.len() < len + 4 {
        return None;
    }
    buf.copy_within(at..len, at + 4);
    buf[at..at + 2].copy_from_slice(&tpid.to_be_bytes());
    buf[at + 2..at + 4].copy_from_slice(&tci.to_be_bytes());
    let mut vnet = VnetHeader::parse(buf)?;
    if vnet.needs_csum() {
        vnet.csum_start = vnet.csum_start.saturating_add(4);
    }
    if vnet.is_gso() {
        vnet.hdr_len = vnet.hdr_len.saturating_add(4);
    }
    let header: &mut [u8; VNET_HDR_LEN] = (&mut buf[..VNET_HDR_LEN]).try_into().ok()?;
    vnet.emit(header);
    Some(len + 4)
}

/// Takes the outer VLAN tag out of the frame in `buf[..len]` (`[virtio-net header | frame]`),
/// moving the header's checksum and GSO offsets with it; returns the new length, or `None` if
/// the frame is too short to hold a tag.
pub fn remove_vlan_tag(buf: &mut [u8], len: usize) -> Option<usize> {
    let at = VNET_HDR_LEN + 12;
    if len < at + 4 || buf.len() < len {
        return None;
    }
    buf.copy_within(at + 4..len, at);
    let mut vnet = VnetHeader::parse(buf)?;
    if vnet.needs_csum() {
        vnet.csum_start = vnet.csum_start.saturating_sub(4);
    }
    if vnet.is_gso() {
        vnet.hdr_len = vnet.hdr_len.saturating_sub(4);
    }
    let header: &mut [u8; VNET_HDR_LEN] = (&mut buf[..VNET_HDR_LEN]).try_into().ok()?;
    vnet.emit(header);
    Some(len - 4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{KERNEL_TSO4, tcp4_frame};

    #[test]
    fn partial_checksums_are_finished_and_complete_or_damaged_ones_left_alone() {
        // IPv4 TCP, 10.0.0.1 -> 10.0.0.2, 20-byte header and 6 bytes of data.
        let mut frame = vec![0u8; 14 + 20 + 20 + 6];
        frame[12..14].copy_from_slice(&[0x08, 0x00]);
        frame[14] = 0x45;
        frame[16..18].copy_from_slice(&46u16.to_be_bytes());
        frame[14 + 8] = 64;
        frame[14 + 9] = 6;
        frame[14 + 12..14 + 20].copy_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
        frame[34 + 12] = 0x50;
        frame[54..60].copy_from_slice(b"abcdef");
        let pseudo = sum_bytes(0, &frame[26..34]) + 6 + 26;
        let seed = fold(pseudo);
        frame[34 + 16..34 + 18].copy_from_slice(&seed.to_be_bytes());
        let mut partial = frame.clone();
        assert!(
            finish_partial_checksum(&mut partial),
            "a partial sum is finished"
        );
        let verify = |f: &[u8]| fold(sum_bytes(pseudo, &f[34..60]));
        assert_eq!(verify(&partial), 0xffff, "and then verifies");
        let mut complete = partial.clone();
        assert!(!finish_partial_checksum(&mut complete));
        assert_eq!(complete, partial, "a complete checksum is left alone");
        let mut damaged = partial.clone();
        damaged[59] ^= 1;
        assert!(!finish_partial_checksum(&mut damaged));
        assert_ne!(verify(&damaged), 0xffff, "damage stays visible");
        assert!(
            !finish_partial_checksum(&mut partial[..30].to_vec()),
            "short"
        );
    }

    #[test]
    fn a_tag_removed_moves_the_offsets_back_and_undoes_an_insert() {
        let mut buf = vec![0u8; 200];
        buf[..VNET_HDR_LEN].copy_from_slice(&KERNEL_TSO4);
        for (i, b) in buf[VNET_HDR_LEN..100].iter_mut().enumerate() {
            *b = i as u8;
        }
        let original = buf[..100].to_vec();
        let len = insert_vlan_tag(&mut buf, 100, 0x8100, 10).expect("insert");
        assert_eq!(len, 104);
        let len = remove_vlan_tag(&mut buf, len).expect("remove");
        assert_eq!(
            &buf[..len],
            &original[..],
            "header offsets and bytes restored"
        );
        let h = VnetHeader::parse(&buf).unwrap();
        assert_eq!((h.csum_start, h.hdr_len), (34, 66));
        assert_eq!(
            remove_vlan_tag(&mut buf, VNET_HDR_LEN + 15),
            None,
            "too short"
        );
    }

    #[test]
    fn parses_a_kernel_header_and_emits_it_back() {
        let h = VnetHeader::parse(&KERNEL_TSO4).unwrap();
        assert_eq!(
            h,
            VnetHeader {
                flags: F_NEEDS_CSUM,
                gso_type: gso::TCPV4,
                hdr_len: 66,
                gso_size: 1448,
                csum_start: 34,
                csum_offset: 16
            }
        );
        assert!(h.is_gso() && h.needs_csum());
        let mut out = [0u8; VNET_HDR_LEN];
        h.emit(&mut out);
        assert_eq!(out, KERNEL_TSO4);
        assert!(VnetHeader::parse(&KERNEL_TSO4[..9]).is_none());
    }

    #[test]
    fn completes_a_partial_tcp_checksum() {
        // The IPv4/TCP packet from RFC 1071-style hand computation: pseudo-header sum stored in
        // the checksum field, as the kernel leaves it with CHECKSUM_PARTIAL.
        let mut frame = tcp4_frame(4);
        frame[66..70].copy_from_slice(b"abcd");
        let src = [10u8, 0, 0, 1];
        let dst = [10u8, 0, 0, 2];
        let tcp_len = (32 + 4) as u32;
        let mut pseudo: u32 = 0;
        for w in [src, dst] {
            pseudo += u32::from(u16::from_be_bytes([w[0], w[1]]))
                + u32::from(u16::from_be_bytes([w[2], w[3]]));
        }
        pseudo += 6 + tcp_len;
        while pseudo >> 16 != 0 {
            pseudo = (pseudo & 0xffff) + (pseudo >> 16);
        }
        frame[34 + 16..34 + 18].copy_from_slice(&(pseudo as u16).to_be_bytes());
        let h = VnetHeader {
            flags: F_NEEDS_CSUM,
            csum_start: 34,
            csum_offset: 16,
            ..VnetHeader::default()
        };
        assert!(complete_checksum(&mut frame, &h));
        // Verify: the one's complement sum over pseudo-header + segment is 0xffff.
        let mut sum: u32 = pseudo;
        let seg = &frame[34..];
        let mut cs = seg.chunks_exact(2);
        for p in &mut cs {
            sum += u32::from(u16::from_be_bytes([p[0], p[1]]));
        }
        // Remove the pseudo-header sum that was in the field before, counted via `pseudo` above:
        // the field now holds the final checksum, so segment + pseudo must fold to 0xffff.
        while sum >> 16 != 0 {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        assert_eq!(sum, 0xffff);
        let bad = VnetHeader {
            csum_start: 34,
            csum_offset: 5000,
            ..h
        };
        assert!(!complete_checksum(&mut frame, &bad));
    }

    #[test]
    fn a_vlan_tag_goes_back_after_the_macs_and_the_offsets_follow() {
        let mut buf = vec![0u8; 80];
        buf[..VNET_HDR_LEN].copy_from_slice(&KERNEL_TSO4); // csum_start 34, hdr_len 66
        let frame: Vec<u8> = (0..20u8).collect(); // MACs 0..12, then type and payload
        buf[VNET_HDR_LEN..VNET_HDR_LEN + 20].copy_from_slice(&frame);
        let len = insert_vlan_tag(&mut buf, VNET_HDR_LEN + 20, 0x8100, 42).expect("room");
        assert_eq!(len, VNET_HDR_LEN + 24);
        let out = &buf[VNET_HDR_LEN..len];
        assert_eq!(&out[..12], &frame[..12]);
        assert_eq!(&out[12..16], &[0x81, 0x00, 0, 42]);
        assert_eq!(&out[16..], &frame[12..]);
        let moved = VnetHeader::parse(&buf).expect("header");
        assert_eq!((moved.csum_start, moved.hdr_len), (38, 70));
        assert_eq!((moved.gso_size, moved.csum_offset), (1448, 16));
        // No room, or no room for the MACs: left alone.
        let mut full = buf[..len].to_vec();
        assert_eq!(insert_vlan_tag(&mut full, len, 0x8100, 1), None);
        let mut runt = vec![0u8; VNET_HDR_LEN + 20];
        assert_eq!(
            insert_vlan_tag(&mut runt, VNET_HDR_LEN + 6, 0x8100, 1),
            None
        );
    }
}
