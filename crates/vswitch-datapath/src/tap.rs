//! TAP devices owned by the switch: create or attach, bring up, read and write frames.
//!
//! Our own small module rather than `tokio-tun`: we need owned fds usable from plain threads,
//! names that are never silently truncated, and (next) `IFF_VNET_HDR`/`TUNSETOFFLOAD`.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

use crate::port::{CpuSteering, DeviceCapabilities, DeviceStatus, PortDevice};
use crate::sys;
use vswitch_netns::Netns;

/// Longest interface name Linux accepts (IFNAMSIZ - 1).
pub const MAX_IFNAME_LEN: usize = 15;

/// Why a TAP could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// Empty, too long, or with characters Linux rejects.
    #[error(transparent)]
    InvalidName(#[from] InvalidIfName),
    /// `/dev/net/tun` is missing or cannot be opened.
    #[error("couldn't open /dev/net/tun (is the tun module loaded?)")]
    OpenTun(#[source] io::Error),
    /// The caller lacks CAP_NET_ADMIN.
    #[error("creating TAP {0} needs CAP_NET_ADMIN (run as root or grant the capability)")]
    PermissionDenied(String),
    /// An interface of that name exists and is not a TAP.
    #[error("interface {0} exists and is not a TAP device")]
    NotATap(String),
    /// A persistent TAP of that name is attached to another process.
    #[error("TAP {0} is busy: another process has it open")]
    Busy(String),
    /// Any other failure of an ioctl.
    #[error("{op} on TAP {name} failed")]
    Ioctl {
        /// What was attempted.
        op: &'static str,
        /// The interface.
        name: String,
        /// The errno.
        #[source]
        source: io::Error,
    },
}

/// An interface name Linux would reject.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidIfName {
    /// The empty string.
    #[error("interface name is empty")]
    Empty,
    /// Longer than 15 bytes.
    #[error("interface name {0:?} is longer than 15 bytes")]
    TooLong(String),
    /// Contains '/', ':', whitespace or NUL, or is "." or "..".
    #[error("interface name {0:?} contains characters Linux does not allow (/, :, whitespace)")]
    BadCharacters(String),
}

/// Checks `name` against the kernel's `dev_valid_name` rules.
pub fn validate_ifname(name: &str) -> Result<(), InvalidIfName> {
    if name.is_empty() {
        return Err(InvalidIfName::Empty);
    }
    if name.len() > MAX_IFNAME_LEN {
        return Err(InvalidIfName::TooLong(name.to_owned()));
    }
    if name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c == '\0' || c.is_whitespace())
    {
        return Err(InvalidIfName::BadCharacters(name.to_owned()));
    }
    Ok(())
}

/// An open TAP device. Dropping it closes the fd, which removes a TAP that this process created
/// (it is never made persistent) and leaves a pre-existing persistent one in place.
#[derive(Debug)]
pub struct Tap {
    /// One fd per queue; the first is used for writing and ioctls.
    queues: Vec<File>,
    name: String,
    offload: bool,
    /// Under CPU steering, when each queue was last found empty (see `crate::bpf`).
    drained: std::sync::OnceLock<crate::bpf::DrainClock>,
    /// Whether to say, once, that a TAP moved into another namespace could be relayed.
    may_hint: std::sync::atomic::AtomicBool,
    /// The namespace the TAP was opened in (the switch's), by inode.
    home: Option<u64>,
}

pub(crate) fn open_tun(name: &str) -> Result<File, TapError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open("/dev/net/tun")
        .map_err(|e| match e.raw_os_error() {
            Some(libc::EACCES) | Some(libc::EPERM) => TapError::PermissionDenied(name.into()),
            _ => TapError::OpenTun(e),
        })
}

impl Tap {
    /// Creates TAP `name` (IFF_TAP | IFF_NO_PI), or attaches to an existing persistent TAP of
    /// that name, and sets it up. The fd is non-blocking.
    ///
    /// With `offload`, and if the kernel supports it, frames carry a virtio-net header and the
    /// TAP takes and gives partial checksums and TCP segments up to 64 KiB (`IFF_VNET_HDR`,
    /// `TUNSETOFFLOAD`): the kernel stacks on either side then skip segmentation and checksums.
    pub fn open(name: &str, offload: bool) -> Result<Tap, TapError> {
        Tap::open_queues(name, offload, 1)
    }

    /// Like [`Tap::open`], with `queues` fds on one device (`IFF_MULTI_QUEUE`) where the kernel
    /// supports it: the kernel spreads the flows it sends into the TAP over the queues (each flow
    /// stays on one), so several workers can read one port. A persistent TAP created without
    /// multi-queue is attached with one queue.
    pub fn open_queues(name: &str, offload: bool, queues: usize) -> Result<Tap, TapError> {
        validate_ifname(name)?;
        let cname = CString::new(name).map_err(|_| InvalidIfName::BadCharacters(name.into()))?;
        let existed = sys::interface_exists(&cname);
        let file = open_tun(name)?;
        let features = sys::tun_get_features(file.as_fd()).unwrap_or(0);
        let offload = offload && features & sys::IFF_VNET_HDR as libc::c_uint != 0;
        let mut flags = sys::IFF_TAP | sys::IFF_NO_PI;
        if offload {
            flags |= sys::IFF_VNET_HDR;
        }
        let multi_queue = queues > 1 && features & sys::IFF_MULTI_QUEUE as libc::c_uint != 0;
        if multi_queue {
            flags |= sys::IFF_MULTI_QUEUE;
        }
        let mut attached = sys::tun_set_iff(file.as_fd(), name, flags);
        if multi_queue
            && existed
            && attached
                .as_ref()
                .is_err_and(|e| e.raw_os_error() == Some(libc::EINVAL))
        {
            flags &= !sys::IFF_MULTI_QUEUE;
            attached = sys::tun_set_iff(file.as_fd(), name, flags);
        }
        attached.map_err(|e| match e.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => TapError::PermissionDenied(name.into()),
            Some(libc::EINVAL) if existed => TapError::NotATap(name.into()),
            Some(libc::EBUSY) => TapError::Busy(name.into()),
            _ => TapError::Ioctl {
                op: "TUNSETIFF",
                name: name.into(),
                source: e,
            },
        })?;
        let mut tap = Tap {
            queues: vec![file],
            name: name.to_owned(),
            offload,
            drained: std::sync::OnceLock::new(),
            may_hint: std::sync::atomic::AtomicBool::new(true),
            home: File::open("/proc/thread-self/ns/net")
                .and_then(|f| netns_inode(f.as_fd()))
                .ok(),
        };
        if flags & sys::IFF_MULTI_QUEUE != 0 {
            for _ in 1..queues {
                let queue = open_tun(name)?;
                sys::tun_set_iff(queue.as_fd(), name, flags)
                    .map_err(|e| tap.ioctl_error("TUNSETIFF (another queue)", e))?;
                tap.queues.push(queue);
            }
        }
        if offload {
            // UDP segmentation where the kernel has it (6.2+), else TCP and checksums only.
            sys::tun_set_offload(tap.queues[0].as_fd(), sys::TUN_OFFLOADS | sys::TUN_USO)
                .or_else(|_| sys::tun_set_offload(tap.queues[0].as_fd(), sys::TUN_OFFLOADS))
                .map_err(|e| tap.ioctl_error("TUNSETOFFLOAD", e))?;
        }
        tracing::info!(
            tap = name,
            offload,
            queues = tap.queues.len(),
            "{}",
            if existed {
                "attached to existing TAP"
            } else {
                "created TAP"
            }
        );
        let sock = sys::ioctl_socket().map_err(|e| tap.ioctl_error("socket", e))?;
        sys::if_set_up(sock.as_fd(), name).map_err(|e| tap.ioctl_error("SIOCSIFFLAGS", e))?;
        Ok(tap)
    }

    fn ioctl_error(&self, op: &'static str, source: io::Error) -> TapError {
        TapError::Ioctl {
            op,
            name: self.name.clone(),
            source,
        }
    }

    /// The name the TAP was opened with.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Frames the TAP dropped because its queue (ring) toward us was full: its `TX dropped`
    /// counter, read where the TAP lives now.
    pub fn ring_drops(&self) -> io::Result<u64> {
        self.where_it_lives(ring_drops_here)
    }

    /// Runs `f` with the TAP's current name on a thread in the namespace it lives in now.
    fn where_it_lives<T: Send>(
        &self,
        f: impl FnOnce(&str) -> io::Result<T> + Send,
    ) -> io::Result<T> {
        let name = sys::tun_get_name(self.queues[0].as_fd())?;
        let netns = sys::tun_get_netns(self.queues[0].as_fd())?;
        in_netns(netns, || f(&name))
    }
}

impl Tap {
    /// A TAP of a relay says nothing about relays.
    pub(crate) fn relayed(&self) {
        self.may_hint
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }

    /// The namespace the TAP lives in now, by inode.
    pub(crate) fn netns(&self) -> io::Result<u64> {
        netns_inode(sys::tun_get_netns(self.queues[0].as_fd())?.as_fd())
    }

    /// Once a TAP serves a host in another namespace (moved there by the user), says how the
    /// kernel could carry it instead of the switch's copies.
    fn hint_relay(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        if self.may_hint.load(Relaxed)
            && let (Some(home), Ok(now)) = (self.home, self.netns())
            && now != home
            && self.may_hint.swap(false, Relaxed)
        {
            tracing::info!(
                tap = self.name,
                "the TAP serves a host in another namespace through the switch's copies; \
                 open it as tap:NAME@NAMESPACE for the fast path to carry its known unicast"
            );
        }
    }
}

/// The inode of the namespace file `fd` (what tells namespaces apart).
pub(crate) fn netns_inode(fd: BorrowedFd<'_>) -> io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(File::from(fd.try_clone_to_owned()?).metadata()?.ino())
}

/// [`Tap::ring_drops`] for the TAP called `name` in the calling thread's namespace.
fn ring_drops_here(name: &str) -> io::Result<u64> {
    let table = std::fs::read_to_string("/proc/thread-self/net/dev")?;
    tx_dropped(&table, name)
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{name} not in net/dev")))
}

/// Runs `f` on a short-lived thread that entered the namespace `netns` ([`Netns::run`]), so
/// that no other thread's namespace changes (sockets it opens and `/proc/thread-self/net` are
/// that namespace's).
pub(crate) fn in_netns<T: Send>(
    netns: OwnedFd,
    f: impl FnOnce() -> io::Result<T> + Send,
) -> io::Result<T> {
    Netns::from_fd("a port's namespace", netns)
        .run(f)
        .map_err(io::Error::other)?
}

/// The transmit `drop` column of interface `name` in a `/proc/net/dev` table.
fn tx_dropped(table: &str, name: &str) -> Option<u64> {
    table.lines().find_map(|line| {
        let (iface, counters) = line.split_once(':')?;
        if iface.trim() != name {
            return None;
        }
        // Receive: bytes packets errs drop fifo frame compressed multicast; then transmit:
        // bytes packets errs drop ...
        counters.split_whitespace().nth(11)?.parse().ok()
    })
}

impl PortDevice for Tap {
    fn capabilities(&self) -> DeviceCapabilities {
        DeviceCapabilities {
            rx_queues: self.queues.len(),
            mac: sys::tun_get_hwaddr(self.queues[0].as_fd())
                .ok()
                .map(vswitch_core::MacAddr),
            ..DeviceCapabilities::new("tap").vnet_header(self.offload)
        }
    }

    fn recv(&self, queue: usize, buf: &mut [u8]) -> io::Result<usize> {
        (&self.queues[queue.min(self.queues.len() - 1)]).read(buf)
    }

    fn send(&self, frame: &[u8]) -> io::Result<()> {
        (&self.queues[0]).write(frame).map(drop)
    }

    fn fd(&self, queue: usize) -> BorrowedFd<'_> {
        self.queues[queue.min(self.queues.len() - 1)].as_fd()
    }

    /// The MTU and the ring's drops (what the kernel sends into a TAP goes into a ring per
    /// queue that tail-drops when full), both read in one visit to the TAP's namespace.
    fn status(&self) -> DeviceStatus {
        self.hint_relay();
        let both = self.where_it_lives(|name| {
            let mtu = sys::ioctl_socket().and_then(|sock| sys::if_mtu(sock.as_fd(), name));
            Ok((mtu.ok(), ring_drops_here(name).ok()))
        });
        let (mtu, kernel_drops) = both.unwrap_or((None, None));
        DeviceStatus {
            present: true,
            mtu,
            kernel_drops,
        }
    }

    fn cpu_steering(&self) -> Option<&dyn CpuSteering> {
        Some(self)
    }
}

impl CpuSteering for Tap {
    /// A steering program (`crate::bpf`) picks the queue by sending CPU; a flow keeps its
    /// queue until that queue was drained of it.
    fn steer_by_cpu(&self) -> io::Result<()> {
        if self.drained.get().is_some() {
            return Ok(());
        }
        let steering = crate::bpf::steering_program(self.queues.len())?;
        sys::tun_set_steering(self.queues[0].as_fd(), steering.program.as_fd())?;
        let _ = self.drained.set(steering.drained);
        Ok(())
    }

    fn queue_drained(&self, queue: usize, at_ns: u64) {
        if let Some(drained) = self.drained.get() {
            drained.mark(queue, at_ns);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_transmit_drops_of_one_interface_from_proc_net_dev() {
        let table = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     100       2    0    0    0     0          0         0      100       2    0    0    0     0       0          0
  tap1: 5000000   40000    0    7    0     0          0         0  9000000   60000    0 12565    0     0       0          0
";
        assert_eq!(tx_dropped(table, "tap1"), Some(12565));
        assert_eq!(tx_dropped(table, "lo"), Some(0));
        assert_eq!(tx_dropped(table, "tap"), None);
    }

    #[test]
    fn names_are_checked_like_the_kernel_does() {
        assert_eq!(validate_ifname(""), Err(InvalidIfName::Empty));
        assert!(validate_ifname("tap0").is_ok());
        assert!(validate_ifname("a23456789012345").is_ok());
        assert!(matches!(
            validate_ifname("a234567890123456"),
            Err(InvalidIfName::TooLong(_))
        ));
        for bad in ["a/b", "a b", "a:b", ".", ".."] {
            assert!(
                matches!(validate_ifname(bad), Err(InvalidIfName::BadCharacters(_))),
                "{bad}"
            );
        }
    }
}
