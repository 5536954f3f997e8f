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
        /// The errno.
        #[source]
        source: io::Error,
    },
}

impl NetnsError {
    /// Maps an errno from `op` to the most specific error, `subject` naming the link or namespace.
    pub(crate) fn from_errno(op: impl Into<String>, subject: &str, source: io::Error) -> Self {
        let op = op.into();
        match source.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => NetnsError::PermissionDenied { op },
            Some(libc::ENODEV) => NetnsError::LinkNotFound(subject.to_owned()),
            Some(libc::EEXIST) => NetnsError::LinkExists(subject.to_owned()),
            _ => NetnsError::Kernel { op, source },
        }
    }
}
