#!/usr/bin/env python3
"""Writes the frame target's seeds: real frames (ARP, IPv4/IPv6 TCP and UDP, VLAN and QinQ tags,
GSO frames with partial checksums) in the target's input layout. Run from this folder."""
import struct

A, B, C = bytes.fromhex("020000000a0a"), bytes.fromhex("020000000b0b"), bytes.fromhex("020000000c0c")
P2 = bytes.fromhex("020000000032")  # the MAC bound to p2 in the MACVLAN switch
BCAST = b"\xff" * 6

def csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s

def vnet(flags=0, gso_type=0, hdr_len=0, gso_size=0, csum_start=0, csum_offset=0):
    return struct.pack("<BBHHHH", flags, gso_type, hdr_len, gso_size, csum_start, csum_offset)

def eth(dst, src, ethertype, payload, tags=()):
    out = dst + src
    for tpid, vid in tags:
        out += struct.pack("!HH", tpid, vid)
    return out + struct.pack("!H", ethertype) + payload

def ipv4(proto, payload, src="10.0.0.1", dst="10.0.0.2"):
    s = bytes(int(x) for x in src.split(".")); d = bytes(int(x) for x in dst.split("."))
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, 0x4000, 64, proto, 0, s, d)
    return hdr[:10] + struct.pack("!H", 0xFFFF ^ csum(hdr)) + hdr[12:] + payload

def ipv6(nh, payload):
    s = bytes.fromhex("fd000000000000000000000000000001"); d = bytes.fromhex("fd000000000000000000000000000002")
    return struct.pack("!IHBB", 0x60000000, len(payload), nh, 64) + s + d + payload

def tcp(payload, sport=40000, dport=5201):
    return struct.pack("!HHIIBBHHH", sport, dport, 1, 1, 5 << 4, 0x18, 65535, 0, 0) + payload

def tcp_segment(seq, payload, flags=0x10, src="10.0.0.1", dst="10.0.0.2"):
    """An IPv4 TCP segment with both checksums right, as one datagram of a VXLAN train."""
    s = bytes(int(x) for x in src.split(".")); d = bytes(int(x) for x in dst.split("."))
    hdr = struct.pack("!HHIIBBHHH", 40000, 5201, seq, 1, 5 << 4, flags, 65535, 0, 0)
    pseudo = s + d + struct.pack("!BBH", 0, 6, len(hdr) + len(payload))
    c = 0xFFFF ^ csum(pseudo + hdr + payload)
    return hdr[:16] + struct.pack("!H", c) + hdr[18:] + payload

def udp(payload, sport=40000, dport=9):
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload

def arp(src, ip_src, ip_dst):
    return struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + src + ip_src + b"\0" * 6 + ip_dst

def record(port, data):
    return struct.pack("!BH", port, len(data)) + data

def plain(frame):
    return vnet() + frame

def gso(frame, gso_type, l4_off, l4_hdr, size):
    # NEEDS_CSUM with the checksum field at its place in the TCP or UDP header.
    off = 16 if gso_type in (1, 4) else 6
    return vnet(1, gso_type, l4_off + l4_hdr, size, l4_off, off) + frame

def seed(name, switch, *records):
    with open(name, "wb") as f:
        f.write(bytes([switch]) + b"".join(records))

arp_a = eth(BCAST, A, 0x0806, arp(A, bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])))
tcp_small = eth(A, B, 0x0800, ipv4(6, tcp(b"hello")))
big4 = eth(A, B, 0x0800, ipv4(6, tcp(bytes(range(256)) * 35)))
big6 = eth(A, B, 0x86DD, ipv6(6, tcp(bytes(range(256)) * 35)))
bigudp = eth(A, B, 0x0800, ipv4(17, udp(bytes(8000))))
partial = eth(A, B, 0x0800, ipv4(17, udp(b"x" * 200)))
icmp = eth(A, B, 0x0800, ipv4(1, struct.pack("!BBHHH", 8, 0, 0, 1, 1) + b"ping"))

for sw in range(3):
    seed(f"learn-arp-tcp-{sw}", sw, record(2, plain(arp_a)), record(0, plain(tcp_small)), record(3, plain(icmp)))
    # A is learned behind p3 (MTU 1280, no offloads): a 9 KB GSO frame from p1 is cut in software.
    seed(f"gso-tcp4-to-small-mtu-{sw}", sw, record(3, plain(arp_a)), record(1, gso(big4, 1, 34, 20, 8000)))
    seed(f"gso-tcp6-to-offload-{sw}", sw, record(0, vnet() + arp_a), record(1, gso(big6, 4, 54, 20, 1440)))
    seed(f"gso-udp-{sw}", sw, record(2, plain(arp_a)), record(1, gso(bigudp, 5, 34, 8, 1400)))
    seed(f"partial-csum-{sw}", sw, record(2, plain(arp_a)), record(0, vnet(1, 0, 0, 0, 34, 6) + partial))
    seed(f"ipv6-udp-{sw}", sw, record(1, plain(eth(BCAST, B, 0x86DD, ipv6(17, udp(b"v6"))))))
    seed(f"tagged-{sw}", sw,
         record(0, plain(eth(BCAST, A, 0x0806, arp(A, bytes(4), bytes(4)), tags=[(0x8100, 20)]))),
         record(3, plain(eth(A, C, 0x0800, ipv4(6, tcp(b"t")), tags=[(0x8100, 10)]))),
         record(2, plain(eth(A, B, 0x0800, ipv4(6, tcp(b"q")), tags=[(0x88A8, 100), (0x8100, 5)]))),
         record(1, plain(eth(C, A, 0x86DD, ipv6(58, b"\x80\0\0\0\0\1\0\1"), tags=[(0x8100, 7)]))))
seed("macvlan", 3,
     record(0, plain(eth(P2, A, 0x0800, ipv4(6, tcp(b"to p2"))))),
     record(0, plain(arp_a)),
     record(2, plain(eth(A, P2, 0x0800, ipv4(17, udp(b"from p2"))))),
     record(3, plain(eth(BCAST, C, 0x0806, arp(C, bytes(4), bytes(4))))),
     record(1, gso(big4, 1, 34, 20, 1448)))

# A train of five TCP segments of one flow, as a VXLAN port's UDP_GRO read delivers them.
train = [eth(A, B, 0x0800, ipv4(6, tcp_segment(1000 + i * 1398, bytes([i]) * 1398, 0x18 if i == 4 else 0x10))) for i in range(5)]
seed("gro-train", 0, *[record(0, plain(f)) for f in train])
