//! A frame as the switch holds it, checked once.
//!
//! A worker reads `[virtio-net header | Ethernet frame]` into a buffer, and every step after
//! that (storm control, the forwarding decision, the MTU check, segmentation, corruption) needs
//! some of the same few facts: the virtio-net header, the Ethernet addresses, where a GSO frame's
//! headers are. [`FrameView`] finds them once, as smoltcp's `wire` views are checked once and then
//! read freely; the bytes stay where they are, and a step that changes them (a VLAN tag taken out
//! or put in) views the new frame.

use crate::gso::{GsoError, GsoFrame, Layout, layout};
use crate::vnet::{F_DATA_VALID, F_NEEDS_CSUM, VNET_HDR_LEN, VnetHeader};
use crate::wire::{EthernetFrame, FrameError, MacAddr};

/// What the switch reads of one frame, found once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameView {
    vnet: VnetHeader,
    dst: MacAddr,
    src: MacAddr,
    /// Bytes after the Ethernet header and one VLAN tag: what an MTU limits.
    payload_len: usize,
    /// For a GSO frame: where its headers are, or why it can't be cut.
    gso: Option<Result<Layout, GsoError>>,
}

impl FrameView {
    /// Views `buf`, `[virtio-net header | Ethernet frame]`.
    #[inline]
    pub fn parse(buf: &[u8]) -> Result<FrameView, FrameError> {
        let vnet = VnetHeader::parse(buf).ok_or(FrameError::Runt(0))?;
        FrameView::new(&buf[VNET_HDR_LEN..], vnet)
    }

    /// Views `frame`, which came with the virtio-net header `vnet`.
    #[inline]
    pub fn new(frame: &[u8], vnet: VnetHeader) -> Result<FrameView, FrameError> {
        let eth = EthernetFrame::new_checked(frame)?;
        Ok(FrameView {
            vnet,
            dst: eth.dst(),
            src: eth.src(),
            payload_len: eth.payload_len(),
            gso: if vnet.is_gso() {
                Some(layout(frame, &vnet))
            } else {
                None
            },
        })
    }

    /// The virtio-net header.
    #[inline]
    pub fn vnet(&self) -> &VnetHeader {
        &self.vnet
    }

    /// The destination MAC.
    #[inline]
    pub fn dst(&self) -> MacAddr {
        self.dst
    }

    /// The source MAC.
    #[inline]
    pub fn src(&self) -> MacAddr {
        self.src
    }

    /// The GSO frame `frame` is (the frame this view was made of, without its virtio-net
    /// header), or why it can't be cut; `None` if it is one packet.
    #[inline]
    pub fn gso<'a>(&self, frame: &'a [u8]) -> Option<Result<GsoFrame<'a>, GsoError>> {
        let l = self.gso?;
        Some(l.map(|l| GsoFrame::laid_out(frame, l, self.vnet.gso_size)))
    }

    /// Whether the frame may leave through an interface with MTU `mtu`: its payload (after the
    /// header and one VLAN tag) must fit, as in the kernel's `is_skb_forwardable`; for a GSO
    /// frame, each segment it will be cut into must fit (and its headers must make sense).
    #[inline]
    pub fn fits_mtu(&self, mtu: u32) -> bool {
        match self.gso {
            Some(Ok(l)) => l.segment_len(self.vnet.gso_size) <= mtu as usize,
            Some(Err(_)) => false,
            None => self.payload_len <= mtu as usize,
        }
    }

    /// Notes that the frame's partial checksum was finished in place and its header says so.
    #[inline]
    pub fn checksum_finished(&mut self) {
        self.vnet.flags = (self.vnet.flags & !F_NEEDS_CSUM) | F_DATA_VALID;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{KERNEL_TSO4, tcp4_frame};

    #[test]
    fn a_frame_is_viewed_once_with_what_every_step_reads() {
        let frame = tcp4_frame(4000);
        let vnet = VnetHeader::parse(&KERNEL_TSO4).unwrap();
        let view = FrameView::new(&frame, vnet).expect("a frame");
        assert_eq!(view.dst(), MacAddr::from_slice(&frame).unwrap());
        assert_eq!(view.src(), MacAddr::from_slice(&frame[6..]).unwrap());
        let gso = view.gso(&frame).expect("GSO").expect("well-formed");
        assert_eq!(
            gso.segment_len(),
            GsoFrame::parse(&frame, &vnet).unwrap().segment_len()
        );
        assert!(view.fits_mtu(gso.segment_len() as u32));
        assert!(!view.fits_mtu(gso.segment_len() as u32 - 1));
        let with_header = [&KERNEL_TSO4[..], &frame].concat();
        assert_eq!(FrameView::parse(&with_header), Ok(view));
        assert_eq!(
            FrameView::new(&frame[..13], vnet),
            Err(FrameError::Runt(13))
        );
        assert_eq!(FrameView::parse(&[0u8; 5]), Err(FrameError::Runt(0)));
    }
}
