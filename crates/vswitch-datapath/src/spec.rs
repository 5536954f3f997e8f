//! What the user names on `--ports`: `tap:NAME`, `dev:NAME`, or a bare `NAME`.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use crate::kernel_vxlan::KernelVxlanPort;
use crate::packet::{PacketPort, PacketPortError, interface_index};
use crate::port::{PortDevice, Steering};
use crate::tap::{InvalidIfName, Tap, TapError, validate_ifname};
use crate::tap_relay::RelayedTap;
use crate::tun::{TunConfig, TunPort};
use crate::vxlan::{Carrier, VxlanConfig, VxlanPort};
use vswitch_netns::{Netlink, Netns};

/// A port as the user asked for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortSpec {
    /// A TAP the switch creates, or attaches to if a persistent one exists.
    Tap(TapSpec),
    /// An existing interface attached with a packet socket.
    Dev(String),
    /// A bare name: an existing interface that is not a TAP becomes [`PortSpec::Dev`], anything
    /// else [`PortSpec::Tap`]; decided when opened.
    Auto(String),
    /// A VXLAN tunnel endpoint (`vxlan:NAME:vni=...`).
    Vxlan(VxlanConfig),
    /// A TUN device standing for its addresses (`tun:NAME=10.0.1.9/24`).
    Tun(TunConfig),
}

/// A TAP port: `tap:NAME[@NS]`, NS a namespace under `/run/netns`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapSpec {
    /// The interface's name.
    pub name: String,
    /// The namespace (under `/run/netns`) the switch puts the TAP in for its host, and where,
    /// with the in-kernel fast path on, it builds the TAP's relay ([`RelayedTap`]).
    pub netns: Option<String>,
}

impl TapSpec {
    /// A TAP that stays where the switch makes it.
    pub fn named(name: &str) -> TapSpec {
        TapSpec {
            name: name.to_owned(),
            netns: None,
        }
    }

    /// `NAME` or `NAME@NS` (`=` would read as a MACVLAN binding, `,` split `--ports`).
    fn parse(s: &str) -> Result<TapSpec, PortSpecError> {
        let Some((name, ns)) = s.split_once('@') else {
            return Ok(TapSpec::named(s));
        };
        if ns.is_empty() || ns.contains(['/', '@', ':']) || ns.starts_with('.') {
            return Err(PortSpecError::Tap(format!(
                "tap:{s}: {ns:?} is not a namespace's name (tap:NAME[@NAMESPACE])"
            )));
        }
        Ok(TapSpec {
            name: name.to_owned(),
            netns: Some(ns.to_owned()),
        })
    }
}

/// Why a port spec doesn't parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortSpecError {
    /// A name that can't be an interface's.
    #[error(transparent)]
    Name(#[from] InvalidIfName),
    /// A `vxlan:` spec that doesn't say what it must.
    #[error("{0}")]
    Vxlan(String),
    /// A `tun:` spec that doesn't say what it must.
    #[error("{0}")]
    Tun(String),
    /// A `tap:NAME@NS` whose NS can't be a namespace's name.
    #[error("{0}")]
    Tap(String),
}

/// Why a port could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenPortError {
    /// A TAP failed.
    #[error(transparent)]
    Tap(#[from] TapError),
    /// A packet socket failed.
    #[error(transparent)]
    Dev(#[from] PacketPortError),
    /// A VXLAN port's sockets failed.
    #[error(transparent)]
    Vxlan(#[from] std::io::Error),
    /// The namespace a TAP should go to.
    #[error(transparent)]
    Netns(#[from] vswitch_netns::NetnsError),
}

impl PortSpec {
    /// The interface name.
    pub fn name(&self) -> &str {
        match self {
            PortSpec::Tap(t) => &t.name,
            PortSpec::Dev(n) | PortSpec::Auto(n) => n,
            PortSpec::Vxlan(c) => &c.name,
            PortSpec::Tun(c) => &c.name,
        }
    }

    /// Opens the port. `offload` asks TAPs for virtio-net headers and offloads, `queues` for
    /// that many receive queues (TAP queues or fanout sockets; one per worker serves a busy port
    /// best), `steering` for how a packet socket's fanout spreads frames (a TAP's steering is
    /// set when the switch takes it); `kernel` lets the kernel carry frames where it can (a
    /// `tap:NAME@NS` gets a relay).
    pub fn open(
        &self,
        offload: bool,
        queues: usize,
        steering: Steering,
        kernel: bool,
    ) -> Result<Box<dyn PortDevice>, OpenPortError> {
        let is_dev = match self {
            PortSpec::Tap(TapSpec {
                name,
                netns: Some(ns),
            }) => return open_tap_in(name, ns, offload, queues, steering, kernel),
            PortSpec::Tap(_) => false,
            PortSpec::Dev(_) => true,
            PortSpec::Auto(name) => interface_index(name).is_some() && !is_tun(name),
            PortSpec::Vxlan(config) if config.carrier == Carrier::Kernel => {
                return Ok(Box::new(KernelVxlanPort::open(config, queues, steering)?));
            }
            PortSpec::Vxlan(config) => return Ok(Box::new(VxlanPort::open(config.clone())?)),
            PortSpec::Tun(config) => return Ok(Box::new(TunPort::open(config, offload)?)),
        };
        Ok(if is_dev {
            Box::new(PacketPort::open_queues(self.name(), queues, steering)?)
        } else {
            Box::new(Tap::open_queues(self.name(), offload, queues)?)
        })
    }
}

/// Opens TAP `name` and puts it in namespace `ns` for its host, with a relay if `kernel`
/// allows and the kernel can (else, with the reason logged, without).
fn open_tap_in(
    name: &str,
    ns: &str,
    offload: bool,
    queues: usize,
    steering: Steering,
    kernel: bool,
) -> Result<Box<dyn PortDevice>, OpenPortError> {
    let netns = Netns::open(ns)?;
    let tap = Tap::open_queues(name, offload, queues)?;
    let tap = if kernel {
        match RelayedTap::open(tap, &netns, queues, steering) {
            Ok(relayed) => {
                tracing::info!(
                    tap = name,
                    netns = ns,
                    "TAP relayed: the kernel carries its known unicast"
                );
                return Ok(Box::new(relayed));
            }
            Err((tap, e)) => {
                tracing::warn!(tap = name, netns = ns, error = %e, "no relay for the TAP: its frames go through the switch");
                tap
            }
        }
    } else {
        tap
    };
    let mut nl = Netlink::open()?;
    if nl.link_exists(name)? {
        nl.move_to(name, &netns)?;
    }
    netns.run(|| Netlink::open()?.set_up(name))??;
    Ok(Box::new(tap))
}

/// Whether interface `name` is a TUN/TAP device (only those have `tun_flags` in sysfs).
fn is_tun(name: &str) -> bool {
    Path::new("/sys/class/net")
        .join(name)
        .join("tun_flags")
        .exists()
}

impl FromStr for PortSpec {
    type Err = PortSpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(rest) = s.strip_prefix("tun:") {
            return TunConfig::parse(rest)
                .map(PortSpec::Tun)
                .map_err(PortSpecError::Tun);
        }
        if let Some(rest) = s.strip_prefix("vxlan:") {
            return VxlanConfig::parse(rest)
                .map(PortSpec::Vxlan)
                .map_err(PortSpecError::Vxlan);
        }
        let spec = if let Some(rest) = s.strip_prefix("tap:") {
            PortSpec::Tap(TapSpec::parse(rest)?)
        } else if let Some(name) = s.strip_prefix("dev:") {
            PortSpec::Dev(name.to_owned())
        } else {
            PortSpec::Auto(s.to_owned())
        };
        validate_ifname(spec.name())?;
        Ok(spec)
    }
}

impl fmt::Display for PortSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortSpec::Tap(TapSpec { name, netns: None }) => write!(f, "tap:{name}"),
            PortSpec::Tap(TapSpec {
                name,
                netns: Some(ns),
            }) => write!(f, "tap:{name}@{ns}"),
            PortSpec::Dev(n) => write!(f, "dev:{n}"),
            PortSpec::Auto(n) => f.write_str(n),
            PortSpec::Vxlan(c) => write!(f, "vxlan:{}", c.name),
            PortSpec::Tun(c) => write!(f, "tun:{}", c.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kinds_and_checks_names() {
        assert_eq!("tap:t0".parse(), Ok(PortSpec::Tap(TapSpec::named("t0"))));
        assert_eq!(
            "tap:t0@h1".parse(),
            Ok(PortSpec::Tap(TapSpec {
                name: "t0".into(),
                netns: Some("h1".into())
            }))
        );
        assert_eq!(
            "tap:t0@h1".parse::<PortSpec>().unwrap().to_string(),
            "tap:t0@h1"
        );
        assert!("tap:t0@".parse::<PortSpec>().is_err());
        assert!("tap:t0@../x".parse::<PortSpec>().is_err());
        assert!("tap:t0@a/b".parse::<PortSpec>().is_err());
        assert!("tap:@h1".parse::<PortSpec>().is_err());
        assert_eq!("dev:veth1".parse(), Ok(PortSpec::Dev("veth1".into())));
        assert_eq!("eth0".parse(), Ok(PortSpec::Auto("eth0".into())));
        assert!("tap:".parse::<PortSpec>().is_err());
        assert!("dev:a234567890123456".parse::<PortSpec>().is_err());
        assert_eq!(PortSpec::Dev("x".into()).to_string(), "dev:x");
    }
}
