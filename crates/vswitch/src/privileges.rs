//! Least privilege: the switch keeps the capabilities its setup and its runtime changes need
//! and drops every other one, from all its sets and the bounding set, before it makes anything
//! (so every thread it starts, and every program it could run, has no more).
//!
//! | capability | why the switch keeps it |
//! |---|---|
//! | `CAP_NET_ADMIN` | TAPs (`TUNSETIFF`), links up and promiscuous, rtnetlink, tc programs; `port add` |
//! | `CAP_NET_RAW` | packet sockets of `dev:` ports; `port add dev:...` |
//! | `CAP_SYS_ADMIN` | entering other namespaces: a TAP moved into a host is visited for its MTU and drops, a VXLAN underlay `netns=` |
//! | `CAP_BPF`, `CAP_PERFMON` | the fast path's and the steering's programs and maps, also for ports added later |
//! | `CAP_NET_BIND_SERVICE` | only with `--metrics` on a port below 1024 |
//!
//! Gone, among others: `CAP_DAC_OVERRIDE` and `CAP_DAC_READ_SEARCH` (a `mirror file` is written
//! with uid 0's own rights, not past every permission), `CAP_SYS_MODULE`, `CAP_SYS_PTRACE`,
//! `CAP_SETUID`/`CAP_SETGID`, `CAP_KILL`, `CAP_CHOWN`, `CAP_SYS_RAWIO`. With no_new_privs set, no
//! program the switch could be made to run gains any back.

use anyhow::{Context, Result};
use caps::{CapSet, Capability, CapsHashSet};

/// The capabilities a switch needs after it started (a superset of what starting needs).
pub fn switch_needs(metrics_port: Option<u16>) -> CapsHashSet {
    let mut keep: CapsHashSet = [
        Capability::CAP_NET_ADMIN,
        Capability::CAP_NET_RAW,
        Capability::CAP_SYS_ADMIN,
        Capability::CAP_BPF,
        Capability::CAP_PERFMON,
    ]
    .into_iter()
    .collect();
    if metrics_port.is_some_and(|p| p < 1024) {
        keep.insert(Capability::CAP_NET_BIND_SERVICE);
    }
    keep
}

/// Keeps only `keep` (of what the process has) in the effective, permitted and bounding sets,
/// clears the inheritable and ambient sets and sets no_new_privs. Call before any thread starts:
/// capabilities belong to threads, and new ones copy their creator's.
pub fn restrict_to(keep: &CapsHashSet) -> Result<()> {
    let permitted = caps::read(None, CapSet::Permitted).context("reading capabilities")?;
    let kept: CapsHashSet = permitted.intersection(keep).copied().collect();
    // The bounding set first: dropping from it needs CAP_SETPCAP, which goes next.
    if permitted.contains(&Capability::CAP_SETPCAP) {
        for cap in caps::read(None, CapSet::Bounding).context("reading the bounding set")? {
            if !keep.contains(&cap) {
                caps::drop(None, CapSet::Bounding, cap)
                    .with_context(|| format!("dropping {cap} from the bounding set"))?;
            }
        }
    }
    caps::clear(None, CapSet::Ambient).context("clearing the ambient set")?;
    caps::clear(None, CapSet::Inheritable).context("clearing the inheritable set")?;
    caps::set(None, CapSet::Effective, &kept).context("setting the effective set")?;
    caps::set(None, CapSet::Permitted, &kept).context("setting the permitted set")?;
    nix::sys::prctl::set_no_new_privs().context("setting no_new_privs")?;
    let mut names: Vec<String> = kept.iter().map(ToString::to_string).collect();
    names.sort();
    tracing::info!(kept = %names.join(","), "dropped every other capability");
    Ok(())
}
