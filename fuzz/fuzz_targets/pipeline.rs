//! The pipeline grammar: stage lists generated from the grammar (filter, rate, impair, storm,
//! mirror with their options), each value either in range or hostile (NaN, infinities,
//! negative, huge, malformed, empty). A list with only in-range values must parse, one with a
//! hostile value must be refused with a reason, and no text may panic; a parsed pipeline then
//! runs frames, and its outcomes stay within what the stages allow.
#![no_main]

use std::fmt::Write as _;
use std::time::Duration;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use vswitch_core::{Pipeline, Timestamp};

/// A value of the grammar: in range, or a hostile word in its place.
#[derive(Debug, Arbitrary)]
enum Value<T> {
    Good(T),
    Bad(Hostile),
}

#[derive(Debug, Arbitrary, Clone, Copy)]
enum Hostile {
    NaN,
    Inf,
    Negative,
    Huge,
    Empty,
    Garbage,
}

impl Hostile {
    fn word(self, unit: &str) -> String {
        match self {
            Hostile::NaN => format!("NaN{unit}"),
            Hostile::Inf => format!("inf{unit}"),
            Hostile::Negative => format!("-1{unit}"),
            Hostile::Huge => format!("1e400{unit}"),
            Hostile::Empty => unit.to_owned(),
            Hostile::Garbage => "x".to_owned(),
        }
    }
}

#[derive(Debug, Arbitrary)]
enum Stage {
    Filter {
        action: u8,
        matches: Vec<FilterMatch>,
    },
    Rate {
        rate: Value<RateValue>,
        burst: Option<Value<u32>>,
        queue_ms: Option<Value<u16>>,
    },
    Impair {
        items: Vec<ImpairItem>,
    },
    Storm {
        pps: Value<u32>,
        classes: u8,
    },
    Mirror {
        port: u8,
    },
}

#[derive(Debug, Arbitrary)]
enum RateValue {
    Bits(u32, u8),
    Packets(u32),
}

#[derive(Debug, Arbitrary)]
enum FilterMatch {
    SrcMac([u8; 6], Option<[u8; 6]>),
    DstMac([u8; 6], Option<[u8; 6]>),
    EtherType(Value<u16>),
    Vlan(Value<u16>),
    Src(std::net::IpAddr, u8),
    Dst(std::net::IpAddr, u8),
    Proto(Value<u8>),
    SrcPort(Value<u16>),
    DstPort(Value<u16>),
    IcmpType(Value<u8>),
}

#[derive(Debug, Arbitrary)]
enum ImpairItem {
    Loss(Value<u16>),
    Delay(Value<u16>),
    Jitter(Value<u16>),
    Duplicate(Value<u16>),
    Corrupt(Value<u16>),
    Reorder(Value<u16>),
    LossBurst(Value<u16>, Value<u16>),
    Normal,
    Seed(u64),
}

/// Renders `stages`; the second value says whether every value was in range and every
/// cross-field rule held, so the text must parse.
fn render(stages: &[Stage]) -> (String, bool) {
    let mut text = String::new();
    let mut valid = true;
    let mut count = 0;
    let mut last_was_filter = false;
    let percent = |v: &Value<u16>, valid: &mut bool| match v {
        Value::Good(n) => format!("{}%", f64::from(n % 1001) / 10.0),
        Value::Bad(h) => {
            *valid = false;
            h.word("%")
        }
    };
    for stage in stages {
        let is_filter = matches!(stage, Stage::Filter { .. });
        if !(is_filter && last_was_filter) {
            count += 1;
        }
        last_was_filter = is_filter;
        match stage {
            Stage::Filter { action, matches } => {
                text += ["filter allow", "filter drop", "filter count"][usize::from(action % 3)];
                for m in matches {
                    let number = |name: &str, v: &Value<u16>, valid: &mut bool| match v {
                        Value::Good(n) => format!(" {name} {n}"),
                        Value::Bad(h) => {
                            *valid = false;
                            format!(" {name} {}", h.word(""))
                        }
                    };
                    let small = |name: &str, v: &Value<u8>, valid: &mut bool| match v {
                        Value::Good(n) => format!(" {name} {n}"),
                        Value::Bad(h) => {
                            *valid = false;
                            format!(" {name} {}", h.word(""))
                        }
                    };
                    let mac = |m: &[u8; 6]| {
                        m.iter()
                            .map(|b| format!("{b:02x}"))
                            .collect::<Vec<_>>()
                            .join(":")
                    };
                    text += &match m {
                        FilterMatch::SrcMac(a, k) => format!(
                            " src-mac {}{}",
                            mac(a),
                            k.map(|k| format!("/{}", mac(&k))).unwrap_or_default()
                        ),
                        FilterMatch::DstMac(a, k) => format!(
                            " dst-mac {}{}",
                            mac(a),
                            k.map(|k| format!("/{}", mac(&k))).unwrap_or_default()
                        ),
                        FilterMatch::EtherType(Value::Good(t)) => format!(" ethertype {t:#06x}"),
                        FilterMatch::EtherType(v) => number("ethertype", v, &mut valid),
                        FilterMatch::Vlan(v) => number("vlan", v, &mut valid),
                        FilterMatch::Src(a, l) | FilterMatch::Dst(a, l) => {
                            let max = if a.is_ipv4() { 32 } else { 128 };
                            let name = if matches!(m, FilterMatch::Src(..)) {
                                "src"
                            } else {
                                "dst"
                            };
                            format!(" {name} {a}/{}", l % (max + 1))
                        }
                        FilterMatch::Proto(v) => small("proto", v, &mut valid),
                        FilterMatch::SrcPort(v) => number("src-port", v, &mut valid),
                        FilterMatch::DstPort(v) => number("dst-port", v, &mut valid),
                        FilterMatch::IcmpType(v) => small("icmp-type", v, &mut valid),
                    };
                }
            }
            Stage::Rate {
                rate,
                burst,
                queue_ms,
            } => {
                text += "rate ";
                match rate {
                    Value::Good(RateValue::Bits(n, unit)) => {
                        let (suffix, max) = [
                            ("bit", u32::MAX),
                            ("kbit", 1_000_000_000),
                            ("mbit", 1_000_000),
                            ("gbit", 1000),
                        ][usize::from(unit % 4)];
                        write!(text, "{}{suffix}", n % max + 1).unwrap();
                    }
                    Value::Good(RateValue::Packets(n)) => {
                        write!(text, "{}pps", (*n).max(1)).unwrap()
                    }
                    Value::Bad(h) => {
                        valid = false;
                        text += &h.word("mbit");
                    }
                }
                match burst {
                    Some(Value::Good(b)) => write!(text, " burst {}", b.max(&1)).unwrap(),
                    Some(Value::Bad(h)) => {
                        valid = false;
                        write!(text, " burst {}", h.word("k")).unwrap();
                    }
                    None => {}
                }
                match queue_ms {
                    Some(Value::Good(q)) => write!(text, " queue {}ms", q % 60_001).unwrap(),
                    Some(Value::Bad(h)) => {
                        valid = false;
                        write!(text, " queue {}", h.word("ms")).unwrap();
                    }
                    None => {}
                }
            }
            Stage::Impair { items } => {
                text += "impair";
                let (mut delay, mut jitter, mut reorder, mut normal) = (0u32, 0u32, false, false);
                for item in items {
                    let ms = |name: &str, v: &Value<u16>, slot: &mut u32, valid: &mut bool| match v
                    {
                        Value::Good(n) => {
                            *slot = u32::from(*n) % 60_001;
                            format!(" {name} {}ms", *slot)
                        }
                        Value::Bad(h) => {
                            *valid = false;
                            format!(" {name} {}", h.word("ms"))
                        }
                    };
                    text += &match item {
                        ImpairItem::Loss(v) => format!(" loss {}", percent(v, &mut valid)),
                        ImpairItem::Delay(v) => ms("delay", v, &mut delay, &mut valid),
                        ImpairItem::Jitter(v) => ms("jitter", v, &mut jitter, &mut valid),
                        ImpairItem::Duplicate(v) => {
                            format!(" duplicate {}", percent(v, &mut valid))
                        }
                        ImpairItem::Corrupt(v) => format!(" corrupt {}", percent(v, &mut valid)),
                        ImpairItem::Reorder(v) => {
                            let p = percent(v, &mut valid);
                            reorder = p != "0%";
                            format!(" reorder {p}")
                        }
                        ImpairItem::LossBurst(p, r) => format!(
                            " loss-burst {} {}",
                            percent(p, &mut valid),
                            percent(r, &mut valid)
                        ),
                        ImpairItem::Normal => {
                            normal = true;
                            " distribution normal".to_owned()
                        }
                        ImpairItem::Seed(s) => format!(" seed {s}"),
                    };
                }
                if (jitter > delay && !normal) || (reorder && delay == 0) {
                    valid = false;
                }
            }
            Stage::Storm { pps, classes } => {
                match pps {
                    Value::Good(n) => write!(text, "storm {}pps", n.max(&1)).unwrap(),
                    Value::Bad(h) => {
                        valid = false;
                        write!(text, "storm {}", h.word("pps")).unwrap();
                    }
                }
                for (bit, class) in ["broadcast", "multicast", "unknown-unicast"]
                    .iter()
                    .enumerate()
                {
                    if classes & (1 << bit) != 0 {
                        write!(text, " {class}").unwrap();
                    }
                }
            }
            Stage::Mirror { port } => write!(text, "mirror port p{port}").unwrap(),
        }
        text += "; ";
    }
    (text, valid && count <= 32)
}

#[derive(Debug, Arbitrary)]
struct Input {
    stages: Vec<Stage>,
    /// Frames run through the pipeline, each at this many microseconds after the last.
    frames: Vec<(u32, Vec<u8>)>,
}

fuzz_target!(|input: Input| {
    let (text, valid) = render(&input.stages);
    let parsed = Pipeline::parse(&text);
    if valid {
        assert!(parsed.is_ok(), "{text:?} was refused: {parsed:?}");
    } else if !input.stages.is_empty() {
        assert!(parsed.is_err(), "{text:?} was accepted");
    }
    let Ok(mut pipeline) = parsed else { return };
    let mirrors: u32 = pipeline
        .stages()
        .iter()
        .enumerate()
        .filter(|(_, s)| s.kind() == "mirror")
        .map(|(i, _)| 1 << i)
        .sum();
    let mut now = Timestamp::from_secs(1);
    for (gap, frame) in input.frames.iter().take(32) {
        now = Timestamp::from_micros(now.micros() + u64::from(*gap));
        let outcome = pipeline.process(now, frame, frame.len() % 2 == 0);
        assert_eq!(
            outcome.mirrors & !mirrors,
            0,
            "a mirror bit of a stage that is no mirror"
        );
        // Each stage delays at most a minute (impair's delay + 4 × jitter, five: a normal
        // jitter's tail is cut at four deviations, as netem's table is).
        assert!(
            outcome.delay <= Duration::from_secs(300) * pipeline.stages().len() as u32,
            "{text:?} delayed a frame {:?}",
            outcome.delay
        );
        if let Some((offset, _)) = outcome.corrupt {
            assert!(
                offset < frame.len().max(15),
                "corrupt byte {offset} of {}",
                frame.len()
            );
        }
    }
    for stage in pipeline.stages() {
        let _ = (stage.to_string(), stage.counters());
    }
});
