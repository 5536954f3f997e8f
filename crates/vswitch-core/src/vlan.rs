//! Per-port L2 policy: 802.1Q VLAN membership and the bridge's per-port flags.
//!
//! A port's [`VlanMode`] says which VLAN a received frame belongs to ([`classify`]) and how a
//! frame of a VLAN leaves through it ([`egress`]), as Open vSwitch's port modes do:
//!
//! | mode | untagged in | tagged in | out |
//! |---|---|---|---|
//! | transparent (no VLAN config) | the untagged segment | the untagged segment, tag kept | frames of the untagged segment, as they came |
//! | `access V` | V | dropped (`vlan`), unless priority-tagged (VID 0) | V, untagged |
//! | `trunk LIST [native N [tagged]]` | N if set, else dropped | its VID if in LIST, else dropped | LIST, tagged; N untagged unless `tagged` |
//! | `tunnel S [tpid T]` (dot1q-tunnel) | S | S, the customer's tag kept inside | S, outer tag off |
//!
//! Inside the switch a frame carries no tag of its own VLAN: a trunk takes the tag off on the
//! way in ([`Ingress::strip`]) and puts one on the way out ([`EgressTag::Tagged`]) with the TPID
//! the frame came with (0x8100 from access ports and native VLANs, the tunnel's TPID, 0x88a8 by
//! default, from a tunnel port: so a tunnel port's frames cross trunks as QinQ). The MAC table is
//! keyed by (VLAN, MAC), so each VLAN learns and floods apart.
//!
//! [`PortFlags`] are the kernel bridge's `bridge link set` flags.

use std::fmt;

use crate::counters::DropReason;
use crate::wire::VlanId;

/// 802.1Q customer tag.
pub const TPID_8021Q: u16 = 0x8100;
/// 802.1ad service tag.
pub const TPID_8021AD: u16 = 0x88a8;

/// A set of VLAN ids 1..=4094: a 512-byte bitmap, kept on the heap so a port's mode stays small.
#[derive(Clone, PartialEq, Eq)]
pub struct VlanSet(Box<[u64; 64]>);

impl VlanSet {
    /// No VLAN.
    pub fn empty() -> Self {
        VlanSet(Box::new([0; 64]))
    }

    /// Every VLAN, 1 to 4094.
    pub fn all() -> Self {
        let mut set = VlanSet(Box::new([u64::MAX; 64]));
        set.0[0] &= !1; // VID 0 is no VLAN
        set.0[63] &= !(1 << 63); // nor 4095
        set
    }

    /// Adds `vlan`.
    pub fn insert(&mut self, vlan: VlanId) {
        let v = usize::from(vlan.get());
        self.0[v / 64] |= 1 << (v % 64);
    }

    /// Whether `vlan` is in the set.
    pub fn contains(&self, vlan: VlanId) -> bool {
        let v = usize::from(vlan.get());
        self.0[v / 64] & (1 << (v % 64)) != 0
    }

    /// Takes `vlan` out.
    pub fn remove(&mut self, vlan: VlanId) {
        let v = usize::from(vlan.get());
        self.0[v / 64] &= !(1 << (v % 64));
    }

    /// The VLANs in the set, in order.
    pub fn iter(&self) -> impl Iterator<Item = VlanId> + '_ {
        (1..4095).map(VlanId::new).filter(|v| self.contains(*v))
    }
}

impl fmt::Debug for VlanSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VlanSet({self})")
    }
}

impl fmt::Display for VlanSet {
    /// Ranges, as `10,20-29`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<u16> = self.iter().map(VlanId::get).collect();
        let mut parts = Vec::new();
        let mut i = 0;
        while i < ids.len() {
            let mut j = i;
            while j + 1 < ids.len() && ids[j + 1] == ids[j] + 1 {
                j += 1;
            }
            parts.push(if i == j {
                ids[i].to_string()
            } else {
                format!("{}-{}", ids[i], ids[j])
            });
            i = j + 1;
        }
        f.write_str(&parts.join(","))
    }
}

/// Why a VLAN id, list or mode was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VlanError {
    /// Not a number, or outside 1 to 4094.
    #[error("{text:?} is not a VLAN id (1 to 4094)")]
    Vid {
        /// What was given.
        text: String,
        /// Why it is no number, if it isn't.
        #[source]
        source: Option<std::num::ParseIntError>,
    },
    /// `20-10`.
    #[error("VLAN range {0:?} runs backwards")]
    Backwards(String),
    /// Words after a mode that it doesn't take.
    #[error("{mode}: unexpected {words:?}")]
    Unexpected {
        /// `trunk` or `tunnel`.
        mode: &'static str,
        /// The words.
        words: String,
    },
    /// A native VLAN the trunk doesn't carry (the bridge and OVS refuse it too).
    #[error("trunk: native VLAN {native} is not in its list {list}")]
    NativeOutside {
        /// The native VLAN.
        native: u16,
        /// The list as given.
        list: String,
    },
    /// Neither 802.1Q's nor 802.1ad's.
    #[error("TPID {0:?}: say 0x8100 or 0x88a8")]
    Tpid(String),
    /// No mode at all.
    #[error(
        "VLAN mode {0:?}: say `access VID`, `trunk VIDS [native VID [tagged]]`, `tunnel VID [tpid 0x88a8]` or `none`"
    )]
    Mode(String),
}

/// Parses a VID, 1 to 4094.
pub fn parse_vid(s: &str) -> Result<VlanId, VlanError> {
    match s.parse::<u16>() {
        Ok(v @ 1..=4094) => Ok(VlanId::new(v)),
        Ok(_) => Err(VlanError::Vid {
            text: s.to_owned(),
            source: None,
        }),
        Err(e) => Err(VlanError::Vid {
            text: s.to_owned(),
            source: Some(e),
        }),
    }
}

impl std::str::FromStr for VlanSet {
    type Err = VlanError;

    /// `10`, `10,20`, `100-199`, `all`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "all" {
            return Ok(VlanSet::all());
        }
        let mut set = VlanSet::empty();
        for part in s.split(',') {
            match part.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (parse_vid(a)?, parse_vid(b)?);
                    if a > b {
                        return Err(VlanError::Backwards(part.to_owned()));
                    }
                    for v in a.get()..=b.get() {
                        set.insert(VlanId::new(v));
                    }
                }
                None => set.insert(parse_vid(part)?),
            }
        }
        Ok(set)
    }
}

/// How a port takes part in VLANs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum VlanMode {
    /// No VLAN configuration: the port is on the untagged segment and tags pass untouched.
    #[default]
    Transparent,
    /// Untagged member of one VLAN.
    Access(VlanId),
    /// Tagged member of several VLANs.
    Trunk {
        /// The VLANs it carries.
        allowed: VlanSet,
        /// The VLAN of its untagged frames, if any (always also in `allowed`).
        native: Option<VlanId>,
        /// Whether frames of the native VLAN leave tagged (OVS's `native-tagged`).
        native_tagged: bool,
    },
    /// A customer port of a provider bridge (dot1q-tunnel): every frame, tagged or not, is in
    /// the service VLAN.
    Tunnel {
        /// The service VLAN.
        vlan: VlanId,
        /// The outer tag's TPID when the frame leaves through a trunk.
        tpid: u16,
    },
}

impl std::str::FromStr for VlanMode {
    type Err = VlanError;

    /// `none`, `access 10`, `trunk 10,20-29 [native 10 [tagged]]`, `tunnel 100 [tpid 0x8100]`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let words: Vec<&str> = s.split_whitespace().collect();
        match words.as_slice() {
            ["none"] => Ok(VlanMode::Transparent),
            ["access", vid] => Ok(VlanMode::Access(parse_vid(vid)?)),
            ["trunk", list, rest @ ..] => {
                let allowed: VlanSet = list.parse()?;
                let (native, native_tagged) = match rest {
                    [] => (None, false),
                    ["native", vid] => (Some(parse_vid(vid)?), false),
                    ["native", vid, "tagged"] => (Some(parse_vid(vid)?), true),
                    _ => {
                        return Err(VlanError::Unexpected {
                            mode: "trunk",
                            words: rest.join(" "),
                        });
                    }
                };
                // As the bridge and OVS, a native VLAN is one the trunk carries: one outside
                // the list is a contradiction, not something to fix silently.
                if let Some(n) = native
                    && !allowed.contains(n)
                {
                    return Err(VlanError::NativeOutside {
                        native: n.get(),
                        list: (*list).to_owned(),
                    });
                }
                Ok(VlanMode::Trunk {
                    allowed,
                    native,
                    native_tagged,
                })
            }
            ["tunnel", vid, rest @ ..] => {
                let tpid = match rest {
                    [] => TPID_8021AD,
                    ["tpid", t] => parse_tpid(t)?,
                    _ => {
                        return Err(VlanError::Unexpected {
                            mode: "tunnel",
                            words: rest.join(" "),
                        });
                    }
                };
                Ok(VlanMode::Tunnel {
                    vlan: parse_vid(vid)?,
                    tpid,
                })
            }
            _ => Err(VlanError::Mode(s.to_owned())),
        }
    }
}

fn parse_tpid(s: &str) -> Result<u16, VlanError> {
    match s.to_ascii_lowercase().as_str() {
        "0x8100" | "8021q" => Ok(TPID_8021Q),
        "0x88a8" | "8021ad" => Ok(TPID_8021AD),
        _ => Err(VlanError::Tpid(s.to_owned())),
    }
}

impl VlanMode {
    /// Adds `vlans` to a trunk's list, or takes them off (never its native VLAN): a clear error
    /// for any other mode, which has no list.
    pub fn change_trunk(&mut self, vlans: &VlanSet, add: bool) -> Result<(), String> {
        let VlanMode::Trunk {
            allowed, native, ..
        } = self
        else {
            return Err(format!(
                "the port is `{self}`, not a trunk: `vlan set PORT trunk VIDS` makes it one"
            ));
        };
        if !add && native.is_some_and(|n| vlans.contains(n)) {
            return Err("the native VLAN stays on its trunk; change the mode to drop it".into());
        }
        for v in vlans.iter() {
            if add {
                allowed.insert(v);
            } else {
                allowed.remove(v);
            }
        }
        Ok(())
    }
}

impl fmt::Display for VlanMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VlanMode::Transparent => f.write_str("none"),
            VlanMode::Access(v) => write!(f, "access {}", v.get()),
            VlanMode::Trunk {
                allowed,
                native,
                native_tagged,
            } => {
                write!(f, "trunk {allowed}")?;
                if let Some(n) = native {
                    write!(f, " native {}", n.get())?;
                    if *native_tagged {
                        f.write_str(" tagged")?;
                    }
                }
                Ok(())
            }
            VlanMode::Tunnel { vlan, tpid } => write!(f, "tunnel {} tpid {tpid:#06x}", vlan.get()),
        }
    }
}

/// The bridge's per-port flags (`bridge link set dev X ...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortFlags {
    /// Learn the sources of frames received on the port.
    pub learning: bool,
    /// Send unknown unicast out of the port.
    pub flood: bool,
    /// Send multicast out of the port.
    pub mcast_flood: bool,
    /// Send broadcast out of the port.
    pub bcast_flood: bool,
    /// An isolated port reaches only ports that are not isolated.
    pub isolated: bool,
    /// A frame may leave by the port it came in on.
    pub hairpin: bool,
}

impl Default for PortFlags {
    /// The bridge's defaults: learning and flooding on, isolation and hairpin off.
    fn default() -> Self {
        PortFlags {
            learning: true,
            flood: true,
            mcast_flood: true,
            bcast_flood: true,
            isolated: false,
            hairpin: false,
        }
    }
}

impl PortFlags {
    /// Sets flag `name` (`learning`, `flood`, `mcast-flood`, `bcast-flood`, `isolated`,
    /// `hairpin`) to `value` (`on` or `off`).
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), String> {
        let on = match value {
            "on" => true,
            "off" => false,
            _ => return Err(format!("{name}: say on or off, not {value:?}")),
        };
        let flag = match name {
            "learning" => &mut self.learning,
            "flood" => &mut self.flood,
            "mcast-flood" | "mcast_flood" => &mut self.mcast_flood,
            "bcast-flood" | "bcast_flood" => &mut self.bcast_flood,
            "isolated" => &mut self.isolated,
            "hairpin" => &mut self.hairpin,
            _ => {
                return Err(format!(
                    "no flag {name:?} (learning, flood, mcast-flood, bcast-flood, isolated, hairpin)"
                ));
            }
        };
        *flag = on;
        Ok(())
    }

    /// Every flag with its value, as `learning on flood on ...`.
    pub fn describe(&self) -> String {
        let on = |b: bool| if b { "on" } else { "off" };
        format!(
            "learning {} flood {} mcast-flood {} bcast-flood {} isolated {} hairpin {}",
            on(self.learning),
            on(self.flood),
            on(self.mcast_flood),
            on(self.bcast_flood),
            on(self.isolated),
            on(self.hairpin)
        )
    }
}

/// A port's L2 policy: VLAN membership and flags.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PortPolicy {
    /// VLAN membership.
    pub vlan: VlanMode,
    /// Per-port flags.
    pub flags: PortFlags,
}

impl PortPolicy {
    /// No VLANs and the bridge's default flags: the port behaves as every port did before
    /// policies existed (and the in-kernel fast path may serve it).
    pub fn is_default(&self) -> bool {
        // Asked per frame and port: no default value built to compare with.
        matches!(self.vlan, VlanMode::Transparent) && self.flags == PortFlags::default()
    }
}

/// The outer tag of an Ethernet frame: its TPID and VID.
pub fn outer_tag(frame: &[u8]) -> Option<(u16, VlanId)> {
    let tpid = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    if tpid != TPID_8021Q && tpid != TPID_8021AD {
        return None;
    }
    let tci = u16::from_be_bytes([*frame.get(14)?, *frame.get(15)?]);
    Some((tpid, VlanId::new(tci)))
}

/// Where a received frame belongs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingress {
    /// In `vlan`; if `strip`, its outer tag comes off first. `tpid` goes with the frame, for
    /// the tag it gets when it leaves through a trunk.
    Member {
        /// The frame's VLAN ([`VlanId::UNTAGGED`] on transparent ports).
        vlan: VlanId,
        /// Take the outer tag off.
        strip: bool,
        /// The TPID of the tag a trunk gives it.
        tpid: u16,
    },
    /// Not for this port: dropped, for this reason.
    Drop(DropReason),
}

/// Which VLAN `frame`, received on a port in `mode`, belongs to.
pub fn classify(mode: &VlanMode, frame: &[u8]) -> Ingress {
    let tag = outer_tag(frame);
    let member = |vlan, strip, tpid| Ingress::Member { vlan, strip, tpid };
    match mode {
        VlanMode::Transparent => member(VlanId::UNTAGGED, false, TPID_8021Q),
        VlanMode::Access(v) => match tag {
            None => member(*v, false, TPID_8021Q),
            // Priority-tagged: untagged with a priority; the tag goes.
            Some((_, vid)) if vid == VlanId::UNTAGGED => member(*v, true, TPID_8021Q),
            Some(_) => Ingress::Drop(DropReason::Vlan),
        },
        VlanMode::Trunk {
            allowed, native, ..
        } => match tag {
            Some((tpid, vid)) if vid != VlanId::UNTAGGED => {
                if allowed.contains(vid) {
                    member(vid, true, tpid)
                } else {
                    Ingress::Drop(DropReason::Vlan)
                }
            }
            Some((_, _)) => match native {
                Some(n) => member(*n, true, TPID_8021Q),
                None => Ingress::Drop(DropReason::Vlan),
            },
            None => match native {
                Some(n) => member(*n, false, TPID_8021Q),
                None => Ingress::Drop(DropReason::Vlan),
            },
        },
        VlanMode::Tunnel { vlan, tpid } => member(*vlan, false, *tpid),
    }
}

/// How a frame of some VLAN leaves a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EgressTag {
    /// The port is not in the frame's VLAN: the frame doesn't go there.
    NotMember,
    /// As it is inside the switch (no tag of its VLAN).
    Untagged,
    /// With a tag of its VLAN, of this TPID.
    Tagged(u16),
}

/// How a frame of `vlan` that came with `tpid` ([`Ingress::Member`]) leaves a port in `mode`.
pub fn egress(mode: &VlanMode, vlan: VlanId, tpid: u16) -> EgressTag {
    match mode {
        VlanMode::Transparent if vlan == VlanId::UNTAGGED => EgressTag::Untagged,
        VlanMode::Access(v) | VlanMode::Tunnel { vlan: v, .. } if *v == vlan => EgressTag::Untagged,
        VlanMode::Trunk {
            allowed,
            native,
            native_tagged,
        } if vlan != VlanId::UNTAGGED && allowed.contains(vlan) => {
            if *native == Some(vlan) && !native_tagged {
                EgressTag::Untagged
            } else {
                EgressTag::Tagged(tpid)
            }
        }
        _ => EgressTag::NotMember,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(tags: &[(u16, u16)]) -> Vec<u8> {
        let mut f = vec![0xffu8; 6];
        f.extend_from_slice(&[2, 0, 0, 0, 0, 1]);
        for (tpid, vid) in tags {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&vid.to_be_bytes());
        }
        f.extend_from_slice(&0x0800u16.to_be_bytes());
        f.resize(64, 0);
        f
    }

    fn v(id: u16) -> VlanId {
        VlanId::new(id)
    }

    #[test]
    fn sets_parse_print_and_refuse_nonsense() {
        let set: VlanSet = "10,20-22,4094".parse().unwrap();
        assert!(set.contains(v(21)) && set.contains(v(4094)) && !set.contains(v(11)));
        assert_eq!(set.to_string(), "10,20-22,4094");
        let all: VlanSet = "all".parse().unwrap();
        assert_eq!(all.iter().count(), 4094);
        for bad in ["0", "4095", "x", "20-10", "", "1,,2", "-5"] {
            assert!(bad.parse::<VlanSet>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn modes_parse_and_print_back() {
        for text in [
            "none",
            "access 10",
            "trunk 10,20-29",
            "trunk 10,20,30 native 30",
            "trunk 10 native 10 tagged",
            "tunnel 100 tpid 0x88a8",
            "tunnel 100 tpid 0x8100",
        ] {
            let mode: VlanMode = text.parse().unwrap();
            let again: VlanMode = mode.to_string().parse().unwrap();
            assert_eq!(mode, again, "{text}");
        }
        for bad in [
            "trunk 10 native 30", // a native VLAN outside the list: said, not fixed
            "access",
            "access 0",
            "access 5000",
            "trunk",
            "trunk 10 native",
            "tunnel 5 tpid 1",
            "vlan 5",
        ] {
            assert!(bad.parse::<VlanMode>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn access_ports_take_untagged_frames_into_their_vlan_and_drop_tagged_ones() {
        let access = VlanMode::Access(v(10));
        assert_eq!(
            classify(&access, &frame(&[])),
            Ingress::Member {
                vlan: v(10),
                strip: false,
                tpid: TPID_8021Q
            }
        );
        assert_eq!(
            classify(&access, &frame(&[(TPID_8021Q, 10)])),
            Ingress::Drop(DropReason::Vlan),
            "OVS: an access port drops tagged frames, even of its own VLAN"
        );
        assert_eq!(
            classify(&access, &frame(&[(TPID_8021Q, 0)])),
            Ingress::Member {
                vlan: v(10),
                strip: true,
                tpid: TPID_8021Q
            },
            "priority-tagged is untagged"
        );
        assert_eq!(egress(&access, v(10), TPID_8021Q), EgressTag::Untagged);
        assert_eq!(egress(&access, v(20), TPID_8021Q), EgressTag::NotMember);
        assert_eq!(
            egress(&access, VlanId::UNTAGGED, TPID_8021Q),
            EgressTag::NotMember
        );
    }

    #[test]
    fn trunks_carry_their_list_tagged_and_the_native_vlan_as_asked() {
        let trunk: VlanMode = "trunk 10,20,30 native 30".parse().unwrap();
        assert_eq!(
            classify(&trunk, &frame(&[(TPID_8021Q, 20)])),
            Ingress::Member {
                vlan: v(20),
                strip: true,
                tpid: TPID_8021Q
            }
        );
        assert_eq!(
            classify(&trunk, &frame(&[(TPID_8021Q, 40)])),
            Ingress::Drop(DropReason::Vlan)
        );
        assert_eq!(
            classify(&trunk, &frame(&[])),
            Ingress::Member {
                vlan: v(30),
                strip: false,
                tpid: TPID_8021Q
            }
        );
        assert_eq!(
            egress(&trunk, v(10), TPID_8021Q),
            EgressTag::Tagged(TPID_8021Q)
        );
        assert_eq!(egress(&trunk, v(30), TPID_8021Q), EgressTag::Untagged);
        assert_eq!(egress(&trunk, v(40), TPID_8021Q), EgressTag::NotMember);
        let tagged_native: VlanMode = "trunk 10,30 native 30 tagged".parse().unwrap();
        assert_eq!(
            egress(&tagged_native, v(30), TPID_8021Q),
            EgressTag::Tagged(TPID_8021Q)
        );
        let no_native: VlanMode = "trunk 10".parse().unwrap();
        assert_eq!(
            classify(&no_native, &frame(&[])),
            Ingress::Drop(DropReason::Vlan)
        );
        assert_eq!(
            egress(&no_native, VlanId::UNTAGGED, TPID_8021Q),
            EgressTag::NotMember
        );
    }

    #[test]
    fn a_tunnel_port_puts_everything_in_its_service_vlan_and_trunks_tag_it_as_qinq() {
        let tunnel: VlanMode = "tunnel 100".parse().unwrap();
        let customer = frame(&[(TPID_8021Q, 5)]);
        let Ingress::Member { vlan, strip, tpid } = classify(&tunnel, &customer) else {
            panic!("dropped")
        };
        assert_eq!((vlan, strip, tpid), (v(100), false, TPID_8021AD));
        let trunk: VlanMode = "trunk 100".parse().unwrap();
        assert_eq!(egress(&trunk, vlan, tpid), EgressTag::Tagged(TPID_8021AD));
        // Back from the provider trunk: the service tag comes off, the customer's stays.
        assert_eq!(
            classify(&trunk, &frame(&[(TPID_8021AD, 100), (TPID_8021Q, 5)])),
            Ingress::Member {
                vlan: v(100),
                strip: true,
                tpid: TPID_8021AD
            }
        );
        assert_eq!(egress(&tunnel, v(100), TPID_8021AD), EgressTag::Untagged);
    }

    #[test]
    fn transparent_ports_are_todays_switch() {
        let t = VlanMode::Transparent;
        for f in [frame(&[]), frame(&[(TPID_8021Q, 7)])] {
            assert_eq!(
                classify(&t, &f),
                Ingress::Member {
                    vlan: VlanId::UNTAGGED,
                    strip: false,
                    tpid: TPID_8021Q
                }
            );
        }
        assert_eq!(
            egress(&t, VlanId::UNTAGGED, TPID_8021Q),
            EgressTag::Untagged
        );
        assert_eq!(egress(&t, v(10), TPID_8021Q), EgressTag::NotMember);
        assert!(PortPolicy::default().is_default());
    }

    #[test]
    fn trunks_gain_and_lose_vlans_and_other_modes_refuse() {
        let mut trunk: VlanMode = "trunk 10,30 native 30".parse().unwrap();
        trunk.change_trunk(&"20-22".parse().unwrap(), true).unwrap();
        assert_eq!(trunk.to_string(), "trunk 10,20-22,30 native 30");
        trunk
            .change_trunk(&"10,21".parse().unwrap(), false)
            .unwrap();
        assert_eq!(trunk.to_string(), "trunk 20,22,30 native 30");
        assert!(trunk.change_trunk(&"30".parse().unwrap(), false).is_err());
        let mut access = VlanMode::Access(v(10));
        assert!(access.change_trunk(&"20".parse().unwrap(), true).is_err());
        assert_eq!(access, VlanMode::Access(v(10)), "nothing changes");
    }

    #[test]
    fn flags_set_by_name() {
        let mut flags = PortFlags::default();
        flags.set("isolated", "on").unwrap();
        flags.set("mcast-flood", "off").unwrap();
        assert!(flags.isolated && !flags.mcast_flood && flags.learning);
        assert!(flags.set("isolated", "yes").is_err());
        assert!(flags.set("stp", "on").is_err());
        assert!(flags.describe().contains("isolated on"));
    }
}
