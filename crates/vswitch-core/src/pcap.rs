//! The pcap file format (nanosecond variant), which `tcpdump -r` and Wireshark read.

/// Magic number of a pcap file with nanosecond timestamps.
pub const MAGIC_NANOS: u32 = 0xa1b2_3c4d;
/// Link type Ethernet.
pub const LINKTYPE_ETHERNET: u32 = 1;
/// Largest frame recorded whole; longer ones are cut (a 64 KiB GSO segment fits).
pub const SNAPLEN: u32 = 262_144;

/// The 24-byte file header.
pub fn file_header() -> [u8; 24] {
    let mut h = [0u8; 24];
    h[0..4].copy_from_slice(&MAGIC_NANOS.to_le_bytes());
    h[4..6].copy_from_slice(&2u16.to_le_bytes()); // version 2.4
    h[6..8].copy_from_slice(&4u16.to_le_bytes());
    // thiszone and sigfigs stay 0
    h[16..20].copy_from_slice(&SNAPLEN.to_le_bytes());
    h[20..24].copy_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
    h
}

/// Appends one record: a 16-byte header (time since the Unix epoch, lengths) and the frame.
pub fn write_record(out: &mut Vec<u8>, unix_nanos: u128, frame: &[u8]) {
    let secs = u32::try_from(unix_nanos / 1_000_000_000).unwrap_or(u32::MAX);
    let nanos = (unix_nanos % 1_000_000_000) as u32;
    let orig = u32::try_from(frame.len()).unwrap_or(u32::MAX);
    let incl = orig.min(SNAPLEN);
    out.extend_from_slice(&secs.to_le_bytes());
    out.extend_from_slice(&nanos.to_le_bytes());
    out.extend_from_slice(&incl.to_le_bytes());
    out.extend_from_slice(&orig.to_le_bytes());
    out.extend_from_slice(&frame[..incl as usize]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_record_layout() {
        let h = file_header();
        assert_eq!(&h[..4], &[0x4d, 0x3c, 0xb2, 0xa1]);
        assert_eq!(u32::from_le_bytes(h[20..24].try_into().unwrap()), 1);
        let mut out = Vec::new();
        write_record(&mut out, 1_700_000_000_123_456_789, &[0xaa; 60]);
        assert_eq!(out.len(), 16 + 60);
        assert_eq!(
            u32::from_le_bytes(out[0..4].try_into().unwrap()),
            1_700_000_000
        );
        assert_eq!(
            u32::from_le_bytes(out[4..8].try_into().unwrap()),
            123_456_789
        );
        assert_eq!(u32::from_le_bytes(out[8..12].try_into().unwrap()), 60);
    }
}
