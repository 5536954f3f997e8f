//! Storm control: a limit on the flooded classes of frames.

use std::fmt;

use super::TokenBucket;
use crate::time::Timestamp;
use crate::wire::EthernetFrame;

/// Storm control: at most so many frames per second of the flooded classes — broadcast,
/// multicast, unknown unicast (all three unless some are named); known unicast is not touched.
#[derive(Debug, Clone)]
pub struct StormControl {
    pub(super) bucket: TokenBucket,
    broadcast: bool,
    multicast: bool,
    pub(super) unknown_unicast: bool,
}

impl StormControl {
    /// Parses `500pps [broadcast] [multicast] [unknown-unicast]`.
    pub(super) fn parse(words: &[&str]) -> Result<StormControl, String> {
        let (rate, rest) = words
            .split_first()
            .ok_or("storm needs a rate like 500pps")?;
        if !rate.ends_with("pps") {
            return Err(format!(
                "storm: {rate:?} must be in packets per second, like 500pps"
            ));
        }
        let mut storm = StormControl {
            bucket: TokenBucket::parse(&[rate])?,
            broadcast: rest.is_empty(),
            multicast: rest.is_empty(),
            unknown_unicast: rest.is_empty(),
        };
        for class in rest {
            match *class {
                "broadcast" => storm.broadcast = true,
                "multicast" => storm.multicast = true,
                "unknown-unicast" => storm.unknown_unicast = true,
                other => {
                    return Err(format!(
                        "storm: {other:?} is not broadcast, multicast or unknown-unicast"
                    ));
                }
            }
        }
        Ok(storm)
    }

    pub(super) fn admit(&mut self, now: Timestamp, frame: &[u8], unknown_unicast: bool) -> bool {
        let Ok(eth) = EthernetFrame::new_checked(frame) else {
            return true;
        };
        let dst = eth.dst();
        let limited = if dst.is_broadcast() {
            self.broadcast
        } else if dst.is_multicast() {
            self.multicast
        } else {
            self.unknown_unicast && unknown_unicast
        };
        !limited || self.bucket.admit(now, frame.len())
    }
}

impl fmt::Display for StormControl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let classes: Vec<&str> = [
            (self.broadcast, "broadcast"),
            (self.multicast, "multicast"),
            (self.unknown_unicast, "unknown-unicast"),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, name)| *name)
        .collect();
        write!(f, "storm {}: {}", classes.join("+"), self.bucket)
    }
}
