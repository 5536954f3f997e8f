//! Wire formats: MAC addresses, VLAN ids and a zero-copy Ethernet header view.
//!
//! Like smoltcp's `wire` module: [`EthernetFrame::new_checked`] validates the length once, and
//! after that no accessor can panic.

use std::fmt;
use std::str::FromStr;

/// Length of an Ethernet header without a VLAN tag: destination, source, EtherType.
pub const ETHERNET_HEADER_LEN: usize = 14;
/// Length of an 802.1Q tag.
pub const VLAN_TAG_LEN: usize = 4;
/// EtherType of an 802.1Q VLAN tag.
pub const ETHERTYPE_VLAN: u16 = 0x8100;
/// The 802.1ad (QinQ service) tag's EtherType.
pub const ETHERTYPE_QINQ: u16 = 0x88a8;

/// A 48-bit IEEE 802 MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// ff:ff:ff:ff:ff:ff.
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    /// 00:00:00:00:00:00, never a valid source.
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    /// The address in the first six bytes of `bytes`, if there are six.
    pub fn from_slice(bytes: &[u8]) -> Option<MacAddr> {
        bytes.get(..6)?.try_into().ok().map(MacAddr)
    }

    /// The six address bytes, as on the wire.
    pub const fn octets(self) -> [u8; 6] {
        self.0
    }

    /// Group address (the I/G bit is set): broadcast or multicast.
    pub const fn is_multicast(self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// The all-ones broadcast address.
    pub fn is_broadcast(self) -> bool {
        self == Self::BROADCAST
    }

    /// An address that may appear as a frame's source: neither group nor all-zero.
    pub fn is_valid_source(self) -> bool {
        !self.is_multicast() && self != Self::ZERO
    }

    /// For the IEEE 802.1D reserved group addresses 01:80:C2:00:00:00 to 0F (STP, pause, LACP,
    /// 802.1X, LLDP, ...), the low nibble that identifies them; `None` for any other address.
    pub fn link_local_group(self) -> Option<u8> {
        let [a, b, c, d, e, f] = self.0;
        if [a, b, c, d, e] == [0x01, 0x80, 0xc2, 0x00, 0x00] && f <= 0x0f {
            Some(f)
        } else {
            None
        }
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Why a string is not a MAC address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid MAC address {input:?}: expected six hex bytes like 02:00:00:00:00:01")]
pub struct ParseMacError {
    input: String,
}

impl FromStr for MacAddr {
    type Err = ParseMacError;

    /// Accepts `aa:bb:cc:dd:ee:ff` and `aa-bb-cc-dd-ee-ff`, in either case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseMacError {
            input: s.to_owned(),
        };
        let mut out = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for byte in &mut out {
            let part = parts.next().ok_or_else(err)?;
            if part.len() != 2 {
                return Err(err());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(MacAddr(out))
    }
}

/// An 802.1Q VLAN id; [`VlanId::UNTAGGED`] stands for frames without a tag.
///
/// The MAC table is keyed by (VLAN, MAC) from the start so that VLAN-aware switching needs no new
/// table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct VlanId(u16);

impl VlanId {
    /// Untagged traffic.
    pub const UNTAGGED: VlanId = VlanId(0);

    /// The VLAN with id `id` (the low 12 bits are kept).
    pub const fn new(id: u16) -> Self {
        VlanId(id & 0x0fff)
    }

    /// The 12-bit id; 0 for untagged.
    pub const fn get(self) -> u16 {
        self.0
    }
}

/// Identifies a switch port. Dense small integers, so per-port state can live in vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortId(pub u16);

impl PortId {
    /// The port's index into per-port vectors.
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for PortId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "port{}", self.0)
    }
}

/// Why a buffer is not an Ethernet frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Shorter than an Ethernet header.
    #[error("runt frame of {0} bytes (an Ethernet header needs 14)")]
    Runt(usize),
}

/// A read-only view of an Ethernet frame: header fields straight from the buffer, no copy.
#[derive(Debug, Clone, Copy)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Wraps `buffer` after checking it holds at least a full header.
    pub fn new_checked(buffer: T) -> Result<Self, FrameError> {
        let len = buffer.as_ref().len();
        if len < ETHERNET_HEADER_LEN {
            return Err(FrameError::Runt(len));
        }
        Ok(EthernetFrame { buffer })
    }

    fn mac_at(&self, offset: usize) -> MacAddr {
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&self.buffer.as_ref()[offset..offset + 6]);
        MacAddr(mac)
    }

    /// Destination MAC address.
    pub fn dst(&self) -> MacAddr {
        self.mac_at(0)
    }

    /// Source MAC address.
    pub fn src(&self) -> MacAddr {
        self.mac_at(6)
    }

    /// The outer EtherType (0x8100 for a VLAN-tagged frame).
    pub fn ethertype(&self) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[12], b[13]])
    }

    /// The VLAN of an 802.1Q-tagged frame, `None` when untagged or too short to hold the tag.
    pub fn vlan(&self) -> Option<VlanId> {
        let b = self.buffer.as_ref();
        if self.ethertype() == ETHERTYPE_VLAN && b.len() >= ETHERNET_HEADER_LEN + VLAN_TAG_LEN {
            Some(VlanId::new(u16::from_be_bytes([b[14], b[15]])))
        } else {
            None
        }
    }

    /// Bytes after the Ethernet header (and its outer tag, 802.1Q or 802.1ad): what an
    /// interface's MTU limits. As the kernel's `is_skb_forwardable`, one tag of either kind
    /// rides beyond the MTU, so a frame a QinQ tunnel tagged still fits where it came from.
    pub fn payload_len(&self) -> usize {
        let tagged = matches!(self.ethertype(), ETHERTYPE_VLAN | ETHERTYPE_QINQ)
            && self.buffer.as_ref().len() >= ETHERNET_HEADER_LEN + VLAN_TAG_LEN;
        let header = if tagged {
            ETHERNET_HEADER_LEN + VLAN_TAG_LEN
        } else {
            ETHERNET_HEADER_LEN
        };
        self.buffer.as_ref().len().saturating_sub(header)
    }

    /// The whole frame.
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_parse_and_display_round_trip() {
        let mac: MacAddr = "02:AB:cd:00:00:01".parse().unwrap();
        assert_eq!(mac.0, [0x02, 0xab, 0xcd, 0, 0, 1]);
        assert_eq!(mac.to_string(), "02:ab:cd:00:00:01");
        assert_eq!("02-ab-cd-00-00-01".parse::<MacAddr>().unwrap(), mac);
    }

    #[test]
    fn mac_parse_rejects_malformed() {
        for bad in [
            "",
            "02:00:00:00:00",
            "02:00:00:00:00:00:00",
            "2:0:0:0:0:0",
            "zz:00:00:00:00:00",
        ] {
            let err = bad.parse::<MacAddr>().unwrap_err();
            assert!(err.to_string().contains("invalid MAC address"), "{bad}");
        }
    }

    #[test]
    fn mac_classes() {
        assert!(MacAddr::BROADCAST.is_multicast() && MacAddr::BROADCAST.is_broadcast());
        assert!(!MacAddr::ZERO.is_valid_source());
        assert!(MacAddr([0x02, 0, 0, 0, 0, 1]).is_valid_source());
        assert!(!MacAddr([0x01, 0, 0x5e, 0, 0, 1]).is_valid_source());
        assert_eq!(
            MacAddr([0x01, 0x80, 0xc2, 0, 0, 0x0e]).link_local_group(),
            Some(0x0e)
        );
        assert_eq!(
            MacAddr([0x01, 0x80, 0xc2, 0, 0, 0x10]).link_local_group(),
            None
        );
    }

    #[test]
    fn frame_view_reads_header_and_vlan() {
        let mut frame = [0u8; 64];
        frame[..6].copy_from_slice(&[0xff; 6]);
        frame[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 7]);
        frame[12..14].copy_from_slice(&ETHERTYPE_VLAN.to_be_bytes());
        frame[14..16].copy_from_slice(&0x2064u16.to_be_bytes()); // PCP 1, VID 100
        let view = EthernetFrame::new_checked(&frame[..]).unwrap();
        assert!(view.dst().is_broadcast());
        assert_eq!(view.src(), MacAddr([2, 0, 0, 0, 0, 7]));
        assert_eq!(view.vlan(), Some(VlanId::new(100)));
        assert_eq!(view.payload_len(), 64 - 18);
    }

    #[test]
    fn runt_is_rejected() {
        assert_eq!(
            EthernetFrame::new_checked(&[0u8; 13][..]).unwrap_err(),
            FrameError::Runt(13)
        );
    }
}
