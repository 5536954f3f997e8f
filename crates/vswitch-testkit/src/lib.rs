//! Helpers shared by vswitch's tests and benchmarks.
//!
//! - [`require_root`]: privileged tests skip with a reason when not root, and fail instead when
//!   `VSWITCH_REQUIRE_PRIV=1` (as in CI).
//! - [`unique_name`]: names that parallel test runs can't collide on, within 15 bytes.
//! - [`Host`]: a namespace with one interface and an IPv4 address, deleted on drop.
//! - [`ping`], [`tcp_transfer`]: real traffic between kernel stacks, with checked results.
#![forbid(unsafe_code)]

use std::hash::Hasher;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use vswitch_netns::{Netlink, Netns, NetnsError, NetnsGuard};

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
        let ns = NetnsGuard::create(&unique_name("vsh"))?;
        Netlink::open()?.move_to(ifname, &ns)?;
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

    /// Turns IPv6 on for the host's interface (without duplicate address detection, so the
    /// address works at once) and gives it `addr`/64.
    pub fn add_ipv6(&self, addr: std::net::Ipv6Addr) -> Result<(), NetnsError> {
        self.ns.run(|| -> Result<(), NetnsError> {
            let conf = format!("/proc/sys/net/ipv6/conf/{}", self.ifname);
            let _ = std::fs::write(format!("{conf}/accept_dad"), "0");
            let _ = std::fs::write(format!("{conf}/router_solicitations"), "0");
            let _ = std::fs::write(format!("{conf}/disable_ipv6"), "0");
            Netlink::open()?.add_address(&self.ifname, IpAddr::V6(addr), 64)
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

/// Sends `count` pings from `from` to `to` (0.05 s apart, 1 s timeout each); true if every
/// reply came back.
pub fn ping(from: &Netns, to: Ipv4Addr, count: u32) -> bool {
    ping_with(from, to, count, &[])
}

/// Like [`ping`], with extra `ping` arguments (e.g. `-s 8000`, `-M do`).
pub fn ping_with(from: &Netns, to: Ipv4Addr, count: u32, extra: &[&str]) -> bool {
    let target = to.to_string();
    let count = count.to_string();
    let result = from.run(|| {
        Command::new("ping")
            .args(["-q", "-c", &count, "-i", "0.05", "-W", "1"])
            .args(extra)
            .arg(&target)
            .output()
    });
    match result {
        Ok(Ok(out)) => out.status.success(),
        Ok(Err(e)) => panic!("couldn't run ping (install iputils-ping): {e}"),
        Err(e) => panic!("couldn't enter namespace: {e}"),
    }
}

/// The frames of a pcap file as `tcpdump -n -r` prints them, one per line (tests only).
pub fn tcpdump_read(path: &std::path::Path) -> String {
    let out = Command::new("tcpdump")
        .args(["-n", "-r"])
        .arg(path)
        .output()
        .expect("couldn't run tcpdump (apt-get install tcpdump)");
    assert!(
        out.status.success(),
        "tcpdump -r {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
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
        for &attach in attachments {
            let name = unique_name("vsp");
            let device: Box<dyn vswitch_datapath::PortDevice> = match attach {
                Attach::Tap { offload } => {
                    inner.push(name.clone());
                    Box::new(vswitch_datapath::Tap::open_queues(
                        &name,
                        offload,
                        config.threads,
                    )?)
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
        for (i, name) in inner.iter().enumerate() {
            let addr = Ipv4Addr::new(10, 77, 0, u8::try_from(i + 1)?);
            lab.hosts.push(Host::with_link(name, addr)?);
        }
        Ok(lab)
    }

    /// Counters of the switch port serving host `i`.
    pub fn port_stats(&self, i: usize) -> vswitch_core::PortStats {
        self.switch.ports()[i].counters().snapshot()
    }
}
