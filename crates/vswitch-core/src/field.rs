//! Named byte ranges of the IPv4, IPv6, TCP and UDP header fields that segmentation and
//! checksum offload read and rewrite, as smoltcp's `mod field`: offsets from each header's
//! start.

use std::ops::Range;

/// A header field: its bytes.
pub type Field = Range<usize>;

/// IPv4 (RFC 791).
pub mod ipv4 {
    use super::Field;
    /// Version and header length in 32-bit words.
    pub const VER_IHL: usize = 0;
    /// Total length.
    pub const LENGTH: Field = 2..4;
    /// Identification.
    pub const IDENT: Field = 4..6;
    /// Flags and fragment offset.
    pub const FLG_OFF: Field = 6..8;
    /// Protocol.
    pub const PROTOCOL: usize = 9;
    /// Header checksum.
    pub const CHECKSUM: Field = 10..12;
    /// Source and destination addresses, as a pseudo-header takes them.
    pub const ADDRESSES: Field = 12..20;
    /// The header without options.
    pub const HEADER_LEN: usize = 20;
}

/// IPv6 (RFC 8200).
pub mod ipv6 {
    use super::Field;
    /// Payload length.
    pub const LENGTH: Field = 4..6;
    /// Next header.
    pub const NXT_HDR: usize = 6;
    /// Source and destination addresses, as a pseudo-header takes them.
    pub const ADDRESSES: Field = 8..40;
    /// The fixed header.
    pub const HEADER_LEN: usize = 40;
}

/// TCP (RFC 9293).
pub mod tcp {
    use super::Field;
    /// Sequence number.
    pub const SEQ_NUM: Field = 4..8;
    /// Data offset (upper four bits, in 32-bit words).
    pub const DATA_OFF: usize = 12;
    /// Flags.
    pub const FLAGS: usize = 13;
    /// Checksum.
    pub const CHECKSUM: Field = 16..18;
    /// The header without options.
    pub const HEADER_LEN: usize = 20;
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// PSH.
    pub const PSH: u8 = 0x08;
    /// CWR.
    pub const CWR: u8 = 0x80;
}

/// UDP (RFC 768).
pub mod udp {
    use super::Field;
    /// Length of header and data.
    pub const LENGTH: Field = 4..6;
    /// Checksum.
    pub const CHECKSUM: Field = 6..8;
    /// The header.
    pub const HEADER_LEN: usize = 8;
}

/// IP protocol numbers.
pub mod proto {
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
}
