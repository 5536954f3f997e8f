//! Devices a switch made and left behind when it died (SIGKILL, a crash: no `Drop` ran).
//!
//! Each such device says in its alias which switch made it (`vswitch ..., pid N`), so the next
//! switch that wants the name can tell a dead switch's device from a live one's or anyone
//! else's.

use std::io;

use vswitch_netns::Netlink;

/// The alias for a device this process makes: `vswitch WHAT, pid N`.
pub(crate) fn alias(what: &str) -> String {
    format!("vswitch {what}, pid {}", std::process::id())
}

/// The process that made a device with this alias, if a switch did.
fn owner(alias: &str) -> Option<i32> {
    let (_, pid) = alias.strip_prefix("vswitch ")?.rsplit_once(", pid ")?;
    pid.parse().ok()
}

/// Removes the device called `name` (in the caller's namespace) if a switch that is no longer
/// running made it, so that the name can be used again. One a running switch or anyone else
/// made is left alone (and refused later as existing).
pub(crate) fn remove_if_orphaned(nl: &mut Netlink, name: &str) -> io::Result<()> {
    let Ok(info) = nl.link(name) else {
        return Ok(());
    };
    let Some(pid) = info.alias.as_deref().and_then(owner) else {
        return Ok(());
    };
    // Signal 0 checks that the process exists; ESRCH: it doesn't.
    let dead = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None)
        == Err(nix::errno::Errno::ESRCH);
    if dead {
        tracing::warn!(
            device = name,
            pid,
            "removing a device left by a switch that died"
        );
        nl.delete_link(name).map_err(io::Error::other)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_name_their_switch() {
        assert_eq!(owner("vswitch vxlan, pid 42"), Some(42));
        assert_eq!(owner("vswitch relay for TAP t0, pid 7"), Some(7));
        assert_eq!(owner(&alias("vxlan")), Some(std::process::id() as i32));
        assert_eq!(owner("my vxlan, pid 42"), None);
        assert_eq!(owner("vswitch vxlan"), None);
    }
}
