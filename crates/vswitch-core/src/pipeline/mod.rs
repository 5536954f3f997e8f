//! Per-port packet processing: an ordered list of stages a frame passes on its way in or out.
//!
//! Stages: `filter` (ACL rules, first allow or drop wins, default allow), `rate` (token bucket in
//! bits/s or packets/s, dropping or, with `queue`, delaying the excess), `impair` (netem-like loss, delay with jitter, duplication, with a seed
//! for repeatable experiments), `mirror` (a copy to another port or a pcap file). The pipeline is
//! pure: it answers what to do ([`Outcome`]); the datapath delays, copies and drops.
//!
//! Text form, stages separated by `;`:
//!
//! ```text
//! filter drop proto icmp; filter allow dst 10.0.0.0/8; rate 10mbit burst 64k;
//! impair loss 1% delay 20ms jitter 2ms duplicate 0.5% seed 7; mirror port tap9
//! ```

mod corrupt;
mod filter;
mod impair;
mod rate;
mod storm;

use std::fmt;
use std::time::Duration;

pub use corrupt::corrupt_on_the_wire;
pub use filter::{Match, Rule, RuleAction};
pub use impair::Impairment;
pub use rate::{Rate, RateVerdict, TokenBucket};
pub use storm::StormControl;

use crate::time::Timestamp;
use crate::wire::ETHERNET_HEADER_LEN;

/// Where a mirror stage sends its copies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MirrorTarget {
    /// Another port of the switch, by name.
    Port(String),
    /// A pcap file.
    File(String),
}

/// One stage and its counters.
#[derive(Debug, Clone)]
pub enum Stage {
    /// Consecutive `filter` rules, evaluated as one ACL.
    Filter {
        /// The rules, in order.
        rules: Vec<Rule>,
        /// Frames each rule matched.
        hits: Vec<u64>,
        /// Frames dropped.
        dropped: u64,
    },
    /// A rate limit.
    Rate(TokenBucket),
    /// Netem-like impairments.
    Impair(Impairment),
    /// A limit on broadcast and multicast frames.
    Storm(StormControl),
    /// Copies of every frame reaching the stage.
    Mirror {
        /// Where to.
        target: MirrorTarget,
        /// Copies made.
        copied: u64,
    },
}

/// What to do with a frame after the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Outcome {
    /// False: drop it.
    pub pass: bool,
    /// Hold it back this long first.
    pub delay: Duration,
    /// Send it twice.
    pub duplicate: bool,
    /// Flip this bit of the frame: (byte offset from the frame's start, bit).
    pub corrupt: Option<(usize, u8)>,
    /// Bit `i` set: stage `i` is a mirror the frame reached.
    pub mirrors: u32,
}

/// A stage list of one port and direction.
#[derive(Debug, Clone, Default)]
pub struct Pipeline {
    stages: Vec<Stage>,
}

/// Why a pipeline text is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("pipeline stage {stage} ({text:?}): {problem}")]
pub struct PipelineError {
    stage: usize,
    text: String,
    problem: String,
}

impl Pipeline {
    /// Parses the text form (see the module documentation).
    pub fn parse(text: &str) -> Result<Pipeline, PipelineError> {
        let mut stages: Vec<Stage> = Vec::new();
        for (i, part) in text
            .split(';')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .enumerate()
        {
            let err = |problem: String| PipelineError {
                stage: i + 1,
                text: part.to_owned(),
                problem,
            };
            let words: Vec<&str> = part.split_whitespace().collect();
            let stage = match words[0] {
                "filter" => {
                    let rule = Rule::parse(&words[1..]).map_err(err)?;
                    if let Some(Stage::Filter { rules, hits, .. }) = stages.last_mut() {
                        rules.push(rule);
                        hits.push(0);
                        continue;
                    }
                    Stage::Filter {
                        rules: vec![rule],
                        hits: vec![0],
                        dropped: 0,
                    }
                }
                "rate" => Stage::Rate(TokenBucket::parse(&words[1..]).map_err(err)?),
                "impair" => Stage::Impair(Impairment::parse(&words[1..]).map_err(err)?),
                "storm" => Stage::Storm(StormControl::parse(&words[1..]).map_err(err)?),
                "mirror" => Stage::Mirror {
                    target: match words.get(1..) {
                        Some(["port", name]) => MirrorTarget::Port((*name).to_owned()),
                        Some(["file", path]) => MirrorTarget::File((*path).to_owned()),
                        _ => {
                            return Err(err(
                                "expected `mirror port NAME` or `mirror file PATH`".into()
                            ));
                        }
                    },
                    copied: 0,
                },
                other => {
                    return Err(err(format!(
                        "unknown stage {other:?} (filter, rate, impair, mirror)"
                    )));
                }
            };
            stages.push(stage);
        }
        if stages.len() > 32 {
            return Err(PipelineError {
                stage: 33,
                text: String::new(),
                problem: "at most 32 stages".into(),
            });
        }
        Ok(Pipeline { stages })
    }

    /// Whether a stage needs to know if a frame is unknown unicast (storm control does), which
    /// costs the caller a table lookup per frame.
    pub fn needs_unknown_unicast(&self) -> bool {
        self.stages
            .iter()
            .any(|s| matches!(s, Stage::Storm(storm) if storm.unknown_unicast))
    }

    /// No stages at all.
    pub fn is_empty(&self) -> bool {
        self.stages.is_empty()
    }

    /// The stages, with their counters.
    pub fn stages(&self) -> &[Stage] {
        &self.stages
    }

    /// Runs `frame` through the stages at `now`. `unknown_unicast` says the switch does not know
    /// where the frame's unicast destination is (it floods it), for storm control.
    pub fn process(&mut self, now: Timestamp, frame: &[u8], unknown_unicast: bool) -> Outcome {
        let mut outcome = Outcome {
            pass: true,
            ..Outcome::default()
        };
        for (i, stage) in self.stages.iter_mut().enumerate() {
            match stage {
                Stage::Filter {
                    rules,
                    hits,
                    dropped,
                } => {
                    if !filter::evaluate(rules, frame, hits) {
                        *dropped += 1;
                        outcome.pass = false;
                        return outcome;
                    }
                }
                Stage::Rate(bucket) => match bucket.judge(now + outcome.delay, frame.len()) {
                    RateVerdict::Pass => {}
                    RateVerdict::Delay(wait) => outcome.delay += wait,
                    RateVerdict::Drop => {
                        outcome.pass = false;
                        return outcome;
                    }
                },
                Stage::Impair(imp) => {
                    let v = imp.decide(now, frame.len().saturating_sub(ETHERNET_HEADER_LEN));
                    if v.drop {
                        outcome.pass = false;
                        return outcome;
                    }
                    outcome.delay += v.delay;
                    outcome.duplicate |= v.duplicate;
                    // Past the Ethernet header, so the frame still reaches its destination.
                    if let Some((offset, bit)) = v.corrupt {
                        outcome.corrupt = Some((ETHERNET_HEADER_LEN + offset, bit));
                    }
                }
                Stage::Storm(storm) => {
                    if !storm.admit(now, frame, unknown_unicast) {
                        outcome.pass = false;
                        return outcome;
                    }
                }
                Stage::Mirror { copied, .. } => {
                    *copied += 1;
                    outcome.mirrors |= 1 << i;
                }
            }
        }
        outcome
    }

    /// The mirror target of stage `i`.
    pub fn mirror_target(&self, i: usize) -> Option<&MirrorTarget> {
        match self.stages.get(i) {
            Some(Stage::Mirror { target, .. }) => Some(target),
            _ => None,
        }
    }
}

impl Stage {
    /// The stage's kind, as written.
    pub fn kind(&self) -> &'static str {
        match self {
            Stage::Filter { .. } => "filter",
            Stage::Rate(_) => "rate",
            Stage::Impair(_) => "impair",
            Stage::Storm(_) => "storm",
            Stage::Mirror { .. } => "mirror",
        }
    }

    /// The stage's counters by name, for stats and metrics.
    pub fn counters(&self) -> Vec<(&'static str, u64)> {
        match self {
            Stage::Filter { hits, dropped, .. } => {
                vec![("matched", hits.iter().sum()), ("dropped", *dropped)]
            }
            Stage::Rate(b) => vec![
                ("passed", b.passed),
                ("delayed", b.delayed),
                ("dropped", b.dropped),
            ],
            Stage::Impair(i) => vec![
                ("dropped", i.dropped),
                ("delayed", i.delayed),
                ("reordered", i.reordered),
                ("duplicated", i.duplicated),
                ("corrupted", i.corrupted),
            ],
            Stage::Storm(s) => vec![("passed", s.bucket.passed), ("dropped", s.bucket.dropped)],
            Stage::Mirror { copied, .. } => vec![("copied", *copied)],
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stage::Filter {
                rules,
                hits,
                dropped,
            } => {
                for (rule, hit) in rules.iter().zip(hits) {
                    writeln!(f, "{rule}  [matched {hit}]")?;
                }
                write!(f, "  (filter dropped {dropped})")
            }
            Stage::Rate(b) => write!(f, "{b}"),
            Stage::Impair(i) => write!(f, "{i}"),
            Stage::Storm(s) => write!(f, "{s}"),
            Stage::Mirror { target, copied } => match target {
                MirrorTarget::Port(p) => write!(f, "mirror port {p}  [copied {copied}]"),
                MirrorTarget::File(p) => write!(f, "mirror file {p}  [copied {copied}]"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_and_out_of_range_numbers_are_errors_not_panics() {
        for text in [
            "impair delay NaNms",
            "impair delay 10ms jitter NaNms",
            "impair delay infs",
            "impair delay -1ms",
            "impair loss NaN%",
            "impair loss inf%",
            "impair reorder 101%",
            "rate NaNmbit",
            "rate infgbit",
            "rate -5mbit",
            "rate 2000gbit",
            "rate 10mbit burst 99999999999999999999k",
            "rate 10mbit burst 18446744073709551615m",
            "rate 10mbit queue 18446744073709551615ms",
            "storm NaNpps",
        ] {
            assert!(Pipeline::parse(text).is_err(), "{text:?} was accepted");
        }
        assert!(Pipeline::parse("impair delay 1.5ms jitter 0.5ms").is_ok());
        assert!(Pipeline::parse("rate 0.5mbit burst 64k queue 50ms").is_ok());
    }

    /// An IPv4 frame with protocol `proto` and, for TCP/UDP, ports 1000 -> `dport`.
    fn ipv4(proto: u8, dst: [u8; 4], dport: u16) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 20];
        f[..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        let ip = &mut f[14..34];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&40u16.to_be_bytes());
        ip[8] = 64;
        ip[9] = proto;
        ip[12..16].copy_from_slice(&[10, 0, 0, 1]);
        ip[16..20].copy_from_slice(&dst);
        let l4 = &mut f[34..];
        match proto {
            6 => {
                l4[0..2].copy_from_slice(&1000u16.to_be_bytes());
                l4[2..4].copy_from_slice(&dport.to_be_bytes());
                l4[12] = 5 << 4;
            }
            17 => {
                l4[0..2].copy_from_slice(&1000u16.to_be_bytes());
                l4[2..4].copy_from_slice(&dport.to_be_bytes());
                l4[4..6].copy_from_slice(&20u16.to_be_bytes());
            }
            1 => l4[0] = 8, // echo request
            _ => {}
        }
        f
    }

    #[test]
    fn first_allow_or_drop_wins_and_default_is_allow() {
        let mut p = Pipeline::parse(
            "filter count proto tcp; filter drop proto icmp icmp-type 8; filter allow dst 10.9.0.0/16; filter drop proto tcp",
        )
        .unwrap();
        assert_eq!(p.stages().len(), 1, "consecutive rules form one ACL");
        let now = Timestamp::ZERO;
        assert!(
            !p.process(now, &ipv4(1, [10, 0, 0, 2], 0), false).pass,
            "ICMP echo dropped"
        );
        assert!(
            p.process(now, &ipv4(6, [10, 9, 1, 1], 80), false).pass,
            "allowed by prefix first"
        );
        assert!(
            !p.process(now, &ipv4(6, [10, 0, 0, 2], 80), false).pass,
            "TCP elsewhere dropped"
        );
        assert!(
            p.process(now, &ipv4(17, [10, 0, 0, 2], 53), false).pass,
            "default allow"
        );
        let Stage::Filter { hits, dropped, .. } = &p.stages()[0] else {
            panic!()
        };
        assert_eq!(hits, &[2, 1, 1, 1]);
        assert_eq!(*dropped, 2);
    }

    #[test]
    fn matches_ports_macs_and_ethertypes() {
        let mut p = Pipeline::parse("filter drop dst-port 5201; filter drop src-mac 02:00:00:00:00:00/ff:ff:ff:ff:ff:00 ethertype arp").unwrap();
        let now = Timestamp::ZERO;
        assert!(!p.process(now, &ipv4(6, [10, 0, 0, 2], 5201), false).pass);
        assert!(p.process(now, &ipv4(6, [10, 0, 0, 2], 5202), false).pass);
        let mut arp = ipv4(0, [0; 4], 0);
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        assert!(
            !p.process(now, &arp, false).pass,
            "ARP from 02:00:00:00:00:xx"
        );
        assert!(
            p.process(now, &[0u8; 5], false).pass,
            "a runt matches nothing"
        );
    }

    #[test]
    fn parse_errors_name_the_stage() {
        for (text, needle) in [
            ("filter maybe", "allow, drop or count"),
            ("filter drop proto", "needs a value"),
            ("filter drop src 10.0.0.0/40", "prefix length"),
            ("rate fast", "rate"),
            ("impair loss 150%", "loss"),
            ("mirror", "mirror port NAME"),
            ("shape 1mbit", "unknown stage"),
        ] {
            let err = Pipeline::parse(text).unwrap_err().to_string();
            assert!(
                err.contains("stage 1") && err.contains(needle),
                "{text}: {err}"
            );
        }
        assert!(Pipeline::parse("").unwrap().is_empty());
    }

    #[test]
    fn storm_control_limits_only_group_frames() {
        let mut p = Pipeline::parse("storm 10pps").unwrap();
        let mut bcast = ipv4(17, [10, 0, 0, 255], 67);
        bcast[..6].copy_from_slice(&[0xff; 6]);
        let now = Timestamp::from_secs(1);
        let passed = (0..100)
            .filter(|_| p.process(now, &bcast, false).pass)
            .count();
        assert!(
            passed <= 10,
            "{passed} broadcasts passed a 10 pps limit at once"
        );
        assert!(
            (0..100).all(|_| p.process(now, &ipv4(6, [10, 0, 0, 2], 80), false).pass),
            "unicast is free"
        );
    }

    #[test]
    fn storm_control_can_limit_unknown_unicast_only() {
        let mut p = Pipeline::parse("storm 10pps unknown-unicast").unwrap();
        let f = ipv4(6, [10, 0, 0, 2], 80);
        let now = Timestamp::from_secs(1);
        let unknown = (0..100).filter(|_| p.process(now, &f, true).pass).count();
        assert!(unknown <= 10, "{unknown} unknown unicast frames passed");
        assert!(
            (0..100).all(|_| p.process(now, &f, false).pass),
            "known unicast is free"
        );
        let mut bcast = f.clone();
        bcast[..6].copy_from_slice(&[0xff; 6]);
        assert!(
            (0..100).all(|_| p.process(now, &bcast, false).pass),
            "broadcast not named"
        );
        assert!(Pipeline::parse("storm 10pps anycast").is_err());
        assert!(p.needs_unknown_unicast());
        assert!(
            !Pipeline::parse("storm 10pps broadcast")
                .unwrap()
                .needs_unknown_unicast()
        );
    }

    #[test]
    fn corruption_lands_past_the_ethernet_header() {
        let mut p = Pipeline::parse("impair corrupt 100% seed 5").unwrap();
        let frame = ipv4(6, [10, 0, 0, 2], 80);
        for _ in 0..100 {
            let (offset, _) = p.process(Timestamp::ZERO, &frame, false).corrupt.unwrap();
            assert!((14..frame.len()).contains(&offset));
        }
    }

    #[test]
    fn mirrors_are_reported_by_stage() {
        let mut p =
            Pipeline::parse("mirror port tap9; filter drop proto udp; mirror file /tmp/x.pcap")
                .unwrap();
        let o = p.process(Timestamp::ZERO, &ipv4(6, [10, 0, 0, 2], 1), false);
        assert_eq!(o.mirrors, 0b101);
        assert_eq!(
            p.mirror_target(2),
            Some(&MirrorTarget::File("/tmp/x.pcap".into()))
        );
        let o = p.process(Timestamp::ZERO, &ipv4(17, [10, 0, 0, 2], 1), false);
        assert_eq!(
            (o.pass, o.mirrors),
            (false, 0b001),
            "dropped before the second mirror"
        );
    }
}
