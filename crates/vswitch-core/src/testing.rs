//! Frames the unit tests of several modules build.

/// An IPv4/TCP frame with `payload` bytes and a TCP header of 32 bytes (with options).
pub(crate) fn tcp4_frame(payload: usize) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 20 + 32 + payload];
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    f[14] = 0x45;
    let total = (20 + 32 + payload).min(usize::from(u16::MAX)) as u16;
    f[16..18].copy_from_slice(&total.to_be_bytes());
    f[23] = 6; // TCP
    f[34 + 12] = 8 << 4; // data offset: 8 words
    f
}

/// A header the kernel wrote on a TAP read (captured from a TCP segment over IPv4, TSO on):
/// NEEDS_CSUM, TCPV4, hdr_len 66, gso_size 1448, csum_start 34, csum_offset 16.
pub(crate) const KERNEL_TSO4: [u8; 10] =
    [0x01, 0x01, 0x42, 0x00, 0xa8, 0x05, 0x22, 0x00, 0x10, 0x00];
