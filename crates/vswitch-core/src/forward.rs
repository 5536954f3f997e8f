//! The forwarding decision for one frame: drop it, send it to one port, or flood it.
//!
//! [`decide`] only reads the table (it may refresh a known source's last-seen time, which is an
//! atomic store). When the source needs learning, the [`Decision`] carries a [`LearnRequest`] that
//! the caller applies with [`MacTable::learn`] under exclusive access, so the common case needs
//! nothing more than shared access to the table.

use crate::counters::DropReason;
use crate::table::{FdbKey, MacTable};
use crate::time::Timestamp;
use crate::view::FrameView;
use crate::wire::{PortId, VlanId};

/// Forwarding behaviour that is not part of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ForwardingConfig {
    /// Bit `n` set: forward frames to 01:80:C2:00:00:0n (`--forward-link-local`). The kernel
    /// bridge's `group_fwd_mask`, except that all sixteen, STP, pause and LACP included, may be
    /// enabled. Default 0: none are forwarded.
    pub link_local_mask: u16,
}

/// Where a frame goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Egress {
    /// Nowhere, for this reason (counted on the ingress port).
    Drop(DropReason),
    /// To exactly this port.
    Port(PortId),
    /// To every port except the ingress port.
    Flood,
    /// To every port except the ingress port and this one (MACVLAN VEPA: a sibling's broadcast
    /// reflected back through the uplink must not return to the sibling).
    FloodExcept(PortId),
    /// To the ports of a group the forwarder defined (MACVLAN source mode: the sub-ports that
    /// accept the frame's source MAC).
    Group(u32),
}

/// The source of a frame must be entered into (or moved in) the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LearnRequest {
    /// The source's key.
    pub key: FdbKey,
    /// The port it arrived on.
    pub port: PortId,
}

/// What to do with one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Where the frame goes.
    pub egress: Egress,
    /// A table change the caller should apply, if any.
    pub learn: Option<LearnRequest>,
}

impl Decision {
    /// A decision that only forwards, learning nothing.
    pub fn to(egress: Egress) -> Self {
        Decision {
            egress,
            learn: None,
        }
    }

    /// Drop, for `reason`.
    pub fn drop(reason: DropReason) -> Self {
        Decision {
            egress: Egress::Drop(reason),
            learn: None,
        }
    }
}

/// Decides what to do with the frame `view`, received on `in_port` at `now`.
///
/// The rules are the kernel bridge's: a frame with a group or zero source MAC is dropped and never
/// learned; 802.1D link-local destinations are dropped unless enabled in the mask; group and
/// unknown destinations flood; a destination learned on the ingress port is filtered.
#[inline]
pub fn decide(
    table: &MacTable,
    config: &ForwardingConfig,
    now: Timestamp,
    in_port: PortId,
    view: &FrameView,
) -> Decision {
    decide_in(table, config, now, in_port, view, &Scope::default())
}

/// Where and how [`decide_in`] decides: the frame's VLAN and the ingress port's flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Scope {
    /// The VLAN the ingress port put the frame in.
    pub vlan: VlanId,
    /// Don't learn the source (`learning off`).
    pub no_learning: bool,
    /// A destination behind the ingress port may be sent back there (`hairpin on`).
    pub hairpin: bool,
}

/// [`decide`] for a frame of `scope.vlan`, learning and hairpinning as the ingress port's flags
/// say. The caller filters floods by VLAN membership and the egress ports' flags.
#[inline]
pub fn decide_in(
    table: &MacTable,
    config: &ForwardingConfig,
    now: Timestamp,
    in_port: PortId,
    view: &FrameView,
    scope: &Scope,
) -> Decision {
    let (src, dst) = (view.src(), view.dst());
    if !src.is_valid_source() {
        return Decision::drop(DropReason::BadSource);
    }
    if let Some(group) = dst.link_local_group()
        && config.link_local_mask & (1 << group) == 0
    {
        return Decision::drop(DropReason::LinkLocal);
    }
    let vlan = scope.vlan;
    let src_key = FdbKey { vlan, mac: src };
    let learn =
        (!scope.no_learning && !table.refresh(src_key, in_port, now)).then_some(LearnRequest {
            key: src_key,
            port: in_port,
        });
    let egress = if dst.is_multicast() {
        Egress::Flood
    } else {
        match table.lookup(FdbKey { vlan, mac: dst }, now) {
            Some(port) if port == in_port && !scope.hairpin => Egress::Drop(DropReason::Filtered),
            Some(port) => Egress::Port(port),
            None => Egress::Flood,
        }
    };
    Decision { egress, learn }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::TableConfig;
    use crate::vnet::VnetHeader;
    use crate::wire::MacAddr;

    const A: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xa]);
    const B: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xb]);

    fn frame(dst: MacAddr, src: MacAddr) -> Vec<u8> {
        let mut f = vec![0u8; 60];
        f[..6].copy_from_slice(&dst.0);
        f[6..12].copy_from_slice(&src.0);
        f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        f
    }

    /// Decides and applies learning, as the datapath does.
    fn run(t: &mut MacTable, cfg: &ForwardingConfig, now: u64, port: u16, f: &[u8]) -> Decision {
        let view = FrameView::new(f, VnetHeader::default()).expect("a frame");
        let d = decide(t, cfg, Timestamp::from_secs(now), PortId(port), &view);
        if let Some(req) = d.learn {
            t.learn(
                req.key,
                req.port,
                Timestamp::from_secs(now),
                &mut Vec::new(),
            );
        }
        d
    }

    #[test]
    fn unknown_floods_then_known_goes_to_one_port() {
        let mut t = MacTable::new(TableConfig::default());
        let cfg = ForwardingConfig::default();
        let d = run(&mut t, &cfg, 0, 0, &frame(B, A));
        assert_eq!(d.egress, Egress::Flood);
        assert_eq!(
            d.learn,
            Some(LearnRequest {
                key: FdbKey::untagged(A),
                port: PortId(0)
            })
        );
        let d = run(&mut t, &cfg, 0, 1, &frame(A, B));
        assert_eq!(d.egress, Egress::Port(PortId(0)));
        let d = run(&mut t, &cfg, 0, 0, &frame(B, A));
        assert_eq!(
            d,
            Decision {
                egress: Egress::Port(PortId(1)),
                learn: None
            }
        );
    }

    #[test]
    fn destination_on_ingress_port_is_filtered() {
        let mut t = MacTable::new(TableConfig::default());
        let cfg = ForwardingConfig::default();
        run(&mut t, &cfg, 0, 0, &frame(B, A));
        run(&mut t, &cfg, 0, 0, &frame(A, B)); // B is behind port 0 too
        let d = run(&mut t, &cfg, 0, 0, &frame(B, A));
        assert_eq!(d.egress, Egress::Drop(DropReason::Filtered));
    }

    #[test]
    fn group_destinations_flood() {
        let mut t = MacTable::new(TableConfig::default());
        let cfg = ForwardingConfig::default();
        run(&mut t, &cfg, 0, 1, &frame(A, B));
        assert_eq!(
            run(&mut t, &cfg, 0, 0, &frame(MacAddr::BROADCAST, A)).egress,
            Egress::Flood
        );
        let mcast = MacAddr([0x01, 0, 0x5e, 0, 0, 1]);
        assert_eq!(
            run(&mut t, &cfg, 0, 0, &frame(mcast, A)).egress,
            Egress::Flood
        );
    }

    #[test]
    fn bad_sources_are_dropped_and_not_learned() {
        let mut t = MacTable::new(TableConfig::default());
        let cfg = ForwardingConfig::default();
        for src in [
            MacAddr::BROADCAST,
            MacAddr([0x01, 0, 0x5e, 0, 0, 1]),
            MacAddr::ZERO,
        ] {
            let d = run(&mut t, &cfg, 0, 0, &frame(B, src));
            assert_eq!(d, Decision::drop(DropReason::BadSource));
        }
        assert!(t.is_empty());
    }

    #[test]
    fn runts_are_not_frames() {
        // A runt never reaches the decision: the worker counts it when it can't view it.
        assert_eq!(
            FrameView::new(&[0; 13], VnetHeader::default()),
            Err(crate::wire::FrameError::Runt(13))
        );
    }

    #[test]
    fn link_local_follows_the_mask() {
        let mut t = MacTable::new(TableConfig::default());
        let stp = MacAddr([0x01, 0x80, 0xc2, 0, 0, 0x00]);
        let lacp = MacAddr([0x01, 0x80, 0xc2, 0, 0, 0x02]);
        let lldp = MacAddr([0x01, 0x80, 0xc2, 0, 0, 0x0e]);
        let none = ForwardingConfig::default();
        for dst in [stp, lacp, lldp] {
            assert_eq!(
                run(&mut t, &none, 0, 0, &frame(dst, A)).egress,
                Egress::Drop(DropReason::LinkLocal)
            );
        }
        let some = ForwardingConfig {
            link_local_mask: 1 << 0x0e | 1 << 0x02,
        };
        assert_eq!(
            run(&mut t, &some, 0, 0, &frame(stp, A)).egress,
            Egress::Drop(DropReason::LinkLocal)
        );
        assert_eq!(
            run(&mut t, &some, 0, 0, &frame(lacp, A)).egress,
            Egress::Flood
        );
        assert_eq!(
            run(&mut t, &some, 0, 0, &frame(lldp, A)).egress,
            Egress::Flood
        );
        let all = ForwardingConfig {
            link_local_mask: 0xffff,
        };
        assert_eq!(
            run(&mut t, &all, 0, 0, &frame(stp, A)).egress,
            Egress::Flood
        );
        // 01:80:c2:00:00:10 is not link-local: an ordinary multicast.
        let not_ll = MacAddr([0x01, 0x80, 0xc2, 0, 0, 0x10]);
        assert_eq!(
            run(&mut t, &none, 0, 0, &frame(not_ll, A)).egress,
            Egress::Flood
        );
    }

    #[test]
    fn moved_station_is_followed_at_once() {
        let mut t = MacTable::new(TableConfig::default());
        let cfg = ForwardingConfig::default();
        run(&mut t, &cfg, 0, 0, &frame(B, A));
        let d = run(&mut t, &cfg, 1, 2, &frame(B, A));
        assert_eq!(
            d.learn,
            Some(LearnRequest {
                key: FdbKey::untagged(A),
                port: PortId(2)
            })
        );
        assert_eq!(
            run(&mut t, &cfg, 1, 1, &frame(A, B)).egress,
            Egress::Port(PortId(2))
        );
    }
}
