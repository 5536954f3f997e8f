//! Corruption as a noisy wire does it: the impairments' `corrupt` applied to a frame that may
//! be a GSO frame or carry a partial checksum.

use crate::view::FrameView;
use crate::vnet::{VNET_HDR_LEN, complete_checksum};

/// The frame in `buf` (`[virtio-net header | frame]`) with bit `bit` of byte `offset` (counted
/// from the start of the Ethernet frame) flipped, as a receiver would get it from a noisy wire:
/// with final checksums, so that its stack sees the damage and drops the packet, rather than
/// finishing a partial checksum over damaged bytes (or trusting `DATA_VALID`) and handing them to
/// the application. A GSO frame is cut into segments first ([`gso::segment`]) and the
/// segment holding `offset` (counting through the segments) is damaged. Returns the buffers to
/// send in its place, in the same layout, their headers asking for nothing (as netem does with
/// `skb_checksum_help` and GSO segmentation before it corrupts).
pub fn corrupt_on_the_wire(buf: &[u8], view: &FrameView, offset: usize, bit: u8) -> Vec<Vec<u8>> {
    let plain = [0u8; VNET_HDR_LEN];
    let frame = &buf[VNET_HDR_LEN..];
    let mut out = Vec::new();
    if let Some(Ok(gso)) = view.gso(frame) {
        let mut scratch = Vec::new();
        gso.segment(None, &mut scratch, |seg| {
            let mut b = plain.to_vec();
            b.extend_from_slice(seg);
            out.push(b);
        });
    }
    if out.is_empty() {
        let mut b = buf.to_vec();
        if view.vnet().needs_csum() {
            complete_checksum(&mut b[VNET_HDR_LEN..], view.vnet());
        }
        b[..VNET_HDR_LEN].copy_from_slice(&plain);
        out.push(b);
    }
    // Find the byte: `offset` counts through the segments' frames one after another.
    let total: usize = out.iter().map(|b| b.len() - VNET_HDR_LEN).sum();
    let mut at = offset % total.max(1);
    for b in &mut out {
        let len = b.len() - VNET_HDR_LEN;
        if at < len {
            b[VNET_HDR_LEN + at] ^= 1 << (bit % 8);
            break;
        }
        at -= len;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksum::{fold, sum_bytes};
    use crate::testing::{KERNEL_TSO4, tcp4_frame};
    use crate::vnet::{F_DATA_VALID, F_NEEDS_CSUM, VnetHeader};

    /// Whether the IPv4/TCP frame `f` (no options in IP) has a valid TCP checksum.
    fn tcp4_checksum_ok(f: &[u8]) -> bool {
        let tcp_len = f.len() - 34;
        let pseudo = sum_bytes(6 + tcp_len as u64, &f[26..34]);
        fold(sum_bytes(pseudo, &f[34..])) == 0xffff
    }

    /// An IPv4/TCP frame with a real payload and the pseudo-header sum in the checksum field,
    /// as the kernel hands it over with a partial checksum.
    fn partial_tcp4(payload: usize) -> Vec<u8> {
        let mut f = tcp4_frame(payload);
        f[26..34].copy_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
        for (i, b) in f[66..].iter_mut().enumerate() {
            *b = i as u8;
        }
        let pseudo = fold(sum_bytes(6 + (32 + payload) as u64, &f[26..34]));
        f[50..52].copy_from_slice(&pseudo.to_be_bytes());
        f
    }

    fn with_header(vnet: &VnetHeader, frame: &[u8]) -> Vec<u8> {
        let mut h = [0u8; VNET_HDR_LEN];
        vnet.emit(&mut h);
        [&h[..], frame].concat()
    }

    #[test]
    fn corruption_of_a_partial_checksum_frame_is_detectable() {
        let frame = partial_tcp4(100);
        let vnet = VnetHeader {
            flags: F_NEEDS_CSUM | F_DATA_VALID,
            csum_start: 34,
            csum_offset: 16,
            ..VnetHeader::default()
        };
        let buf = with_header(&vnet, &frame);
        let out = corrupt_on_the_wire(&buf, &FrameView::parse(&buf).unwrap(), 80, 3);
        assert_eq!(out.len(), 1);
        assert_eq!(
            &out[0][..VNET_HDR_LEN],
            &[0; VNET_HDR_LEN],
            "nothing left to trust"
        );
        let damaged = &out[0][VNET_HDR_LEN..];
        assert_eq!(damaged[80], frame[80] ^ 8);
        assert!(!tcp4_checksum_ok(damaged), "the damage must show");
        let mut repaired = damaged.to_vec();
        repaired[80] ^= 8;
        assert!(
            tcp4_checksum_ok(&repaired),
            "the checksum was finished first"
        );
    }

    #[test]
    fn corruption_of_a_gso_frame_damages_one_segment() {
        let frame = partial_tcp4(5000);
        let vnet = VnetHeader::parse(&KERNEL_TSO4).unwrap();
        // Byte 1600 counted through the segments: the second one (the first is 1514 long).
        let buf = with_header(&vnet, &frame);
        let out = corrupt_on_the_wire(&buf, &FrameView::parse(&buf).unwrap(), 1600, 0);
        assert_eq!(out.len(), 4);
        let bad: Vec<usize> = out
            .iter()
            .enumerate()
            .filter(|(_, b)| !tcp4_checksum_ok(&b[VNET_HDR_LEN..]))
            .map(|(i, _)| i)
            .collect();
        assert_eq!(bad, vec![1], "exactly the second segment is damaged");
        assert!(out.iter().all(|b| b[..VNET_HDR_LEN] == [0; VNET_HDR_LEN]));
    }
}
