//! Errors a user can act on: what failed, on which namespace or link, and why.

use std::io;

/// Why a namespace or link operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// `ip netns add` of a name in use.
    #[error("namespace {0} already exists")]
    NamespaceExists(String),
    /// No `/run/netns/NAME`.
    #[error("namespace {0} not found")]
    NamespaceNotFound(String),
    /// A name that can't be a file under /run/netns.
    #[error("invalid namespace name {0:?}")]
    InvalidNamespaceName(String),
    /// No interface of that name in the namespace asked.
    #[error("link {0} not found")]
    LinkNotFound(String),
    /// An interface of that name exists already.
    #[error("link {0} already exists")]
    LinkExists(String),
    /// Longer than 15 bytes, empty, or with '/', ':' or whitespace.
    #[error("invalid link name {0:?} (1 to 15 bytes, no '/', ':' or whitespace)")]
    InvalidLinkName(String),
    /// The caller lacks the capability.
    #[error("{op} needs CAP_NET_ADMIN (and CAP_SYS_ADMIN for namespaces): run as root")]
    PermissionDenied {
        /// What was attempted.
        op: String,
    },
    /// The kernel refused a request for another reason.
    #[error("{op} failed")]
    Kernel {
        /// What was attempted.
        op: String,
        /// The errno, and the kernel's words.
        #[source]
        source: Refusal,
    },
}

/// The kernel's refusal of a request: the errno and, where the kernel said why (netlink's
/// extended acknowledgements), its own words, which name the problem far better than the
/// errno does ("mtu greater than device maximum" for EINVAL).
#[derive(Debug)]
pub struct Refusal {
    /// The errno.
    pub errno: io::Error,
    /// The kernel's message.
    pub message: Option<String>,
}

impl From<io::Error> for Refusal {
    fn from(errno: io::Error) -> Self {
        Refusal {
            errno,
            message: None,
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.message {
            Some(message) => write!(f, "{message} ({})", self.errno),
            None => write!(f, "{}", self.errno),
        }
    }
}

impl std::error::Error for Refusal {}

impl NetnsError {
    /// Maps an errno from `op` to the most specific error, `subject` naming the link or namespace.
    pub(crate) fn from_errno(
        op: impl Into<String>,
        subject: &str,
        source: impl Into<Refusal>,
    ) -> Self {
        let op = op.into();
        let source = source.into();
        match source.errno.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => NetnsError::PermissionDenied { op },
            Some(libc::ENODEV) => NetnsError::LinkNotFound(subject.to_owned()),
            Some(libc::EEXIST) => NetnsError::LinkExists(subject.to_owned()),
            _ => NetnsError::Kernel { op, source },
        }
    }
}
