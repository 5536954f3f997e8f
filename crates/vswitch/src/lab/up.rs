//! `vswitch lab up`: makes a [`Topology`] real, runs its switches until a signal, removes it all.
//!
//! One process hosts all of a lab's switches: one command brings the lab up and one Ctrl-C (or
//! `lab down`) takes it down, and nothing can be half-running. Each switch is still its own
//! `Switch` with its own control socket (`LAB-SWITCH`), table, counters and captures. Two
//! switches are joined by a veth pair between `dev:` ports of each (the fast path's kind), so a
//! link between switches is a real link that `ip`, captures and impairments all see.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use vswitch_datapath::{Hook, PortSpec, Switch, SwitchConfig};
use vswitch_netns::{LinkGuard, Netlink, NetnsGuard};

use super::state::{self, LabState};
use super::topology::{Attach, End, SwitchNode, Topology};
use crate::control::{ControlServer, NameLock};
use crate::report;
use crate::settings::Settings;

/// Removes the state file when dropped: a lab that failed or stopped leaves none.
struct StateGuard(String);

impl Drop for StateGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(state::path(&self.0));
    }
}

/// Brings `topology` up with `base` as every switch's defaults (and offloads on TAPs and packet
/// sockets if `offload`), and runs it until SIGINT or SIGTERM. With `check`, pings all pairs
/// once it is up.
pub fn up(topology: &Topology, base: &SwitchConfig, offload: bool, check: bool) -> Result<()> {
    let started = Instant::now();
    let name = &topology.name;
    if state::path(name).exists() {
        bail!(
            "lab {name} exists (a running or crashed lab); remove it with `vswitch lab down --name {name}`"
        );
    }
    // The lab's own name, then each switch's: taken before anything is made, so a refused
    // start leaves nothing behind.
    let lab_lock = NameLock::acquire(name)?;
    let mut switch_locks = Vec::new();
    for s in &topology.switches {
        switch_locks.push(NameLock::acquire(&topology.switch_name(&s.name))?);
    }
    let mut signals =
        Signals::new([SIGINT, SIGTERM]).context("couldn't install signal handlers")?;
    make_room_for_neighbours(topology)?;

    // Guards first: whatever fails below, dropping them (last) removes what was made.
    let mut namespaces: HashMap<&str, NetnsGuard> = HashMap::new();
    let mut link_guards: Vec<LinkGuard> = Vec::new();
    for host in &topology.hosts {
        let ns = NetnsGuard::create(&topology.netns(&host.name))?;
        namespaces.insert(&host.name, ns);
    }
    let mut netlink = Netlink::open()?;
    let mut ports = make_links(topology, &namespaces, &mut netlink, &mut link_guards)?;

    // The switches, each with its control socket.
    let mut switches: Vec<(String, Arc<Switch>)> = Vec::new();
    let mut controls = Vec::new();
    for (s, lock) in topology.switches.iter().zip(switch_locks) {
        let specs = ports.remove(s.name.as_str()).unwrap_or_default();
        let (switch, control) = start_switch(topology, s, base, offload, specs, lock)?;
        controls.push(control);
        switches.push((s.name.clone(), switch));
    }
    apply_link_policies(topology, &switches)?;

    configure_hosts(topology, &namespaces, &mut netlink)?;

    // "Up" means usable: a link sends only once the kernel started its queue, a moment after
    // its carrier came on; a probe sent before that is lost.
    wait_for_links(topology, &namespaces)?;

    let lab = LabState::of(topology, std::process::id());
    state::write(&lab)?;
    let _state_guard = StateGuard(name.clone());

    for host in &topology.hosts {
        for command in &host.run {
            let status = namespaces[host.name.as_str()]
                .run(|| {
                    std::process::Command::new("sh")
                        .arg("-c")
                        .arg(command)
                        .status()
                })?
                .with_context(|| format!("host {}: couldn't run {command:?}", host.name))?;
            if !status.success() {
                bail!(
                    "host {}: `{command}` exited with {status}; the lab is removed",
                    host.name
                );
            }
        }
    }

    outln!(
        "lab {name}: {} via {}, up in {:.2} s",
        topology.summary(),
        topology.attach,
        started.elapsed().as_secs_f64()
    );
    for h in &lab.hosts {
        outln!(
            "  {:<16} {:<28} ip netns exec {} ...",
            h.netns,
            h.addresses.join(" "),
            h.netns
        );
    }
    for (s, (_, switch)) in lab.switches.iter().zip(&switches) {
        let fast = switch.fast_path_ports();
        outln!(
            "  switch {:<9} vswitch stats --name {}{}",
            s.name,
            s.control,
            if fast.is_empty() {
                String::new()
            } else {
                format!("   (fast path: {})", fast.join(","))
            }
        );
    }
    if check {
        let result = super::check::run(&lab)?;
        out!("{}", result.matrix());
        if result.failures() > 0 {
            eprintln!("lab: {} pairs can't reach each other", result.failures());
        }
    }
    outln!(
        "lab {name} is up; `vswitch lab show --name {name}` shows it; Ctrl-C or `vswitch lab down --name {name}` tears it down"
    );
    let _ = signals.forever().next();
    drop(controls);
    for (sname, switch) in &switches {
        switch.stop();
        outln!("switch {sname}:");
        out!("{}", report::render(&switch.stats()));
    }
    drop(switches);
    drop(link_guards);
    drop(namespaces);
    drop(lab_lock);
    outln!("lab {name}: removed");
    Ok(())
}

/// Makes every link of the lab: veth pairs (their switch ends in this namespace, quiet and up)
/// or, for TAP and TUN ends, the spec of the device the switch will create. Returns each
/// switch's ports in link order.
fn make_links<'t>(
    topology: &'t Topology,
    namespaces: &HashMap<&str, NetnsGuard>,
    netlink: &mut Netlink,
    link_guards: &mut Vec<LinkGuard>,
) -> Result<HashMap<&'t str, Vec<PortSpec>>> {
    let mut ports: HashMap<&str, Vec<PortSpec>> = HashMap::new();
    for i in 0..topology.links.len() {
        let mtu = topology.link_mtu(i);
        match topology.ends(i) {
            (
                End::Switch {
                    switch: sa,
                    port: pa,
                },
                End::Switch {
                    switch: sb,
                    port: pb,
                },
            ) => {
                netlink.add_veth(&pa, &pb, None)?;
                link_guards.push(LinkGuard::new(&pa));
                for (switch, port) in [(sa, pa), (sb, pb)] {
                    if let Some(mtu) = mtu {
                        netlink.set_mtu(&port, mtu)?;
                    }
                    quiet(&port)?;
                    netlink.set_up(&port)?;
                    let switch = topology
                        .switches
                        .iter()
                        .find(|s| s.name == switch)
                        .expect("validated");
                    ports
                        .entry(&switch.name)
                        .or_default()
                        .push(PortSpec::Dev(port));
                }
            }
            (End::Host { host, ifname }, End::Switch { switch, port })
            | (End::Switch { switch, port }, End::Host { host, ifname }) => {
                let switch = topology
                    .switches
                    .iter()
                    .find(|s| s.name == switch)
                    .expect("validated");
                let tun = topology.links[i].tun;
                match topology.attach {
                    // The switch's TUN port stands for the host's addresses on that link; the
                    // TUN itself is moved into the host below.
                    _ if tun => {
                        let host_node = topology
                            .hosts
                            .iter()
                            .find(|h| h.name == host)
                            .expect("validated");
                        let k = topology
                            .host_links(&host)
                            .iter()
                            .position(|(j, _)| *j == i)
                            .expect("the host's link");
                        let addresses = topology
                            .interface_addresses(host_node, k, i)
                            .iter()
                            .map(|a| (a.addr, a.prefix))
                            .collect();
                        ports.entry(&switch.name).or_default().push(PortSpec::Tun(
                            vswitch_datapath::TunConfig {
                                name: port,
                                addresses,
                            },
                        ));
                    }
                    Attach::Veth => {
                        let ns = &namespaces[host.as_str()];
                        netlink.add_veth(&port, &ifname, Some(ns))?;
                        link_guards.push(LinkGuard::new(&port));
                        if let Some(mtu) = mtu {
                            netlink.set_mtu(&port, mtu)?;
                        }
                        quiet(&port)?;
                        netlink.set_up(&port)?;
                        ports
                            .entry(&switch.name)
                            .or_default()
                            .push(PortSpec::Dev(port));
                    }
                    // The switch creates the TAP in the host's namespace, relayed where the
                    // fast path runs (`tap:NAME@NS`); it is renamed there below.
                    Attach::Tap => ports.entry(&switch.name).or_default().push(PortSpec::Tap(
                        vswitch_datapath::TapSpec {
                            name: port,
                            netns: Some(namespaces[host.as_str()].name().to_owned()),
                        },
                    )),
                }
            }
            // A cable between two hosts: made from inside the first, its peer in the second.
            (
                End::Host {
                    host: ha,
                    ifname: ia,
                },
                End::Host {
                    host: hb,
                    ifname: ib,
                },
            ) => {
                let (na, nb) = (&namespaces[ha.as_str()], &namespaces[hb.as_str()]);
                na.run(|| Netlink::open()?.add_veth(&ia, &ib, Some(nb)))??;
            }
        }
    }
    Ok(ports)
}

/// Starts switch `s` of the lab on `specs` (and its extra ports and own addresses), with its
/// control socket under the name `lock` holds.
fn start_switch(
    topology: &Topology,
    s: &SwitchNode,
    base: &SwitchConfig,
    offload: bool,
    mut specs: Vec<PortSpec>,
    lock: NameLock,
) -> Result<(Arc<Switch>, ControlServer)> {
    let mut config = base.clone();
    if let Some(v) = s.options.ageing_time {
        config.table.ageing_time = Duration::from_secs(v);
    }
    if let Some(v) = s.options.threads {
        config.threads = usize::from(v);
    }
    if let Some(v) = s.options.datapath {
        config.datapath = v;
    }
    if let Some(v) = s.options.max_macs {
        config.table.capacity = v;
    }
    for extra in &s.ports {
        specs.push(
            extra
                .parse()
                .with_context(|| format!("switch {}: port {extra}", s.name))?,
        );
    }
    let mut settings = Settings::new(topology.switch_name(&s.name), config, offload);
    settings.ports.specs = specs;
    settings.addresses = s.addresses.iter().map(ToString::to_string).collect();
    settings
        .start(lock)
        .with_context(|| format!("switch {}", s.name))
}

/// Impairments and VLANs on the switch ends of each link. A direction leaving a switch is its
/// port's egress; a direction from a host is the switch port's ingress.
fn apply_link_policies(topology: &Topology, switches: &[(String, Arc<Switch>)]) -> Result<()> {
    let switch_of = |name: &str| -> &Arc<Switch> {
        &switches.iter().find(|(n, _)| n == name).expect("started").1
    };

    for (i, link) in topology.links.iter().enumerate() {
        let (a, b) = topology.ends(i);
        for (from, to, imp) in [(&a, &b, &link.a_to_b), (&b, &a, &link.b_to_a)] {
            let Some(stages) = imp.pipeline() else {
                continue;
            };
            let (switch, port, hook) = match (from, to) {
                (End::Switch { switch, port }, _) => (switch, port, Hook::Egress),
                (_, End::Switch { switch, port }) => (switch, port, Hook::Ingress),
                _ => unreachable!("validated: a link with impairments has a switch end"),
            };
            switch_of(switch)
                .set_pipeline(port, hook, &stages)
                .with_context(|| format!("{}: link {} -- {}", link.origin, link.a, link.b))?;
        }
        for end in [&a, &b] {
            if let End::Switch { switch, port } = end
                && let Some(mode) = link.vlan.get(switch)
            {
                switch_of(switch)
                    .set_vlan(port, mode.clone())
                    .with_context(|| {
                        format!("{}: link {} -- {}: vlan", link.origin, link.a, link.b)
                    })?;
            }
        }
    }
    Ok(())
}

/// Each host's interfaces (moving TAPs and TUNs in), MACs, MTUs, addresses, routes, gateways
/// and forwarding.
fn configure_hosts(
    topology: &Topology,
    namespaces: &HashMap<&str, NetnsGuard>,
    netlink: &mut Netlink,
) -> Result<()> {
    for host in &topology.hosts {
        let ns = &namespaces[host.name.as_str()];
        let links = topology.host_links(&host.name);
        for (k, (i, ifname)) in links.iter().enumerate() {
            let (a, b) = topology.ends(*i);
            let switch_port = [a, b].into_iter().find_map(|e| match e {
                End::Switch { port, .. } => Some(port),
                End::Host { .. } => None,
            });
            let moved = topology.attach == Attach::Tap || topology.links[*i].tun;
            if let (true, Some(port)) = (moved, switch_port) {
                // (A TAP is there already: its switch put it there.)
                if netlink.link_exists(&port)? {
                    netlink.move_to(&port, ns)?;
                }
                ns.run(|| Netlink::open()?.rename(&port, ifname))??;
            }
            let addresses = topology.interface_addresses(host, k, *i);
            let mtu = topology.link_mtu(*i);
            let mac = host.mac.filter(|_| k == 0);
            ns.run(|| -> Result<()> {
                let mut nl = Netlink::open()?;
                if let Some(mac) = mac {
                    nl.set_mac(ifname, mac.0)?;
                }
                if let Some(mtu) = mtu {
                    nl.set_mtu(ifname, mtu)?;
                }
                if addresses.iter().any(|a| a.addr.is_ipv6()) {
                    // Usable at once: a lab's addresses are unique by construction.
                    let dad = format!("/proc/sys/net/ipv6/conf/{ifname}/accept_dad");
                    std::fs::write(&dad, "0").with_context(|| format!("writing {dad}"))?;
                }
                for a in &addresses {
                    nl.add_address(ifname, a.addr, a.prefix)?;
                }
                nl.set_up(ifname)?;
                Ok(())
            })?
            .with_context(|| format!("host {}: {ifname}", host.name))?;
        }
        ns.run(|| -> Result<()> {
            let mut nl = Netlink::open()?;
            for route in &host.routes {
                nl.add_route(route.dst.addr, route.dst.prefix, route.via)?;
            }
            for gw in &host.gateways {
                nl.add_default_route(*gw)?;
            }
            if host.forward {
                set_forwarding()?;
            }
            Ok(())
        })?
        .with_context(|| format!("host {}", host.name))?;
    }
    Ok(())
}

/// The kernel's neighbour (ARP, NDP) tables are shared by all namespaces, and their limits
/// (`gc_thresh1..3`, 128/512/1024 by default, settable only in the first namespace) are soon
/// reached when every host of a lab talks to every other: new entries then fail ("neighbor
/// table overflow") and packets are dropped. As mininet does, raise the limits (never lower
/// them) to fit a full mesh of the lab, and say so.
fn make_room_for_neighbours(topology: &Topology) -> Result<()> {
    let hosts = topology.hosts.len();
    let stations: usize = topology.switches.iter().map(|s| s.addresses.len()).sum();
    let needed = hosts * (hosts + stations);
    for family in ["ipv4", "ipv6"] {
        for (n, factor) in [(1, 1), (2, 2), (3, 4)] {
            let path = format!("/proc/sys/net/{family}/neigh/default/gc_thresh{n}");
            let current: usize = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {path}"))?
                .trim()
                .parse()
                .with_context(|| format!("reading {path}"))?;
            let want = needed * factor;
            if current < want && needed > 128 {
                std::fs::write(&path, want.to_string())
                    .with_context(|| format!("raising {path} to {want}"))?;
                tracing::info!(%path, from = current, to = want, "raised the kernel's neighbour table limit for the lab");
            }
        }
    }
    Ok(())
}

/// No IPv6 on a switch's end of a link: the first namespace's own stack would otherwise send
/// router solicitations and MLD reports into the switch through it.
fn quiet(port: &str) -> Result<()> {
    let path = format!("/proc/sys/net/ipv6/conf/{port}/disable_ipv6");
    std::fs::write(&path, "1").with_context(|| format!("writing {path}"))
}

/// Waits (up to 5 s per link) until every link end of the lab is operationally up, and warns
/// about any that isn't.
fn wait_for_links(topology: &Topology, namespaces: &HashMap<&str, NetnsGuard>) -> Result<()> {
    let limit = std::time::Duration::from_secs(5);
    let mut root = Netlink::open()?;
    for i in 0..topology.links.len() {
        let (a, b) = topology.ends(i);
        for end in [a, b] {
            let (name, running) = match end {
                // (A TAP moved into its host is waited for there, as the host's end.)
                End::Switch { port, .. } if root.link_exists(&port)? => {
                    let running = root.wait_running(&port, limit)?;
                    (port, running)
                }
                End::Switch { .. } => continue,
                End::Host { host, ifname } => {
                    let running = namespaces[host.as_str()]
                        .run(|| Netlink::open()?.wait_running(&ifname, limit))??;
                    (format!("{host}:{ifname}"), running)
                }
            };
            if !running {
                tracing::warn!(link = %name, "not operationally up after 5 s");
            }
        }
    }
    Ok(())
}

/// IPv4 and IPv6 forwarding on in the calling thread's namespace (`/proc/sys/net` answers for
/// the namespace of the thread that opens it).
fn set_forwarding() -> Result<()> {
    for path in [
        "/proc/sys/net/ipv4/ip_forward",
        "/proc/sys/net/ipv6/conf/all/forwarding",
    ] {
        std::fs::write(path, "1").with_context(|| format!("writing {path}"))?;
    }
    Ok(())
}

/// What `lab check` pings of a node: its first IPv4 and its first IPv6 address.
pub fn probe_addresses(addresses: &[String]) -> Vec<IpAddr> {
    let parsed: Vec<IpAddr> = addresses
        .iter()
        .filter_map(|a| a.split('/').next()?.parse().ok())
        .collect();
    let v4 = parsed.iter().find(|a| a.is_ipv4());
    let v6 = parsed.iter().find(|a| a.is_ipv6());
    v4.into_iter().chain(v6).copied().collect()
}
