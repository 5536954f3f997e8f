//! smoltcp hosts on in-memory ports talk through the real switch workers, without root: ARP,
//! ICMP echo and a TCP transfer whose bytes are checked.

use std::time::{Duration, Instant as StdInstant};

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{ChecksumCapabilities, Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::socket::{icmp, tcp};
use smoltcp::time::Instant;
use smoltcp::wire::{
    EthernetAddress, HardwareAddress, Icmpv4Packet, Icmpv4Repr, IpAddress, IpCidr, Ipv4Address,
};
use vswitch_datapath::{MemoryPeer, MemoryPort, PortDevice, Switch, SwitchConfig};

/// A smoltcp device over the host's end of an in-memory cable.
struct PeerDevice {
    peer: MemoryPeer,
    buf: Vec<u8>,
}

struct Rx(Vec<u8>);
struct Tx<'a>(&'a MemoryPeer);

impl RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut frame = vec![0u8; len];
        let r = f(&mut frame);
        // A full queue loses the frame, as a real NIC would; TCP retransmits.
        let _ = self.0.send(&frame);
        r
    }
}

impl Device for PeerDevice {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _now: Instant) -> Option<(Rx, Tx<'_>)> {
        let n = self.peer.recv(&mut self.buf).ok()?;
        Some((Rx(self.buf[..n].to_vec()), Tx(&self.peer)))
    }

    fn transmit(&mut self, _now: Instant) -> Option<Tx<'_>> {
        Some(Tx(&self.peer))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = 1514;
        caps
    }
}

struct Host {
    device: PeerDevice,
    iface: Interface,
    sockets: SocketSet<'static>,
}

impl Host {
    fn new(peer: MemoryPeer, n: u8) -> Host {
        let mut device = PeerDevice {
            peer,
            buf: vec![0u8; 2048],
        };
        let mac = EthernetAddress([0x02, 0, 0, 0, 0, n]);
        let mut iface = Interface::new(
            Config::new(HardwareAddress::Ethernet(mac)),
            &mut device,
            Instant::now(),
        );
        iface.update_ip_addrs(|addrs| {
            addrs
                .push(IpCidr::new(IpAddress::v4(10, 0, 0, n), 24))
                .expect("address");
        });
        Host {
            device,
            iface,
            sockets: SocketSet::new(vec![]),
        }
    }

    fn poll(&mut self) {
        self.iface
            .poll(Instant::now(), &mut self.device, &mut self.sockets);
    }
}

fn switch_with_hosts(n: u8) -> (Switch, Vec<Host>) {
    let mut ports: Vec<(String, Box<dyn PortDevice>)> = Vec::new();
    let mut hosts = Vec::new();
    for i in 1..=n {
        let (port, peer) = MemoryPort::pair(1500).expect("pair");
        ports.push((format!("h{i}"), Box::new(port)));
        hosts.push(Host::new(peer, i));
    }
    let config = SwitchConfig {
        threads: 2,
        ..SwitchConfig::default()
    };
    (Switch::start(config, ports).expect("start"), hosts)
}

/// Polls every host until `done` or 20 s pass.
fn run_until(hosts: &mut [Host], mut done: impl FnMut(&mut [Host]) -> bool) -> bool {
    let start = StdInstant::now();
    while start.elapsed() < Duration::from_secs(20) {
        for h in hosts.iter_mut() {
            h.poll();
        }
        if done(hosts) {
            return true;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    false
}

#[test]
fn smoltcp_hosts_ping_through_the_switch() {
    let (switch, mut hosts) = switch_with_hosts(3);
    let handle: SocketHandle = hosts[0].sockets.add(icmp::Socket::new(
        icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 4], vec![0; 1024]),
        icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 4], vec![0; 1024]),
    ));
    hosts[0]
        .sockets
        .get_mut::<icmp::Socket>(handle)
        .bind(icmp::Endpoint::Ident(0x22))
        .expect("bind");
    let target = Ipv4Address::new(10, 0, 0, 2);
    let payload = b"vswitch echo";
    let mut replies = 0u16;
    let mut last_sent: Option<StdInstant> = None;
    // Host 3 is not polled: what reaches it stays queued for inspection below.
    let ok = run_until(&mut hosts[..2], |hosts| {
        let socket = hosts[0].sockets.get_mut::<icmp::Socket>(handle);
        while let Ok((data, from)) = socket.recv() {
            let packet = Icmpv4Packet::new_checked(data).expect("icmp");
            let repr = Icmpv4Repr::parse(&packet, &ChecksumCapabilities::default()).expect("repr");
            if let Icmpv4Repr::EchoReply {
                ident: 0x22,
                seq_no,
                data,
            } = repr
            {
                assert_eq!(from, IpAddress::Ipv4(target));
                assert_eq!(data, payload);
                if seq_no == replies {
                    replies += 1;
                }
            }
        }
        // One echo in flight; resend it if unanswered (smoltcp drops the first one while it
        // resolves the neighbour with ARP).
        let due = last_sent.is_none_or(|t| t.elapsed() > Duration::from_millis(300));
        if replies < 3 && due && socket.can_send() {
            let repr = Icmpv4Repr::EchoRequest {
                ident: 0x22,
                seq_no: replies,
                data: payload,
            };
            let buf = socket
                .send(repr.buffer_len(), IpAddress::Ipv4(target))
                .expect("send");
            repr.emit(
                &mut Icmpv4Packet::new_unchecked(buf),
                &ChecksumCapabilities::default(),
            );
            last_sent = Some(StdInstant::now());
        }
        replies == 3
    });
    assert!(
        ok,
        "only {replies} of 3 echo replies: {:?}",
        switch
            .ports()
            .iter()
            .map(|p| p.counters().snapshot())
            .collect::<Vec<_>>()
    );
    // Host 3 got the ARP broadcasts and nothing of the unicast echoes.
    let mut buf = vec![0u8; 2048];
    let mut arps = 0;
    while let Ok(n) = hosts[2].device.peer.recv(&mut buf) {
        assert_eq!(
            &buf[12..14],
            &[0x08, 0x06],
            "host 3 got a non-ARP frame of {n} bytes"
        );
        arps += 1;
    }
    assert!(arps >= 1, "the ARP broadcast did not reach host 3");
    assert_eq!(switch.ports()[2].counters().snapshot().tx_packets, arps);
}

#[test]
fn smoltcp_hosts_move_a_megabyte_over_tcp_intact() {
    let (_switch, mut hosts) = switch_with_hosts(2);
    let tcp_socket = || {
        tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; 65536]),
            tcp::SocketBuffer::new(vec![0; 65536]),
        )
    };
    let server = hosts[1].sockets.add(tcp_socket());
    hosts[1]
        .sockets
        .get_mut::<tcp::Socket>(server)
        .listen(7000)
        .expect("listen");
    let client = hosts[0].sockets.add(tcp_socket());
    {
        let Host { iface, sockets, .. } = &mut hosts[0];
        sockets
            .get_mut::<tcp::Socket>(client)
            .connect(iface.context(), (IpAddress::v4(10, 0, 0, 2), 7000), 49152)
            .expect("connect");
    }
    let total = 1 << 20;
    let data: Vec<u8> = (0..total).map(|i| (i * 31 % 251) as u8).collect();
    let mut sent = 0;
    let mut received = Vec::with_capacity(total);
    let ok = run_until(&mut hosts, |hosts| {
        let c = hosts[0].sockets.get_mut::<tcp::Socket>(client);
        if c.can_send() && sent < total {
            sent += c.send_slice(&data[sent..]).expect("send");
        }
        if sent == total && c.send_queue() == 0 {
            c.close();
        }
        let s = hosts[1].sockets.get_mut::<tcp::Socket>(server);
        while s.can_recv() {
            s.recv(|buf| {
                received.extend_from_slice(buf);
                (buf.len(), ())
            })
            .expect("recv");
        }
        received.len() == total
    });
    assert!(ok, "received {} of {total} bytes", received.len());
    assert!(received == data, "bytes differ");
}
