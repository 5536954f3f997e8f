//! Netem-like impairments: loss, delay with jitter, duplication — repeatable with a seed.

use std::fmt;
use std::time::Duration;

use crate::time::Timestamp;

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
}

/// Loss, delay, jitter and duplication for one port and direction.
#[derive(Debug, Clone)]
pub struct Impairment {
    loss: f64,
    delay: Duration,
    jitter: Duration,
    duplicate: f64,
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
    let n: f64 = n.parse().map_err(|_| format!("{what}: bad number in {w:?}"))?;
    if n < 0.0 || n > 60.0 / unit {
        return Err(format!("{what}: {w:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(n * unit))
}

impl Impairment {
    /// Parses `loss 1% delay 20ms jitter 2ms duplicate 0.5% seed 7` (any subset, any order).
    pub fn parse(words: &[&str]) -> Result<Impairment, String> {
        let mut imp = Impairment {
            loss: 0.0,
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            duplicate: 0.0,
            seed: 1,
            rng: Rng::new(1),
            last_release: None,
            dropped: 0,
            delayed: 0,
            duplicated: 0,
        };
        let mut it = words.iter();
        while let Some(word) = it.next() {
            match *word {
                "loss" => imp.loss = parse_percent(it.next(), "loss")?,
                "delay" => imp.delay = parse_duration(it.next(), "delay")?,
                "jitter" => imp.jitter = parse_duration(it.next(), "jitter")?,
                "duplicate" => imp.duplicate = parse_percent(it.next(), "duplicate")?,
                "seed" => {
                    let w = it.next().ok_or("seed needs a number")?;
                    imp.seed = w.parse().map_err(|_| format!("seed: {w:?} is not a number"))?;
                }
                other => return Err(format!("impair: unknown {other:?} (loss, delay, jitter, duplicate, seed)")),
            }
        }
        if imp.jitter > imp.delay {
            return Err("impair: jitter can't exceed the delay".into());
        }
        imp.rng = Rng::new(imp.seed);
        Ok(imp)
    }

    /// Decides the fate of the next frame at `now`.
    pub fn decide(&mut self, now: Timestamp) -> ImpairVerdict {
        if self.loss > 0.0 && self.rng.next_f64() < self.loss {
            self.dropped += 1;
            return ImpairVerdict {
                drop: true,
                ..ImpairVerdict::default()
            };
        }
        let mut verdict = ImpairVerdict::default();
        if !self.delay.is_zero() {
            let spread = self.jitter.as_secs_f64() * (2.0 * self.rng.next_f64() - 1.0);
            let wanted = Duration::from_secs_f64((self.delay.as_secs_f64() + spread).max(0.0));
            // Never release before the previous frame: order is kept.
            let release = (now + wanted).max(self.last_release.unwrap_or(Timestamp::ZERO));
            self.last_release = Some(release);
            verdict.delay = release.saturating_since(now);
            self.delayed += 1;
        }
        if self.duplicate > 0.0 && self.rng.next_f64() < self.duplicate {
            verdict.duplicate = true;
            self.duplicated += 1;
        }
        verdict
    }
}

impl fmt::Display for Impairment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "impair loss {}% delay {:?} jitter {:?} duplicate {}% seed {}  [dropped {}, delayed {}, duplicated {}]",
            self.loss * 100.0,
            self.delay,
            self.jitter,
            self.duplicate * 100.0,
            self.seed,
            self.dropped,
            self.delayed,
            self.duplicated
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
            (0..2000).map(|_| imp.decide(Timestamp::ZERO).drop).collect::<Vec<_>>()
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
            let d = imp.decide(now).delay;
            assert!(d >= Duration::from_millis(40) - Duration::from_micros(i * 100).min(Duration::from_millis(40)));
            assert!(d <= Duration::from_millis(61));
            let release = now + d;
            assert!(release >= last, "reordered");
            last = release;
        }
        assert!(Impairment::parse(&["delay", "5ms", "jitter", "6ms"]).is_err());
        assert!(Impairment::parse(&["delay", "5"]).is_err());
    }
}
