//! VXLAN across two "machines", as root: two namespaces joined by a veth pair are the underlay;
//! on each, a host joins (1) a kernel bridge with a kernel vxlan device, (2) vswitch with a
//! VXLAN port (its socket in the machine's namespace) and a `dev:` port, or (3) the same with
//! the port's tunnel carried by a Linux vxlan device (`carrier=kernel`, the fast path on). TCP
//! with 1 and 4 streams and ping between the hosts, the candidates in a new random order each round
//! after a discarded warm-up round; each figure is the median over the rounds of vswitch's
//! ratio to the kernel pair's in the same round (targets: one TCP stream >= 0.7x, ping p50 <=
//! 2x).
//!
//! `cargo bench --bench vxlan` (needs iperf3). `VSWITCH_E2E_ROUNDS` (default 5) and
//! `VSWITCH_E2E_SECONDS` (default 3) as for `e2e`; `VSWITCH_VXLAN_BUSY_POLL=MICROS` gives the
//! switches `--busy-poll`. Writes a Markdown table to stdout and
//! `benches/results/DATE-vxlan.md`.

#[path = "common/iperf.rs"]
#[allow(dead_code)] // the UDP and byte counts are for `e2e`
mod iperf;

use std::net::Ipv4Addr;
use std::process::Command;

use iperf::{BoxResult, env_u64 as env, median, rtt, tcp};
use vswitch_datapath::{
    KernelVxlanPort, PacketPort, PortDevice, Switch, SwitchConfig, VxlanConfig, VxlanPort,
};
use vswitch_netns::{Netlink, NetnsGuard};
use vswitch_testkit::{Host, ip_in, unique_name};

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 100, 0, 2);

/// Two machines with a host each, kept alive while measured.
struct Pair {
    hosts: Vec<Host>,
    _switches: Vec<Switch>,
    _machines: Vec<NetnsGuard>,
}

/// The underlay: machines at 10.99.0.1 and .2 on a veth pair.
fn machines() -> BoxResult<Vec<NetnsGuard>> {
    let (m1, m2) = (
        NetnsGuard::create(&unique_name("vbm"))?,
        NetnsGuard::create(&unique_name("vbm"))?,
    );
    m1.run(|| Netlink::open()?.add_veth("u0", "u0", Some(&m2)))??;
    for (i, m) in [&m1, &m2].into_iter().enumerate() {
        ip_in(m.name(), &format!("addr add 10.99.0.{}/24 dev u0", i + 1));
        ip_in(m.name(), "link set u0 up");
    }
    Ok(vec![m1, m2])
}

fn host_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 100, 0, i as u8 + 1)
}

fn kernel() -> BoxResult<Pair> {
    let machines = machines()?;
    let mut hosts = Vec::new();
    for (i, m) in machines.iter().enumerate() {
        let (local, remote) = (i + 1, 2 - i);
        for cmd in [
            format!(
                "link add vx0 type vxlan id 42 local 10.99.0.{local} remote 10.99.0.{remote} dstport 4789"
            ),
            "link add br0 type bridge".into(),
            "link set vx0 master br0".into(),
            "link set vx0 up".into(),
            "link set br0 up".into(),
        ] {
            ip_in(m.name(), &cmd);
        }
        let inner = unique_name("vbh");
        Netlink::open()?.add_veth(&inner, "hp", Some(m))?;
        ip_in(m.name(), "link set hp master br0");
        ip_in(m.name(), "link set hp up");
        let host = Host::with_link(&inner, host_addr(i))?;
        host.set_mtu(1450)?;
        hosts.push(host);
    }
    Ok(Pair {
        hosts,
        _switches: Vec::new(),
        _machines: machines,
    })
}

/// Two vswitches, each with a veth host on a `dev:` port and a VXLAN port carried by `carrier`
/// (`switch`: the switch's own sockets; `kernel`: a Linux vxlan device, with the fast path).
fn vswitch(carrier: &str) -> BoxResult<Pair> {
    let machines = machines()?;
    let mut hosts = Vec::new();
    let mut switches = Vec::new();
    for (i, m) in machines.iter().enumerate() {
        let (local, remote) = (i + 1, 2 - i);
        let (inner, outer, vx) = (unique_name("vbh"), unique_name("vbp"), unique_name("vbx"));
        Netlink::open()?.add_veth(&inner, &outer, None)?;
        // The tunnel's MTU on both ends of the host's link (the fast path never takes frames
        // to a port of a smaller MTU).
        Netlink::open()?.set_mtu(&outer, 1450)?;
        let config = VxlanConfig::parse(&format!(
            "{vx}:vni=42,local=10.99.0.{local},remote=10.99.0.{remote},netns={},carrier={carrier}",
            m.name()
        ))?;
        let vxlan: Box<dyn PortDevice> = if carrier == "kernel" {
            Box::new(KernelVxlanPort::open(&config, 1, Default::default())?)
        } else {
            Box::new(VxlanPort::open(config)?)
        };
        let config_sw = SwitchConfig {
            threads: 1,
            busy_poll: busy_poll(),
            ..SwitchConfig::default()
        };
        let ports: Vec<(String, Box<dyn PortDevice>)> = vec![
            (outer.clone(), Box::new(PacketPort::open(&outer)?)),
            (vx, vxlan),
        ];
        switches.push(Switch::start(config_sw, ports)?);
        let host = Host::with_link(&inner, host_addr(i))?;
        host.set_mtu(1450)?;
        hosts.push(host);
    }
    Ok(Pair {
        hosts,
        _switches: switches,
        _machines: machines,
    })
}

/// `VSWITCH_VXLAN_BUSY_POLL` (microseconds, default 0): the switches' `--busy-poll`.
fn busy_poll() -> std::time::Duration {
    std::time::Duration::from_micros(env("VSWITCH_VXLAN_BUSY_POLL", 0))
}

#[derive(Default)]
struct Samples {
    tcp1: Vec<f64>,
    tcp4: Vec<f64>,
    rtt_p50: Vec<f64>,
}

fn measure(pair: &Pair, secs: u64, into: &mut Samples) -> BoxResult<()> {
    let (client, server) = (&pair.hosts[0].ns, &pair.hosts[1].ns);
    let mut srv = iperf::iperf_server(server)?;
    let result = (|| -> BoxResult<()> {
        into.tcp1.push(tcp(client, SERVER, 1, secs)?.gbit);
        into.tcp4.push(tcp(client, SERVER, 4, secs)?.gbit);
        into.rtt_p50.push(rtt(client, SERVER)?.0);
        Ok(())
    })();
    let _ = srv.kill();
    let _ = srv.wait();
    result
}

fn main() -> BoxResult<()> {
    if !vswitch_testkit::is_root() {
        eprintln!("vxlan benchmark skipped: needs root (namespaces, vxlan devices)");
        return Ok(());
    }
    if Command::new("iperf3").arg("--version").output().is_err() {
        return Err("vxlan benchmark needs iperf3 (apt-get install iperf3)".into());
    }
    let (rounds, secs) = (env("VSWITCH_E2E_ROUNDS", 5), env("VSWITCH_E2E_SECONDS", 3));
    let names = [
        "kernel bridge + kernel vxlan",
        "vswitch + VXLAN port (carrier=switch)",
        "vswitch + VXLAN port (carrier=kernel)",
    ];
    let pairs = [kernel()?, vswitch("switch")?, vswitch("kernel")?];
    let mut samples = [Samples::default(), Samples::default(), Samples::default()];
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64 | 1);
    for round in 0..=rounds {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        // A random order each round (the six permutations of three).
        let order = [
            [0, 1, 2],
            [0, 2, 1],
            [1, 0, 2],
            [1, 2, 0],
            [2, 0, 1],
            [2, 1, 0],
        ][(seed % 6) as usize];
        for i in order {
            eprintln!("round {round}/{rounds}: {}", names[i]);
            let mut scratch = Samples::default();
            let into = if round == 0 {
                &mut scratch
            } else {
                &mut samples[i]
            };
            measure(&pairs[i], secs, into)?;
        }
    }
    let ratio =
        |a: &[f64], b: &[f64]| median(&a.iter().zip(b).map(|(x, y)| x / y).collect::<Vec<_>>());
    let (k, v, kv) = (&samples[0], &samples[1], &samples[2]);
    let mut md = format!(
        "# VXLAN between two machines, {rounds} paired rounds of {secs} s\n\nHosts on veth `dev:` ports; ratios are medians of the per-round ratios to the kernel pair of the same round.\n\n| figure | kernel pair | vswitch, carrier=switch | ratio | vswitch, carrier=kernel | ratio | target |\n|---|---|---|---|---|---|---|\n"
    );
    for (figure, kk, vv, kvv, target) in [
        (
            "TCP, 1 stream (Gbit/s)",
            &k.tcp1,
            &v.tcp1,
            &kv.tcp1,
            ">= 0.7",
        ),
        ("TCP, 4 streams (Gbit/s)", &k.tcp4, &v.tcp4, &kv.tcp4, ""),
        ("ping p50 (µs)", &k.rtt_p50, &v.rtt_p50, &kv.rtt_p50, "<= 2"),
    ] {
        md.push_str(&format!(
            "| {figure} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {target} |\n",
            median(kk),
            median(vv),
            ratio(vv, kk),
            median(kvv),
            ratio(kvv, kk)
        ));
    }
    print!("{md}");
    let date = Command::new("date").arg("+%F").output()?;
    let date = String::from_utf8_lossy(&date.stdout).trim().to_owned();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/results");
    std::fs::create_dir_all(dir)?;
    std::fs::write(format!("{dir}/{date}-vxlan.md"), md)?;
    Ok(())
}
