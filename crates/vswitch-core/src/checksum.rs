//! The Internet checksum (RFC 1071): sums over byte ranges, folding, and the pseudo-headers of
//! TCP, UDP and ICMPv6, as smoltcp's `wire::ip::checksum`. Every checksum vswitch computes or
//! finishes goes through here.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Adds `bytes`, as big-endian 16-bit words (an odd last byte padded with zero), to `initial`.
/// Summing 32-bit words into 64 bits and folding later gives the same one's complement sum.
pub fn sum_bytes(initial: u64, bytes: &[u8]) -> u64 {
    let mut sum = initial;
    let mut words = bytes.chunks_exact(4);
    for w in &mut words {
        sum += u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]]));
    }
    let rest = words.remainder();
    let mut tail = [0u8; 4];
    tail[..rest.len()].copy_from_slice(rest);
    sum + u64::from(u32::from_be_bytes(tail))
}

/// Folds a 64-bit sum of [`sum_bytes`] into 16 bits (one's complement, not inverted).
pub fn fold(mut sum: u64) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The checksum of `bytes` alone, as the IPv4 header and ICMPv4 use it.
pub fn of(bytes: &[u8]) -> u16 {
    !fold(sum_bytes(0, bytes))
}

/// The unfolded sum of a pseudo-header: `addresses` (source then destination, as they lie in
/// the IPv4 or IPv6 header), the protocol and the L4 length.
pub fn pseudo_header(addresses: &[u8], proto: u8, l4_len: usize) -> u64 {
    sum_bytes(u64::from(proto) + l4_len as u64, addresses)
}

/// The unfolded sum of an IPv4 pseudo-header.
pub fn pseudo_header_v4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, l4_len: usize) -> u64 {
    sum_bytes(pseudo_header(&src.octets(), proto, l4_len), &dst.octets())
}

/// The unfolded sum of an IPv6 pseudo-header.
pub fn pseudo_header_v6(src: Ipv6Addr, dst: Ipv6Addr, proto: u8, l4_len: usize) -> u64 {
    sum_bytes(pseudo_header(&src.octets(), proto, l4_len), &dst.octets())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rfc_1071_example_sums_as_it_says() {
        // RFC 1071, 3: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2.
        assert_eq!(
            fold(sum_bytes(
                0,
                &[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]
            )),
            0xddf2
        );
        // An odd length pads with zero.
        assert_eq!(fold(sum_bytes(0, &[0x01])), 0x0100);
    }

    #[test]
    fn pseudo_headers_sum_their_fields() {
        let (a, b) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        let mut bytes = [0u8; 12];
        bytes[..4].copy_from_slice(&a.octets());
        bytes[4..8].copy_from_slice(&b.octets());
        bytes[9] = 6;
        bytes[10..12].copy_from_slice(&40u16.to_be_bytes());
        assert_eq!(
            fold(pseudo_header_v4(a, b, 6, 40)),
            fold(sum_bytes(0, &bytes))
        );
    }
}
