//! Netem-like impairments: random or bursty (Gilbert-Elliott) loss, delay with uniform or normal
//! jitter, reordering, duplication and corruption — repeatable with a seed.

use std::fmt;
use std::time::Duration;

use crate::time::Timestamp;

/// Where a normal jitter's tail is cut, in deviations: netem's `normal` table spans about
/// ±4 (iproute2's `normal.dist`), so no delay exceeds `delay + 4 × jitter`.
pub const NORMAL_TAIL: f64 = 4.0;

/// A small fast PRNG (xorshift64*), seeded for repeatable experiments.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    /// Uniform in [0, 1).
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// What to do with one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ImpairVerdict {
    /// Lose it.
    pub drop: bool,
    /// Hold it back this long.
    pub delay: Duration,
    /// Send it twice.
    pub duplicate: bool,
    /// Flip this bit: (byte offset into the frame's payload after the Ethernet header, bit).
    pub corrupt: Option<(usize, u8)>,
}

/// How jitter is spread around the delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Distribution {
    Uniform,
    Normal,
}

/// Gilbert-Elliott burst loss: a good state that loses nothing and a bad one that loses all,
/// switching with probability `p` (good to bad) and `r` (bad to good) per frame.
#[derive(Debug, Clone, Copy, PartialEq)]
struct BurstLoss {
    p: f64,
    r: f64,
    bad: bool,
}

/// Loss, delay, jitter and duplication for one port and direction.
#[derive(Debug, Clone)]
pub struct Impairment {
    loss: f64,
    burst: Option<BurstLoss>,
    delay: Duration,
    jitter: Duration,
    distribution: Distribution,
    reorder: f64,
    duplicate: f64,
    corrupt: f64,
    seed: u64,
    rng: Rng,
    /// Release time of the last delayed frame: frames keep their order.
    last_release: Option<Timestamp>,
    /// Frames lost.
    pub dropped: u64,
    /// Frames delayed.
    pub delayed: u64,
    /// Frames duplicated.
    pub duplicated: u64,
    /// Frames with a flipped bit.
    pub corrupted: u64,
    /// Frames sent ahead of delayed ones.
    pub reordered: u64,
}

fn parse_percent(w: Option<&&str>, what: &str) -> Result<f64, String> {
    let w = w.ok_or(format!("{what} needs a percentage"))?;
    let n: f64 = w
        .strip_suffix('%')
        .unwrap_or(w)
        .parse()
        .map_err(|_| format!("{what}: {w:?} is not a percentage"))?;
    if !(0.0..=100.0).contains(&n) {
        return Err(format!("{what}: {w:?} is not between 0% and 100%"));
    }
    Ok(n / 100.0)
}

fn parse_duration(w: Option<&&str>, what: &str) -> Result<Duration, String> {
    let w = w.ok_or(format!("{what} needs a time like 20ms"))?;
    let (n, unit) = if let Some(n) = w.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = w.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = w.strip_suffix('s') {
        (n, 1.0)
    } else {
        return Err(format!("{what}: {w:?} needs a unit: us, ms or s"));
    };
    let n: f64 = n
        .parse()
        .map_err(|_| format!("{what}: bad number in {w:?}"))?;
    // `parse` takes "NaN" and "inf"; neither is a time.
    if !n.is_finite() || n < 0.0 || n > 60.0 / unit {
        return Err(format!("{what}: {w:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(n * unit))
}

impl Impairment {
    /// Parses `loss 1% delay 20ms jitter 2ms distribution normal duplicate 0.5% corrupt 0.1%
    /// reorder 25% seed 7`, or `loss-burst P% R%` for Gilbert-Elliott loss (any subset, any
    /// order).
    pub fn parse(words: &[&str]) -> Result<Impairment, String> {
        let mut imp = Impairment {
            loss: 0.0,
            burst: None,
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            distribution: Distribution::Uniform,
            reorder: 0.0,
            duplicate: 0.0,
            corrupt: 0.0,
            seed: 1,
            rng: Rng::new(1),
            last_release: None,
            dropped: 0,
            delayed: 0,
            duplicated: 0,
            corrupted: 0,
            reordered: 0,
        };
        let mut it = words.iter();
        while let Some(word) = it.next() {
            match *word {
                "loss" => imp.loss = parse_percent(it.next(), "loss")?,
                "delay" => imp.delay = parse_duration(it.next(), "delay")?,
                "jitter" => imp.jitter = parse_duration(it.next(), "jitter")?,
                "duplicate" => imp.duplicate = parse_percent(it.next(), "duplicate")?,
                "corrupt" => imp.corrupt = parse_percent(it.next(), "corrupt")?,
                "reorder" => imp.reorder = parse_percent(it.next(), "reorder")?,
                "loss-burst" => {
                    imp.burst = Some(BurstLoss {
                        p: parse_percent(it.next(), "loss-burst p")?,
                        r: parse_percent(it.next(), "loss-burst r")?,
                        bad: false,
                    })
                }
                "distribution" => {
                    imp.distribution = match it.next() {
                        Some(&"uniform") => Distribution::Uniform,
                        Some(&"normal") => Distribution::Normal,
                        other => {
                            return Err(format!(
                                "distribution: {other:?} is not uniform or normal"
                            ));
                        }
                    }
                }
                "seed" => {
                    let w = it.next().ok_or("seed needs a number")?;
                    imp.seed = w
                        .parse()
                        .map_err(|_| format!("seed: {w:?} is not a number"))?;
                }
                other => {
                    return Err(format!(
                        "impair: unknown {other:?} (loss, delay, jitter, duplicate, seed)"
                    ));
                }
            }
        }
        if imp.jitter > imp.delay && imp.distribution == Distribution::Uniform {
            return Err("impair: jitter can't exceed the delay".into());
        }
        if imp.reorder > 0.0 && imp.delay.is_zero() {
            return Err("impair: reorder needs a delay to overtake".into());
        }
        imp.rng = Rng::new(imp.seed);
        Ok(imp)
    }

    fn lost(&mut self) -> bool {
        if let Some(b) = &mut self.burst {
            let flip = if b.bad { b.r } else { b.p };
            if self.rng.next_f64() < flip {
                b.bad = !b.bad;
            }
            return b.bad;
        }
        self.loss > 0.0 && self.rng.next_f64() < self.loss
    }

    /// A jitter offset in seconds: uniform in ±jitter, or normal with jitter as its deviation,
    /// cut at ±[`NORMAL_TAIL`] deviations as netem's table of the normal distribution is (an
    /// unbounded tail would hold a rare frame back for half an hour).
    fn spread(&mut self) -> f64 {
        let j = self.jitter.as_secs_f64();
        match self.distribution {
            Distribution::Uniform => j * (2.0 * self.rng.next_f64() - 1.0),
            Distribution::Normal => {
                // Box-Muller.
                let u1 = self.rng.next_f64().max(f64::MIN_POSITIVE);
                let u2 = self.rng.next_f64();
                let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
                j * z.clamp(-NORMAL_TAIL, NORMAL_TAIL)
            }
        }
    }

    /// Decides the fate of the next frame at `now`; `len` is its length after the Ethernet
    /// header (where a corrupted bit may land).
    pub fn decide(&mut self, now: Timestamp, len: usize) -> ImpairVerdict {
        if self.lost() {
            self.dropped += 1;
            return ImpairVerdict {
                drop: true,
                ..ImpairVerdict::default()
            };
        }
        let mut verdict = ImpairVerdict::default();
        if !self.delay.is_zero() {
            if self.reorder > 0.0 && self.rng.next_f64() < self.reorder {
                // Sent at once, overtaking the frames still held back.
                self.reordered += 1;
            } else {
                let spread = self.spread();
                let wanted = Duration::from_secs_f64((self.delay.as_secs_f64() + spread).max(0.0));
                // Never release before the previous frame: order is kept.
                let release = (now + wanted).max(self.last_release.unwrap_or(Timestamp::ZERO));
                self.last_release = Some(release);
                verdict.delay = release.saturating_since(now);
                self.delayed += 1;
            }
        }
        if self.duplicate > 0.0 && self.rng.next_f64() < self.duplicate {
            verdict.duplicate = true;
            self.duplicated += 1;
        }
        if self.corrupt > 0.0 && len > 0 && self.rng.next_f64() < self.corrupt {
            let offset = ((self.rng.next_f64() * len as f64) as usize).min(len - 1);
            let bit = (self.rng.next_f64() * 8.0) as u8 % 8;
            verdict.corrupt = Some((offset, bit));
            self.corrupted += 1;
        }
        verdict
    }
}

impl fmt::Display for Impairment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "impair")?;
        match self.burst {
            Some(b) => write!(f, " loss-burst {}% {}%", b.p * 100.0, b.r * 100.0)?,
            None => write!(f, " loss {}%", self.loss * 100.0)?,
        }
        write!(
            f,
            " delay {:?} jitter {:?} distribution {} reorder {}% duplicate {}% corrupt {}% seed {}",
            self.delay,
            self.jitter,
            if self.distribution == Distribution::Normal {
                "normal"
            } else {
                "uniform"
            },
            self.reorder * 100.0,
            self.duplicate * 100.0,
            self.corrupt * 100.0,
            self.seed
        )?;
        write!(
            f,
            "  [dropped {}, delayed {}, reordered {}, duplicated {}, corrupted {}]",
            self.dropped, self.delayed, self.reordered, self.duplicated, self.corrupted
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_is_near_its_rate_and_repeatable_with_a_seed() {
        let run = || {
            let mut imp = Impairment::parse(&["loss", "10%", "seed", "42"]).unwrap();
            (0..2000)
                .map(|_| imp.decide(Timestamp::ZERO, 100).drop)
                .collect::<Vec<_>>()
        };
        let a = run();
        let lost = a.iter().filter(|d| **d).count();
        assert!((140..=260).contains(&lost), "{lost} of 2000");
        assert_eq!(a, run(), "same seed, same losses");
    }

    #[test]
    fn delay_with_jitter_keeps_order() {
        let mut imp = Impairment::parse(&["delay", "50ms", "jitter", "10ms"]).unwrap();
        let mut last = Timestamp::ZERO;
        for i in 0..1000u64 {
            let now = Timestamp::from_micros(i * 100);
            let d = imp.decide(now, 100).delay;
            assert!(
                d >= Duration::from_millis(40)
                    - Duration::from_micros(i * 100).min(Duration::from_millis(40))
            );
            assert!(d <= Duration::from_millis(61));
            let release = now + d;
            assert!(release >= last, "reordered");
            last = release;
        }
        assert!(Impairment::parse(&["delay", "5ms", "jitter", "6ms"]).is_err());
        assert!(Impairment::parse(&["delay", "5"]).is_err());
        assert!(
            Impairment::parse(&["reorder", "5%"]).is_err(),
            "nothing to overtake"
        );
    }

    #[test]
    fn burst_loss_comes_in_runs() {
        // p = 1%, r = 25%: about 4% lost, in runs averaging 4 frames.
        let mut imp = Impairment::parse(&["loss-burst", "1%", "25%", "seed", "3"]).unwrap();
        let lost: Vec<bool> = (0..100_000)
            .map(|_| imp.decide(Timestamp::ZERO, 100).drop)
            .collect();
        let total = lost.iter().filter(|l| **l).count() as f64;
        let runs = lost.windows(2).filter(|w| !w[0] && w[1]).count() as f64;
        assert!((0.03..0.05).contains(&(total / 1e5)), "{total}");
        assert!(
            (3.0..5.5).contains(&(total / runs)),
            "mean run {}",
            total / runs
        );
    }

    /// A 100 ms delay with a normal jitter of 10 ms, never reordered.
    fn normal_100ms_jitter_10ms() -> Impairment {
        Impairment::parse(&[
            "delay",
            "100ms",
            "jitter",
            "10ms",
            "distribution",
            "normal",
            "reorder",
            "0%",
        ])
        .unwrap()
    }

    #[test]
    fn normal_jitter_spreads_like_a_normal() {
        let mut imp = normal_100ms_jitter_10ms();
        // Frames far apart, so order-keeping never stretches a delay.
        let delays: Vec<f64> = (0..10_000u64)
            .map(|i| imp.decide(Timestamp::from_secs(i), 100).delay.as_secs_f64() * 1000.0)
            .collect();
        let mean = delays.iter().sum::<f64>() / delays.len() as f64;
        let sd =
            (delays.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / delays.len() as f64).sqrt();
        assert!((mean - 100.0).abs() < 0.5, "mean {mean}");
        assert!((sd - 10.0).abs() < 0.5, "deviation {sd}");
    }

    #[test]
    fn a_normal_jitter_ends_at_four_deviations() {
        // Found by fuzzing: a normal tail took a 51 s delay with 51 s of jitter past 126 s.
        let mut imp = normal_100ms_jitter_10ms();
        // Beyond 4 deviations lie 6 in 100 000 samples of a normal: some of these would.
        let furthest = (0..200_000u64)
            .map(|i| {
                let d = imp.decide(Timestamp::from_secs(i), 100).delay.as_secs_f64() * 1000.0;
                (d - 100.0).abs()
            })
            .fold(0.0, f64::max);
        assert!(furthest <= 40.0 + 1e-6, "{furthest} ms from the mean");
        assert!(furthest > 30.0, "the tail is there: {furthest} ms");
    }

    #[test]
    fn reorder_and_corrupt() {
        let mut imp = Impairment::parse(&[
            "delay", "10ms", "reorder", "50%", "corrupt", "100%", "seed", "9",
        ])
        .unwrap();
        let verdicts: Vec<ImpairVerdict> =
            (0..1000).map(|_| imp.decide(Timestamp::ZERO, 60)).collect();
        let immediate = verdicts.iter().filter(|v| v.delay.is_zero()).count();
        assert!((400..600).contains(&immediate), "{immediate} sent ahead");
        assert!(
            verdicts
                .iter()
                .all(|v| v.corrupt.is_some_and(|(o, b)| o < 60 && b < 8))
        );
    }
}
