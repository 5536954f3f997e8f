//! Guards that delete what they created when dropped, also while unwinding from a panic.

use std::ops::Deref;

use crate::error::NetnsError;
use crate::netns::Netns;
use crate::rtnl::Netlink;

/// A namespace that is deleted when the guard is dropped.
#[derive(Debug)]
pub struct NetnsGuard {
    netns: Netns,
}

impl NetnsGuard {
    /// Creates namespace `name` and brings its loopback up.
    pub fn create(name: &str) -> Result<NetnsGuard, NetnsError> {
        let guard = NetnsGuard {
            netns: Netns::create(name)?,
        };
        guard.netns.run(|| Netlink::open()?.set_up("lo"))??;
        Ok(guard)
    }
}

impl Deref for NetnsGuard {
    type Target = Netns;

    fn deref(&self) -> &Netns {
        &self.netns
    }
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        if let Err(e) = Netns::delete(self.netns.name()) {
            eprintln!(
                "warning: couldn't delete namespace {}: {e}",
                self.netns.name()
            );
        }
    }
}

/// A link in the namespace the guard was made in (the caller's, or a [`Netns`]), deleted on drop.
/// A veth pair needs one guard: deleting either end deletes both.
#[derive(Debug)]
pub struct LinkGuard {
    name: String,
    netns: Option<String>,
}

impl LinkGuard {
    /// Takes charge of link `name` in the caller's namespace.
    pub fn new(name: &str) -> LinkGuard {
        LinkGuard {
            name: name.to_owned(),
            netns: None,
        }
    }

    /// Takes charge of link `name` inside namespace `netns`.
    pub fn in_netns(name: &str, netns: &Netns) -> LinkGuard {
        LinkGuard {
            name: name.to_owned(),
            netns: Some(netns.name().to_owned()),
        }
    }

    /// The link's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for LinkGuard {
    fn drop(&mut self) {
        let delete = || Netlink::open()?.delete_link(&self.name);
        let result = match &self.netns {
            None => delete(),
            // The namespace may be gone already, taking the link with it: nothing to do then.
            Some(ns) => match Netns::open(ns) {
                Ok(ns) => ns.run(delete).and_then(|r| r),
                Err(_) => Ok(()),
            },
        };
        match result {
            Ok(()) | Err(NetnsError::LinkNotFound(_)) => {}
            Err(e) => eprintln!("warning: couldn't delete link {}: {e}", self.name),
        }
    }
}
