//! Token-bucket rate limiting in bits/s or packets/s.

use std::fmt;
use std::time::Duration;

use crate::time::Timestamp;

/// The limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rate {
    /// Bits per second.
    Bits(u64),
    /// Packets per second.
    Packets(u64),
}

/// What the bucket says about one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateVerdict {
    /// Send it now.
    Pass,
    /// Shaping: send it after this long.
    Delay(Duration),
    /// Over the limit (or the shaper's queue is full).
    Drop,
}

/// A token bucket. As a policer (no `queue`), a frame passes while the bucket holds any tokens
/// and may drive it into debt, so 64 KiB GSO segments pass a small bucket and the long-run rate
/// still holds. As a shaper (`queue 50ms`), excess frames wait until the bucket has paid for
/// them, up to that long, so TCP sees the rate instead of losses.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: Rate,
    queue: Option<Duration>,
    /// Bytes (or packets) the bucket holds at most.
    burst: f64,
    tokens: f64,
    last: Option<Timestamp>,
    /// Frames passed.
    pub passed: u64,
    /// Frames dropped.
    pub dropped: u64,
    /// Frames held back by the shaper.
    pub delayed: u64,
}

impl TokenBucket {
    /// A full bucket for `rate` holding `burst` bytes (or packets).
    pub fn new(rate: Rate, burst: u64) -> Self {
        TokenBucket {
            rate,
            queue: None,
            burst: burst as f64,
            tokens: burst as f64,
            last: None,
            passed: 0,
            dropped: 0,
            delayed: 0,
        }
    }

    /// Parses `10mbit [burst 64k] [queue 50ms]`, `500pps [burst 50]`.
    pub fn parse(words: &[&str]) -> Result<TokenBucket, String> {
        let spec = words
            .first()
            .ok_or("rate needs a value like 10mbit or 1000pps")?;
        let lower = spec.to_ascii_lowercase();
        let rate = if let Some(n) = lower.strip_suffix("pps") {
            Rate::Packets(
                n.parse()
                    .map_err(|_| format!("rate: bad packet rate {spec:?}"))?,
            )
        } else {
            let (n, mult) = [
                ("gbit", 1_000_000_000u64),
                ("mbit", 1_000_000),
                ("kbit", 1_000),
                ("bit", 1),
            ]
            .iter()
            .find_map(|(suffix, m)| lower.strip_suffix(suffix).map(|n| (n, *m)))
            .ok_or(format!(
                "rate: {spec:?} needs a unit: bit, kbit, mbit, gbit or pps"
            ))?;
            let n: f64 = n
                .parse()
                .map_err(|_| format!("rate: bad number in {spec:?}"))?;
            let bits = n * mult as f64;
            // Also refuses NaN and infinities, which `parse` accepts.
            if !(1.0..=MAX_BITS_PER_SEC).contains(&bits) {
                return Err(format!("rate: {spec:?} is out of range (1bit to 1000gbit)"));
            }
            Rate::Bits(bits as u64)
        };
        // 10 ms worth, at least 16 KiB (or 8 packets).
        let mut burst = match rate {
            Rate::Bits(b) => (b / 8 / 100).max(16 * 1024),
            Rate::Packets(p) => (p / 100).max(8),
        };
        let mut queue = None;
        let mut it = words[1..].iter();
        while let Some(word) = it.next() {
            match *word {
                "burst" => {
                    let size = it.next().ok_or("rate: burst needs a size")?;
                    burst = parse_size(size).ok_or(format!("rate: bad burst {size:?}"))?;
                }
                "queue" => {
                    let w = it.next().ok_or("rate: queue needs a time like 50ms")?;
                    let ms: u64 = w
                        .strip_suffix("ms")
                        .and_then(|n| n.parse().ok())
                        .ok_or(format!("rate: queue {w:?} must be in ms, like 50ms"))?;
                    if ms > MAX_QUEUE_MS {
                        return Err(format!("rate: queue {w:?} is longer than 60000ms"));
                    }
                    queue = Some(Duration::from_millis(ms));
                }
                other => return Err(format!("rate: unexpected {other:?} (burst, queue)")),
            }
        }
        if matches!(rate, Rate::Bits(0) | Rate::Packets(0)) {
            return Err("rate: must be above zero".into());
        }
        let mut bucket = TokenBucket::new(rate, burst);
        bucket.queue = queue;
        Ok(bucket)
    }

    /// Whether a frame of `len` bytes may pass at `now` (policer; a shaper never says no
    /// unless its queue is full, see [`TokenBucket::judge`]).
    pub fn admit(&mut self, now: Timestamp, len: usize) -> bool {
        self.judge(now, len) != RateVerdict::Drop
    }

    /// What to do with a frame of `len` bytes at `now`.
    pub fn judge(&mut self, now: Timestamp, len: usize) -> RateVerdict {
        let per_sec = match self.rate {
            Rate::Bits(b) => b as f64 / 8.0,
            Rate::Packets(p) => p as f64,
        };
        if let Some(last) = self.last {
            let elapsed = now.saturating_since(last).as_secs_f64();
            self.tokens = (self.tokens + elapsed * per_sec).min(self.burst);
        }
        self.last = Some(now);
        let cost = match self.rate {
            Rate::Bits(_) => len as f64,
            Rate::Packets(_) => 1.0,
        };
        match self.queue {
            None if self.tokens > 0.0 => {
                self.tokens -= cost;
                self.passed += 1;
                RateVerdict::Pass
            }
            None => {
                self.dropped += 1;
                RateVerdict::Drop
            }
            Some(limit) => {
                let after = self.tokens - cost;
                if after >= 0.0 {
                    self.tokens = after;
                    self.passed += 1;
                    return RateVerdict::Pass;
                }
                let wait = Duration::from_secs_f64(-after / per_sec);
                if wait > limit {
                    self.dropped += 1;
                    return RateVerdict::Drop;
                }
                self.tokens = after;
                self.delayed += 1;
                RateVerdict::Delay(wait)
            }
        }
    }
}

/// `64k`, `1m`, `1500`.
fn parse_size(s: &str) -> Option<u64> {
    let lower = s.to_ascii_lowercase();
    let (n, mult) = if let Some(n) = lower.strip_suffix('k') {
        (n, 1024)
    } else if let Some(n) = lower.strip_suffix('m') {
        (n, 1024 * 1024)
    } else {
        (lower.as_str(), 1)
    };
    n.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .filter(|&n| n <= MAX_BURST)
}

/// The fastest rate a stage takes: beyond any link here, and far from overflowing the maths.
const MAX_BITS_PER_SEC: f64 = 1e12;
/// The longest queue a shaper may hold, in ms.
const MAX_QUEUE_MS: u64 = 60_000;
/// The largest burst, in bytes (or packets).
const MAX_BURST: u64 = 1 << 40;

impl fmt::Display for TokenBucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.rate {
            Rate::Bits(b) => write!(f, "rate {b}bit burst {}", self.burst)?,
            Rate::Packets(p) => write!(f, "rate {p}pps burst {}", self.burst)?,
        }
        if let Some(q) = self.queue {
            write!(f, " queue {}ms", q.as_millis())?;
        }
        write!(
            f,
            "  [passed {}, delayed {}, dropped {}]",
            self.passed, self.delayed, self.dropped
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_the_rate_over_time() {
        // 8 Mbit/s = 1 MB/s; offer 1500-byte frames every 0.5 ms (3 MB/s) for 10 s.
        let mut b = TokenBucket::parse(&["8mbit", "burst", "16k"]).unwrap();
        let mut bytes = 0u64;
        for i in 0..20_000u64 {
            if b.admit(Timestamp::from_micros(i * 500), 1500) {
                bytes += 1500;
            }
        }
        let rate = bytes as f64 / 10.0;
        assert!((rate - 1_000_000.0).abs() < 20_000.0, "{rate} B/s");
        assert!(b.dropped > 0);
    }

    #[test]
    fn large_segments_pass_a_small_bucket_on_credit() {
        let mut b = TokenBucket::parse(&["1mbit", "burst", "1500"]).unwrap();
        assert!(
            b.admit(Timestamp::ZERO, 65_000),
            "a 64 KB segment passes a full bucket"
        );
        assert!(
            !b.admit(Timestamp::from_millis(100), 1500),
            "and the debt must be repaid"
        );
        assert!(b.admit(Timestamp::from_millis(600), 1500));
    }

    #[test]
    fn a_shaper_delays_instead_of_dropping() {
        let mut b = TokenBucket::parse(&["8mbit", "burst", "3000", "queue", "50ms"]).unwrap();
        let now = Timestamp::ZERO;
        assert_eq!(b.judge(now, 1500), RateVerdict::Pass);
        assert_eq!(b.judge(now, 1500), RateVerdict::Pass);
        // 1 MB/s: the third 1500-byte frame waits 1.5 ms, the fourth 3 ms.
        assert_eq!(
            b.judge(now, 1500),
            RateVerdict::Delay(Duration::from_micros(1500))
        );
        assert_eq!(
            b.judge(now, 1500),
            RateVerdict::Delay(Duration::from_micros(3000))
        );
        // 50 ms of backlog is the limit: more is dropped.
        let verdicts: Vec<_> = (0..40).map(|_| b.judge(now, 1500)).collect();
        assert!(verdicts.contains(&RateVerdict::Drop));
        assert!(b.delayed >= 30);
    }

    #[test]
    fn packet_rates() {
        let mut b = TokenBucket::parse(&["100pps", "burst", "1"]).unwrap();
        let passed = (0..1000u64)
            .filter(|i| b.admit(Timestamp::from_millis(*i), 60))
            .count();
        assert!((99..=101).contains(&passed), "{passed}");
        assert!(TokenBucket::parse(&["0pps"]).is_err());
        assert!(TokenBucket::parse(&["10"]).is_err());
    }
}
