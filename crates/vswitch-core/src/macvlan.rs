//! MACVLAN-style dispatch: one uplink, sub-ports bound to MAC addresses, no learning.
//!
//! The semantics are the kernel's `drivers/net/macvlan.c`, per mode:
//!
//! | mode | sub-port → sub-port | from a sub-port | from the uplink |
//! |---|---|---|---|
//! | bridge | directly | to a bound sibling, else the uplink; broadcast to siblings and uplink | by destination MAC; broadcast to all sub-ports |
//! | private | never | always to the uplink | by destination MAC, but nothing a sibling sent (reflected by an outside switch) |
//! | vepa | only through a reflecting outside switch | always to the uplink | by destination MAC, reflected frames included |
//! | passthru | (one sub-port) | to the uplink | everything, to the one sub-port |
//! | source | never | to the uplink | to every sub-port whose list holds the frame's *source* MAC |
//!
//! In source mode a sub-port's MACs are the sources it accepts, one MAC may be on several lists,
//! and frames from sub-ports are not checked for spoofing.
//!
//! Unicast from the uplink to a MAC no sub-port is bound to is dropped, never flooded. A frame
//! from a sub-port whose source MAC is not bound to it is dropped (no spoofing) unless that
//! check is turned off for the port. Dispatch is one or two hash lookups, whatever the number of
//! sub-ports and bindings.

use std::fmt;
use std::str::FromStr;

use hashbrown::HashMap;

use crate::counters::DropReason;
use crate::forward::{Decision, Egress};
use crate::view::FrameView;
use crate::wire::{MacAddr, PortId};

/// How sub-ports relate to each other (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MacvlanMode {
    /// Sub-ports reach each other directly.
    Bridge,
    /// Sub-ports never reach each other.
    Private,
    /// Everything goes out of the uplink; an outside switch may reflect it.
    Vepa,
    /// One sub-port that gets everything the uplink receives.
    Passthru,
    /// Sub-ports accept from the uplink only frames whose source MAC is on their list.
    Source,
}

impl FromStr for MacvlanMode {
    type Err = crate::UnknownChoice;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "bridge" => Ok(MacvlanMode::Bridge),
            "private" => Ok(MacvlanMode::Private),
            "vepa" => Ok(MacvlanMode::Vepa),
            "passthru" => Ok(MacvlanMode::Passthru),
            _ => Err(crate::UnknownChoice::new(
                "macvlan mode",
                s,
                "bridge, private, vepa, passthru",
            )),
        }
    }
}

impl fmt::Display for MacvlanMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MacvlanMode::Bridge => "bridge",
            MacvlanMode::Private => "private",
            MacvlanMode::Vepa => "vepa",
            MacvlanMode::Passthru => "passthru",
            MacvlanMode::Source => "source",
        })
    }
}

/// Why a MACVLAN configuration is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MacvlanError {
    /// One MAC bound to two sub-ports.
    #[error("MAC {mac} is bound to two sub-ports ({first} and {second})")]
    DuplicateBinding {
        /// The MAC.
        mac: MacAddr,
        /// One port.
        first: PortId,
        /// The other.
        second: PortId,
    },
    /// A binding that is not usable as a station address.
    #[error("MAC {0} can't be bound: it is a group or zero address")]
    InvalidMac(MacAddr),
    /// Passthru takes exactly one sub-port.
    #[error("passthru mode takes exactly one sub-port, not {0}")]
    PassthruPorts(usize),
    /// The uplink can't also be a sub-port.
    #[error("the uplink can't be a sub-port")]
    UplinkBound,
    /// A binding for a port that is no sub-port.
    #[error("port {0} is not a sub-port")]
    NotSubPort(PortId),
}

/// The dispatch table: mode, uplink, and which sub-port each MAC is bound to.
#[derive(Debug, Clone)]
pub struct MacvlanTable {
    mode: MacvlanMode,
    uplink: PortId,
    bound: HashMap<MacAddr, PortId>,
    sub_ports: Vec<PortId>,
    /// Source mode: the group of sub-ports accepting each source MAC.
    source_groups: HashMap<MacAddr, u32>,
    groups: Vec<Vec<PortId>>,
    /// Sub-ports whose source MACs are not checked.
    spoof_allowed: Vec<PortId>,
}

impl MacvlanTable {
    /// A table for `mode` with `uplink` and `sub_ports`, each with the MACs bound to it.
    pub fn new(
        mode: MacvlanMode,
        uplink: PortId,
        sub_ports: &[(PortId, Vec<MacAddr>)],
        spoof_allowed: Vec<PortId>,
    ) -> Result<Self, MacvlanError> {
        if mode == MacvlanMode::Passthru && sub_ports.len() != 1 {
            return Err(MacvlanError::PassthruPorts(sub_ports.len()));
        }
        let mut bound = HashMap::new();
        let mut source_groups: HashMap<MacAddr, u32> = HashMap::new();
        let mut groups: Vec<Vec<PortId>> = Vec::new();
        for (port, macs) in sub_ports {
            if *port == uplink {
                return Err(MacvlanError::UplinkBound);
            }
            for mac in macs {
                if !mac.is_valid_source() {
                    return Err(MacvlanError::InvalidMac(*mac));
                }
                if mode == MacvlanMode::Source {
                    let next = groups.len() as u32;
                    let g = *source_groups.entry(*mac).or_insert(next);
                    if g == next {
                        groups.push(Vec::new());
                    }
                    groups[g as usize].push(*port);
                    continue;
                }
                if let Some(first) = bound.insert(*mac, *port)
                    && first != *port
                {
                    return Err(MacvlanError::DuplicateBinding {
                        mac: *mac,
                        first,
                        second: *port,
                    });
                }
            }
        }
        Ok(MacvlanTable {
            mode,
            uplink,
            bound,
            sub_ports: sub_ports.iter().map(|(p, _)| *p).collect(),
            source_groups,
            groups,
            spoof_allowed,
        })
    }

    /// Binds `mac` to sub-port `port` while the switch runs (in source mode: adds `mac` to the
    /// sources `port` accepts). A MAC bound to another sub-port is refused.
    pub fn bind(&mut self, mac: MacAddr, port: PortId) -> Result<(), MacvlanError> {
        if !self.sub_ports.contains(&port) {
            return Err(MacvlanError::NotSubPort(port));
        }
        if !mac.is_valid_source() {
            return Err(MacvlanError::InvalidMac(mac));
        }
        if self.mode == MacvlanMode::Source {
            let next = self.groups.len() as u32;
            let g = *self.source_groups.entry(mac).or_insert(next);
            if g == next {
                self.groups.push(Vec::new());
            }
            let group = &mut self.groups[g as usize];
            if !group.contains(&port) {
                group.push(port);
            }
            return Ok(());
        }
        match self.bound.get(&mac) {
            Some(&first) if first != port => Err(MacvlanError::DuplicateBinding {
                mac,
                first,
                second: port,
            }),
            _ => {
                self.bound.insert(mac, port);
                Ok(())
            }
        }
    }

    /// Takes `mac` off sub-port `port`; false if it wasn't bound there.
    pub fn unbind(&mut self, mac: MacAddr, port: PortId) -> bool {
        if self.mode == MacvlanMode::Source {
            let Some(&g) = self.source_groups.get(&mac) else {
                return false;
            };
            let group = &mut self.groups[g as usize];
            let before = group.len();
            group.retain(|p| *p != port);
            if group.is_empty() {
                self.source_groups.remove(&mac);
            }
            return group.len() < before;
        }
        if self.bound.get(&mac) == Some(&port) {
            self.bound.remove(&mac);
            return true;
        }
        false
    }

    /// Every binding (in source mode, every accepted source with its sub-port), sorted.
    pub fn bindings(&self) -> Vec<(MacAddr, PortId)> {
        let mut out: Vec<(MacAddr, PortId)> = if self.mode == MacvlanMode::Source {
            self.source_groups
                .iter()
                .flat_map(|(mac, g)| self.groups[*g as usize].iter().map(|p| (*mac, *p)))
                .collect()
        } else {
            self.bound.iter().map(|(m, p)| (*m, *p)).collect()
        };
        out.sort();
        out
    }

    /// The ports of a group an [`Egress::Group`] names.
    pub fn group(&self, id: u32) -> &[PortId] {
        self.groups.get(id as usize).map_or(&[], Vec::as_slice)
    }

    /// The sub-port `mac` is bound to.
    pub fn binding(&self, mac: MacAddr) -> Option<PortId> {
        self.bound.get(&mac).copied()
    }

    /// Decides where the frame `view`, received on `in_port`, goes.
    pub fn dispatch(&self, in_port: PortId, view: &FrameView) -> Decision {
        let (src, dst) = (view.src(), view.dst());
        if !src.is_valid_source() {
            return Decision::drop(DropReason::BadSource);
        }
        if in_port == self.uplink {
            self.dispatch_uplink(src, dst)
        } else {
            self.dispatch_sub_port(in_port, src, dst)
        }
    }

    fn dispatch_uplink(&self, src: MacAddr, dst: MacAddr) -> Decision {
        if self.mode == MacvlanMode::Passthru {
            return Decision::to(Egress::Port(self.sub_ports[0]));
        }
        if self.mode == MacvlanMode::Source {
            return match self.source_groups.get(&src) {
                Some(g) => Decision::to(Egress::Group(*g)),
                None => Decision::drop(DropReason::Unbound),
            };
        }
        // A sibling's own frame, reflected by an outside switch.
        let sibling = self.binding(src);
        if dst.is_multicast() {
            return match (sibling, self.mode) {
                (None, _) => Decision::to(Egress::Flood),
                (Some(from), MacvlanMode::Vepa) => Decision::to(Egress::FloodExcept(from)),
                // Private never lets siblings meet; bridge delivered it locally already.
                (Some(_), _) => Decision::drop(DropReason::Reflected),
            };
        }
        if sibling.is_some() && self.mode == MacvlanMode::Private {
            return Decision::drop(DropReason::Reflected);
        }
        match self.binding(dst) {
            Some(port) => Decision::to(Egress::Port(port)),
            None => Decision::drop(DropReason::Unbound),
        }
    }

    fn dispatch_sub_port(&self, in_port: PortId, src: MacAddr, dst: MacAddr) -> Decision {
        if self.mode == MacvlanMode::Source {
            return Decision::to(Egress::Port(self.uplink));
        }
        if self.binding(src) != Some(in_port) && !self.spoof_allowed.contains(&in_port) {
            return Decision::drop(DropReason::Spoofed);
        }
        if self.mode != MacvlanMode::Bridge {
            return Decision::to(Egress::Port(self.uplink));
        }
        if dst.is_multicast() {
            return Decision::to(Egress::Flood);
        }
        match self.binding(dst) {
            Some(port) if port == in_port => Decision::drop(DropReason::Filtered),
            Some(port) => Decision::to(Egress::Port(port)),
            None => Decision::to(Egress::Port(self.uplink)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UP: PortId = PortId(0);
    const S1: PortId = PortId(1);
    const S2: PortId = PortId(2);
    const M1: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
    const M2: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);
    const OUT: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x99]);

    fn frame(dst: MacAddr, src: MacAddr) -> FrameView {
        let mut f = vec![0u8; 60];
        f[..6].copy_from_slice(&dst.0);
        f[6..12].copy_from_slice(&src.0);
        FrameView::new(&f, crate::vnet::VnetHeader::default()).expect("a frame")
    }

    fn table(mode: MacvlanMode) -> MacvlanTable {
        MacvlanTable::new(mode, UP, &[(S1, vec![M1]), (S2, vec![M2])], vec![]).unwrap()
    }

    #[test]
    fn bindings_change_at_runtime() {
        const M3: MacAddr = MacAddr([2, 0, 0, 0, 0, 3]);
        let mut t = table(MacvlanMode::Bridge);
        assert_eq!(
            t.dispatch(UP, &frame(M3, OUT)).egress,
            Egress::Drop(DropReason::Unbound)
        );
        t.bind(M3, S2).unwrap();
        assert_eq!(t.dispatch(UP, &frame(M3, OUT)).egress, Egress::Port(S2));
        assert!(
            t.dispatch(S2, &frame(OUT, M3)).egress == Egress::Port(UP),
            "no longer spoofed"
        );
        assert!(matches!(
            t.bind(M3, S1),
            Err(MacvlanError::DuplicateBinding { .. })
        ));
        assert_eq!(t.bind(M3, UP), Err(MacvlanError::NotSubPort(UP)));
        assert!(t.unbind(M3, S2) && !t.unbind(M3, S2));
        assert_eq!(
            t.dispatch(UP, &frame(M3, OUT)).egress,
            Egress::Drop(DropReason::Unbound)
        );
        let mut s = table(MacvlanMode::Source);
        assert_eq!(
            s.dispatch(UP, &frame(M1, OUT)).egress,
            Egress::Drop(DropReason::Unbound)
        );
        s.bind(OUT, S1).unwrap();
        s.bind(OUT, S2).unwrap();
        let Egress::Group(g) = s.dispatch(UP, &frame(M1, OUT)).egress else {
            panic!("not delivered by source")
        };
        assert_eq!(s.group(g), &[S1, S2]);
        assert!(s.unbind(OUT, S1));
        assert_eq!(s.group(g), &[S2]);
        assert!(s.bindings().contains(&(OUT, S2)));
    }

    fn egress(t: &MacvlanTable, port: PortId, dst: MacAddr, src: MacAddr) -> Egress {
        t.dispatch(port, &frame(dst, src)).egress
    }

    #[test]
    fn bridge_mode() {
        let t = table(MacvlanMode::Bridge);
        assert_eq!(egress(&t, S1, M2, M1), Egress::Port(S2), "sibling directly");
        assert_eq!(egress(&t, S1, OUT, M1), Egress::Port(UP), "unbound goes up");
        assert_eq!(egress(&t, S1, MacAddr::BROADCAST, M1), Egress::Flood);
        assert_eq!(egress(&t, UP, M2, OUT), Egress::Port(S2));
        assert_eq!(egress(&t, UP, MacAddr::BROADCAST, OUT), Egress::Flood);
        assert_eq!(egress(&t, UP, OUT, M1), Egress::Drop(DropReason::Unbound));
        assert_eq!(
            egress(&t, UP, MacAddr::BROADCAST, M1),
            Egress::Drop(DropReason::Reflected)
        );
    }

    #[test]
    fn private_mode_never_lets_siblings_meet() {
        let t = table(MacvlanMode::Private);
        assert_eq!(egress(&t, S1, M2, M1), Egress::Port(UP));
        assert_eq!(egress(&t, S1, MacAddr::BROADCAST, M1), Egress::Port(UP));
        assert_eq!(egress(&t, UP, M2, M1), Egress::Drop(DropReason::Reflected));
        assert_eq!(
            egress(&t, UP, MacAddr::BROADCAST, M1),
            Egress::Drop(DropReason::Reflected)
        );
        assert_eq!(
            egress(&t, UP, M2, OUT),
            Egress::Port(S2),
            "outside hosts still reach it"
        );
    }

    #[test]
    fn vepa_mode_delivers_reflected_frames() {
        let t = table(MacvlanMode::Vepa);
        assert_eq!(egress(&t, S1, M2, M1), Egress::Port(UP));
        assert_eq!(egress(&t, UP, M2, M1), Egress::Port(S2));
        assert_eq!(
            egress(&t, UP, MacAddr::BROADCAST, M1),
            Egress::FloodExcept(S1)
        );
    }

    #[test]
    fn passthru_mode_takes_everything() {
        let t = MacvlanTable::new(MacvlanMode::Passthru, UP, &[(S1, vec![M1])], vec![]).unwrap();
        let elsewhere = MacAddr([2, 0, 0, 0, 0, 0x77]);
        assert_eq!(
            egress(&t, UP, OUT, elsewhere),
            Egress::Port(S1),
            "any destination"
        );
        assert_eq!(egress(&t, S1, OUT, M1), Egress::Port(UP));
        assert_eq!(
            MacvlanTable::new(
                MacvlanMode::Passthru,
                UP,
                &[(S1, vec![M1]), (S2, vec![M2])],
                vec![]
            )
            .unwrap_err(),
            MacvlanError::PassthruPorts(2)
        );
    }

    #[test]
    fn source_mode_delivers_by_source_mac() {
        let t = MacvlanTable::new(
            MacvlanMode::Source,
            UP,
            &[(S1, vec![OUT, M1]), (S2, vec![OUT])],
            vec![],
        )
        .unwrap();
        let Egress::Group(g) = egress(&t, UP, M2, OUT) else {
            panic!("not a group")
        };
        assert_eq!(
            t.group(g),
            &[S1, S2],
            "both accept OUT, whatever the destination"
        );
        let Egress::Group(g) = egress(&t, UP, MacAddr::BROADCAST, M1) else {
            panic!()
        };
        assert_eq!(t.group(g), &[S1]);
        assert_eq!(
            egress(&t, UP, M1, M2),
            Egress::Drop(DropReason::Unbound),
            "M2 is on no list"
        );
        assert_eq!(
            egress(&t, S2, M1, M2),
            Egress::Port(UP),
            "sub-ports send up, unchecked"
        );
    }

    #[test]
    fn spoofed_sources_are_dropped_unless_allowed() {
        let t = table(MacvlanMode::Bridge);
        assert_eq!(egress(&t, S1, OUT, M2), Egress::Drop(DropReason::Spoofed));
        assert_eq!(egress(&t, S1, OUT, OUT), Egress::Drop(DropReason::Spoofed));
        let lax = MacvlanTable::new(
            MacvlanMode::Bridge,
            UP,
            &[(S1, vec![M1]), (S2, vec![M2])],
            vec![S1],
        )
        .unwrap();
        assert_eq!(egress(&lax, S1, OUT, OUT), Egress::Port(UP));
    }

    #[test]
    fn bindings_are_checked() {
        let dup = MacvlanTable::new(
            MacvlanMode::Bridge,
            UP,
            &[(S1, vec![M1]), (S2, vec![M1])],
            vec![],
        );
        assert!(matches!(dup, Err(MacvlanError::DuplicateBinding { .. })));
        let group = MacvlanTable::new(
            MacvlanMode::Bridge,
            UP,
            &[(S1, vec![MacAddr::BROADCAST])],
            vec![],
        );
        assert_eq!(
            group.unwrap_err(),
            MacvlanError::InvalidMac(MacAddr::BROADCAST)
        );
        let uplink = MacvlanTable::new(MacvlanMode::Bridge, UP, &[(UP, vec![M1])], vec![]);
        assert_eq!(uplink.unwrap_err(), MacvlanError::UplinkBound);
    }
}
