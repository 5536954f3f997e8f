//! What the user names on `--ports`: `tap:NAME`, `dev:NAME`, or a bare `NAME`.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use crate::kernel_vxlan::KernelVxlanPort;
use crate::packet::{PacketPort, PacketPortError, interface_index};
use crate::port::{PortDevice, Steering};
use crate::tap::{InvalidIfName, Tap, TapError, validate_ifname};
use crate::tun::{TunConfig, TunPort};
use crate::vxlan::{Carrier, VxlanConfig, VxlanPort};

/// A port as the user asked for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortSpec {
    /// A TAP the switch creates, or attaches to if a persistent one exists.
    Tap(String),
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
}

impl PortSpec {
    /// The interface name.
    pub fn name(&self) -> &str {
        match self {
            PortSpec::Tap(n) | PortSpec::Dev(n) | PortSpec::Auto(n) => n,
            PortSpec::Vxlan(c) => &c.name,
            PortSpec::Tun(c) => &c.name,
        }
    }

    /// Opens the port. `offload` asks TAPs for virtio-net headers and offloads, `queues` for
    /// that many receive queues (TAP queues or fanout sockets; one per worker serves a busy port
    /// best), `steering` for how a packet socket's fanout spreads frames (a TAP's steering is
    /// set when the switch takes it).
    pub fn open(
        &self,
        offload: bool,
        queues: usize,
        steering: Steering,
    ) -> Result<Box<dyn PortDevice>, OpenPortError> {
        let is_dev = match self {
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
        let spec = if let Some(name) = s.strip_prefix("tap:") {
            PortSpec::Tap(name.to_owned())
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
            PortSpec::Tap(n) => write!(f, "tap:{n}"),
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
        assert_eq!("tap:t0".parse(), Ok(PortSpec::Tap("t0".into())));
        assert_eq!("dev:veth1".parse(), Ok(PortSpec::Dev("veth1".into())));
        assert_eq!("eth0".parse(), Ok(PortSpec::Auto("eth0".into())));
        assert!("tap:".parse::<PortSpec>().is_err());
        assert!("dev:a234567890123456".parse::<PortSpec>().is_err());
        assert_eq!(PortSpec::Dev("x".into()).to_string(), "dev:x");
    }
}
