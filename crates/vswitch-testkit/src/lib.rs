//! Helpers shared by vswitch's tests and benchmarks.
//!
//! - [`require_root`]: privileged tests skip with a reason when not root, and fail instead when
//!   `VSWITCH_REQUIRE_PRIV=1` (as in CI).
//! - [`unique_name`]: names that parallel test runs can't collide on, within 15 bytes.
//! - [`Host`]: a namespace with one interface and an IPv4 address, deleted on drop.
//! - [`ping`], [`tcp_transfer`]: real traffic between kernel stacks, with checked results.
//! - [`read_pcap`]: a pcap file read back by an independent reader.
#![forbid(unsafe_code)]

use std::hash::Hasher;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

pub use vswitch_netns::{EchoOptions, EchoReport};
use vswitch_netns::{Netlink, Netns, NetnsError, NetnsGuard, Pinger};

/// True when the caller may run a privileged test. Otherwise prints why the test is skipped and
/// returns false, or panics when `VSWITCH_REQUIRE_PRIV=1` says skipping is not allowed.
pub fn require_root(test: &str) -> bool {
    if is_root() {
        return true;
    }
    let reason =
        format!("{test}: needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) for namespaces and TAPs");
    if std::env::var("VSWITCH_REQUIRE_PRIV").as_deref() == Ok("1") {
        panic!("{reason}, and VSWITCH_REQUIRE_PRIV=1 forbids skipping");
    }
    eprintln!("SKIPPED {reason}");
    false
}

/// True when this test may run on at least `n` CPUs. Otherwise prints why the test is skipped
/// and returns false, or panics when `VSWITCH_REQUIRE_PRIV=1` says skipping is not allowed (CI
/// machines have the CPUs the tests need, so a skip there hides a broken check).
pub fn require_cpus(test: &str, n: usize) -> bool {
    let cpus = std::thread::available_parallelism().map_or(1, |c| c.get());
    if cpus >= n {
        return true;
    }
    let reason = format!("{test}: needs {n} CPUs, this machine gives it {cpus}");
    if std::env::var("VSWITCH_REQUIRE_PRIV").as_deref() == Ok("1") {
        panic!("{reason}, and VSWITCH_REQUIRE_PRIV=1 forbids skipping");
    }
    eprintln!("SKIPPED {reason}");
    false
}

/// Whether the process runs with effective uid 0.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name unique to this process and call: `prefix` + pid + counter, at most 15 bytes (the
/// interface name limit), so tests running in parallel never collide.
pub fn unique_name(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = format!("{prefix}{}x{n}", std::process::id() % 100_000);
    assert!(
        name.len() <= 15,
        "{name} is longer than 15 bytes: use a shorter prefix"
    );
    name
}

/// A network namespace standing for one host: one interface with an IPv4 /24 address, loopback
/// up, IPv6 off (so no router solicitations or MLD reports add traffic the tests would count).
/// Dropping it deletes the namespace and whatever link lives only there.
#[derive(Debug)]
pub struct Host {
    /// The host's namespace.
    pub ns: NetnsGuard,
    /// Its interface.
    pub ifname: String,
    /// Its address.
    pub addr: Ipv4Addr,
}

impl Host {
    /// Makes a namespace, moves `ifname` (from the caller's namespace) into it, and configures it.
    pub fn with_link(ifname: &str, addr: Ipv4Addr) -> Result<Host, NetnsError> {
        let ns = Host::namespace()?;
        Netlink::open()?.move_to(ifname, &ns)?;
        Host::with_link_in(ns, ifname, addr)
    }

    /// A new namespace for a host whose interface is to be put there by someone else (a
    /// relayed TAP's switch): then [`Host::with_link_in`].
    pub fn namespace() -> Result<NetnsGuard, NetnsError> {
        NetnsGuard::create(&unique_name("vsh"))
    }

    /// Configures `ifname`, already in `ns`, as the host's interface.
    pub fn with_link_in(ns: NetnsGuard, ifname: &str, addr: Ipv4Addr) -> Result<Host, NetnsError> {
        ns.run(|| -> Result<(), NetnsError> {
            for path in ["all", "default", ifname] {
                let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{path}/disable_ipv6"), "1");
            }
            let mut nl = Netlink::open()?;
            nl.add_address(ifname, IpAddr::V4(addr), 24)?;
            nl.set_up(ifname)
        })??;
        Ok(Host {
            ns,
            ifname: ifname.to_owned(),
            addr,
        })
    }

    /// Waits (up to 5 s) until the host's interface sends: the kernel starts a link's queue a
    /// moment after its carrier comes on, and a probe sent before that is lost. Returns whether
    /// it is running.
    pub fn wait_running(&self) -> Result<bool, NetnsError> {
        wait_running(&self.ns, &self.ifname)
    }

    /// Turns IPv6 on for the host's interface (without duplicate address detection) and gives
    /// it `addr`/64; returns once a socket can use the address.
    pub fn add_ipv6(&self, addr: std::net::Ipv6Addr) -> Result<(), NetnsError> {
        self.ns.run(|| -> Result<(), NetnsError> {
            let conf = format!("/proc/sys/net/ipv6/conf/{}", self.ifname);
            let _ = std::fs::write(format!("{conf}/accept_dad"), "0");
            let _ = std::fs::write(format!("{conf}/router_solicitations"), "0");
            let _ = std::fs::write(format!("{conf}/disable_ipv6"), "0");
            Netlink::open()?.add_address(&self.ifname, IpAddr::V6(addr), 64)?;
            // Usable only once the kernel has the address ready (a moment after adding it, as
            // the link's IPv6 comes up): until then a socket can't take it as its source and a
            // first probe fails with "Cannot assign requested address".
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
            while std::net::UdpSocket::bind((addr, 0)).is_err()
                && std::time::Instant::now() < deadline
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Ok(())
        })?
    }

    /// Sets the MTU of the host's interface.
    pub fn set_mtu(&self, mtu: u32) -> Result<(), NetnsError> {
        self.ns
            .run(|| Netlink::open()?.set_mtu(&self.ifname, mtu))?
    }

    /// The MAC address of the host's interface, as `aa:bb:cc:dd:ee:ff`.
    pub fn mac(&self) -> Result<String, NetnsError> {
        let info = self.ns.run(|| Netlink::open()?.link(&self.ifname))??;
        let mac = info
            .mac
            .ok_or_else(|| NetnsError::LinkNotFound(self.ifname.clone()))?;
        Ok(mac.map(|b| format!("{b:02x}")).join(":"))
    }
}

/// Sends `count` echo requests from `from` to `to` (50 ms apart, 1 s timeout each) with our own
/// ICMP client, and reports exactly how many replies came back: assert
/// [`EchoReport::all_replied`] for "no loss", [`EchoReport::none_replied`] for "blocked".
pub fn ping(from: &Netns, to: impl Into<IpAddr>, count: u32) -> EchoReport {
    ping_with(
        from,
        to,
        EchoOptions {
            count,
            ..EchoOptions::default()
        },
    )
}

/// Like [`ping`], paced and sized by `options`.
pub fn ping_with(from: &Netns, to: impl Into<IpAddr>, options: EchoOptions) -> EchoReport {
    let to = to.into();
    let mut pinger = Pinger::open_in(from, to)
        .unwrap_or_else(|e| panic!("couldn't enter namespace {}: {e}", from.name()))
        .unwrap_or_else(|e| panic!("couldn't open an ICMP socket in {}: {e}", from.name()));
    pinger
        .run(&options)
        .unwrap_or_else(|e| panic!("pinging {to} from {}: {e}", from.name()))
}

/// The frames of a pcap file, read with an independent reader (`pcap-parser`), so a test checks
/// what the switch wrote against someone else's reading of the format.
pub fn read_pcap(path: &std::path::Path) -> PcapContents {
    let file =
        std::fs::File::open(path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    read_pcap_from(file, &path.display().to_string())
}

/// Like [`read_pcap`], from a stream (a pipe, say) until its end; `what` names it in panics.
pub fn read_pcap_from(input: impl io::Read, what: &str) -> PcapContents {
    use pcap_parser::traits::PcapReaderIterator;
    let path = std::path::Path::new(what);
    let mut reader = pcap_parser::LegacyPcapReader::new(65_536, input)
        .unwrap_or_else(|e| panic!("{} is no pcap file: {e:?}", path.display()));
    let mut contents = PcapContents::default();
    loop {
        match reader.next() {
            Ok((offset, block)) => {
                match block {
                    pcap_parser::PcapBlockOwned::LegacyHeader(header) => {
                        contents.linktype = Some(header.network.0);
                        contents.snaplen = header.snaplen;
                    }
                    pcap_parser::PcapBlockOwned::Legacy(packet) => {
                        contents.frames.push(PcapFrame {
                            timestamp: Duration::new(
                                u64::from(packet.ts_sec),
                                packet.ts_usec.saturating_mul(1000),
                            ),
                            original_len: packet.origlen,
                            data: packet.data.to_vec(),
                        });
                    }
                    pcap_parser::PcapBlockOwned::NG(_) => panic!("{}: pcapng", path.display()),
                }
                reader.consume(offset);
            }
            Err(pcap_parser::PcapError::Eof) => break,
            Err(pcap_parser::PcapError::Incomplete(_)) => reader
                .refill()
                .unwrap_or_else(|e| panic!("reading {}: {e:?}", path.display())),
            Err(e) => panic!("{}: malformed pcap: {e:?}", path.display()),
        }
    }
    contents
}

/// A pcap file as [`read_pcap`] read it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PcapContents {
    /// The link type of the file header (1 is Ethernet).
    pub linktype: Option<i32>,
    /// The file header's snapshot length.
    pub snaplen: u32,
    /// The records, in file order.
    pub frames: Vec<PcapFrame>,
}

/// One pcap record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcapFrame {
    /// When it was captured.
    pub timestamp: Duration,
    /// Its length on the wire.
    pub original_len: u32,
    /// The bytes captured.
    pub data: Vec<u8>,
}

/// Runs `ip -n NETNS ARGS` (iproute2, the tests' independent witness) and asserts it
/// succeeded.
pub fn ip_in(netns: &str, args: &str) {
    let status = std::process::Command::new("ip")
        .args(["-n", netns])
        .args(args.split_whitespace())
        .status()
        .expect("ip (iproute2)");
    assert!(status.success(), "ip -n {netns} {args}");
}

/// A child process a test started, stopped when the guard drops (also when the test panics):
/// SIGINT first, so the child can remove what it created, then SIGKILL after 10 s.
#[derive(Debug)]
pub struct ChildGuard(pub std::process::Child);

impl ChildGuard {
    /// Sends `signal` and waits up to 15 s for the child to exit; kills it and panics if it
    /// doesn't.
    pub fn stop(&mut self, signal: nix::sys::signal::Signal) -> std::process::ExitStatus {
        let _ = nix::sys::signal::kill(pid_of(&self.0), signal);
        match wait_until(&mut self.0, Duration::from_secs(15)) {
            Some(status) => status,
            None => {
                let _ = self.0.kill();
                let _ = self.0.wait();
                panic!("child {} did not stop on {signal}", self.0.id());
            }
        }
    }
}

fn pid_of(child: &std::process::Child) -> nix::unistd::Pid {
    nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX))
}

/// The child's exit status, if it exits within `limit`.
fn wait_until(
    child: &mut std::process::Child,
    limit: Duration,
) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            _ => return None,
        }
    }
}

impl std::ops::Deref for ChildGuard {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for ChildGuard {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = nix::sys::signal::kill(pid_of(&self.0), nix::sys::signal::Signal::SIGINT);
        if wait_until(&mut self.0, Duration::from_secs(10)).is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// How many TCP segments a namespace's stack dropped for a bad checksum a namespace's stack dropped for a bad checksum
/// (`Tcp: InCsumErrors` in /proc/net/snmp).
pub fn tcp_checksum_errors(ns: &Netns) -> u64 {
    let snmp = ns
        .run(|| std::fs::read_to_string("/proc/thread-self/net/snmp"))
        .expect("enter")
        .expect("read snmp");
    let mut tcp = snmp.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = (tcp.next().expect("header"), tcp.next().expect("values"));
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == "InCsumErrors")
        .and_then(|(_, v)| v.parse().ok())
        .expect("InCsumErrors")
}

/// What a [`tcp_transfer`] sent and received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transfer {
    /// Bytes written by the client.
    pub sent: u64,
    /// Bytes read by the server.
    pub received: u64,
    /// Hash of the bytes sent.
    pub sent_digest: u64,
    /// Hash of the bytes received.
    pub received_digest: u64,
}

/// Waits (up to 5 s) until link `ifname` in `ns` is operationally up ([`Host::wait_running`]).
pub fn wait_running(ns: &Netns, ifname: &str) -> Result<bool, NetnsError> {
    ns.run(|| Netlink::open()?.wait_running(ifname, Duration::from_secs(5)))?
}

/// Deterministic pseudo-random bytes (xorshift), so a transfer isn't a compressible pattern.
fn fill(buf: &mut [u8], state: &mut u64) {
    for chunk in buf.chunks_mut(8) {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
}

/// Streams `bytes` of pseudo-random data over TCP from a client in `client` to a server in
/// `server` listening on `server_addr:port`, and hashes both sides.
pub fn tcp_transfer(
    client: &Netns,
    server: &Netns,
    server_addr: impl Into<IpAddr>,
    port: u16,
    bytes: u64,
) -> io::Result<Transfer> {
    let listen = SocketAddr::new(server_addr.into(), port);
    let listener = server
        .run(|| TcpListener::bind(listen))
        .map_err(io::Error::other)??;
    let receiver = std::thread::spawn(move || -> io::Result<(u64, u64)> {
        let (mut stream, _) = listener.accept()?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut hasher = std::hash::DefaultHasher::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0u64;
        loop {
            let n = stream.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.write(&buf[..n]);
            total += n as u64;
        }
        Ok((total, hasher.finish()))
    });
    let mut stream = client
        .run(|| TcpStream::connect_timeout(&listen, Duration::from_secs(5)))
        .map_err(io::Error::other)??;
    stream.set_write_timeout(Some(Duration::from_secs(30)))?;
    let mut hasher = std::hash::DefaultHasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut sent = 0u64;
    while sent < bytes {
        let n = (bytes - sent).min(buf.len() as u64) as usize;
        fill(&mut buf[..n], &mut state);
        stream.write_all(&buf[..n])?;
        hasher.write(&buf[..n]);
        sent += n as u64;
    }
    stream.shutdown(std::net::Shutdown::Write)?;
    drop(stream);
    let (received, received_digest) = receiver
        .join()
        .map_err(|_| io::Error::other("receiver thread panicked"))??;
    Ok(Transfer {
        sent,
        received,
        sent_digest: hasher.finish(),
        received_digest,
    })
}

/// The switch ends of the relays a switch made for TAP `tap` (`tap:NAME@NS`), found by the
/// alias they carry.
pub fn relays_of(tap: &str) -> Vec<String> {
    let wanted = format!("relay for TAP {tap},");
    std::fs::read_dir("/sys/class/net")
        .expect("sysfs")
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            let alias = std::fs::read_to_string(format!("/sys/class/net/{name}/ifalias")).ok()?;
            alias.contains(&wanted).then_some(name)
        })
        .collect()
}

/// How a [`SwitchLab`] joins its hosts to the switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attach {
    /// A TAP of the switch moved into each host, with or without offloads.
    Tap {
        /// Virtio-net headers and TSO on the TAPs.
        offload: bool,
    },
    /// A veth pair per host, the outer end a `dev:` port of the switch (packet socket).
    Veth,
    /// A TAP (with offloads) that the switch puts in the host's namespace with a relay
    /// ([`vswitch_datapath::RelayedTap`], `tap:NAME@NS`), so the fast path carries it.
    RelayedTap,
}

/// A switch with one [`Host`] namespace per port, addressed 10.77.0.1, .2, ...
///
/// Dropping it stops the switch and deletes the hosts' namespaces, and with them the TAPs or
/// veth pairs.
#[derive(Debug)]
pub struct SwitchLab {
    /// The running switch; port `i` serves `hosts[i]`.
    pub switch: vswitch_datapath::Switch,
    /// Outer veth ends, deleted before the hosts: a namespace's links disappear only
    /// asynchronously after it, deleting a veth end removes the pair at once.
    _links: Vec<vswitch_netns::LinkGuard>,
    /// The hosts.
    pub hosts: Vec<Host>,
}

impl SwitchLab {
    /// Starts a switch with `config` and `n` hosts attached as `attach` says.
    pub fn new(
        n: usize,
        config: vswitch_datapath::SwitchConfig,
        attach: Attach,
    ) -> Result<SwitchLab, Box<dyn std::error::Error>> {
        SwitchLab::with_attachments(config, &vec![attach; n])
    }

    /// Starts a switch with `config` and a host per entry of `attachments`, host `i` attached as
    /// `attachments[i]` says (so one lab can mix ports with and without offloads).
    pub fn with_attachments(
        config: vswitch_datapath::SwitchConfig,
        attachments: &[Attach],
    ) -> Result<SwitchLab, Box<dyn std::error::Error>> {
        let mut ports: Vec<(String, Box<dyn vswitch_datapath::PortDevice>)> = Vec::new();
        let mut inner = Vec::new();
        let mut links = Vec::new();
        // Namespaces made before their host's interface (relayed TAPs), by host.
        let mut made: Vec<Option<NetnsGuard>> = Vec::new();
        for &attach in attachments {
            let name = unique_name("vsp");
            made.push(None);
            let device: Box<dyn vswitch_datapath::PortDevice> = match attach {
                Attach::Tap { offload } => {
                    inner.push(name.clone());
                    Box::new(vswitch_datapath::Tap::open_queues(
                        &name,
                        offload,
                        config.threads,
                    )?)
                }
                Attach::RelayedTap => {
                    let ns = Host::namespace()?;
                    let tap = vswitch_datapath::Tap::open_queues(&name, true, config.threads)?;
                    let relayed = vswitch_datapath::RelayedTap::open(
                        tap,
                        &ns,
                        config.threads,
                        config.steering,
                    )
                    .map_err(|(_, e)| e)?;
                    inner.push(name.clone());
                    if let Some(slot) = made.last_mut() {
                        *slot = Some(ns);
                    }
                    Box::new(relayed)
                }
                Attach::Veth => {
                    let host_end = unique_name("vsv");
                    Netlink::open()?.add_veth(&name, &host_end, None)?;
                    links.push(vswitch_netns::LinkGuard::new(&name));
                    inner.push(host_end);
                    Box::new(vswitch_datapath::PacketPort::open_queues(
                        &name,
                        config.threads,
                        config.steering,
                    )?)
                }
            };
            ports.push((name, device));
        }
        let switch = vswitch_datapath::Switch::start(config, ports)?;
        let mut lab = SwitchLab {
            switch,
            _links: links,
            hosts: Vec::new(),
        };
        for (i, (name, ns)) in inner.iter().zip(made).enumerate() {
            let addr = Ipv4Addr::new(10, 77, 0, u8::try_from(i + 1)?);
            lab.hosts.push(match ns {
                Some(ns) => Host::with_link_in(ns, name, addr)?,
                None => Host::with_link(name, addr)?,
            });
        }
        // Usable means running: a first probe sent before the kernel starts a link's queue
        // is lost.
        for host in &lab.hosts {
            host.wait_running()?;
        }
        Ok(lab)
    }

    /// Counters of the switch port serving host `i`.
    pub fn port_stats(&self, i: usize) -> vswitch_core::PortStats {
        self.switch.sync_counters();
        self.switch.ports()[i].counters().snapshot()
    }
}
