//! Named network namespaces, compatible with iproute2: each is a bind mount of a namespace file
//! at `/run/netns/NAME`, so `ip netns list` and `ip netns exec` see ours and we see theirs.
//!
//! Creation does not fork: a short-lived thread unshares its network namespace and bind-mounts it,
//! then exits; the mount keeps the namespace alive.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};

use crate::error::NetnsError;

/// Where iproute2 keeps named namespaces.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// An open handle on a named network namespace.
#[derive(Debug)]
pub struct Netns {
    name: String,
    file: File,
}

fn check_name(name: &str) -> Result<(), NetnsError> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(NetnsError::InvalidNamespaceName(name.to_owned()));
    }
    Ok(())
}

fn path_of(name: &str) -> PathBuf {
    Path::new(NETNS_RUN_DIR).join(name)
}

fn sys_err(op: String, subject: &str, e: nix::Error) -> NetnsError {
    NetnsError::from_errno(op, subject, io::Error::from(e))
}

/// Makes /run/netns a shared mount point, as iproute2 does, so mounts under it propagate.
fn prepare_run_dir() -> Result<(), NetnsError> {
    fs::create_dir_all(NETNS_RUN_DIR)
        .map_err(|e| NetnsError::from_errno(format!("creating {NETNS_RUN_DIR}"), "", e))?;
    let shared = MsFlags::MS_SHARED | MsFlags::MS_REC;
    match mount(
        None::<&str>,
        NETNS_RUN_DIR,
        None::<&str>,
        shared,
        None::<&str>,
    ) {
        Ok(()) => Ok(()),
        Err(nix::Error::EINVAL) => {
            // Not a mount point yet: bind it onto itself first.
            let bind = MsFlags::MS_BIND | MsFlags::MS_REC;
            mount(
                Some(NETNS_RUN_DIR),
                NETNS_RUN_DIR,
                None::<&str>,
                bind,
                None::<&str>,
            )
            .map_err(|e| sys_err(format!("bind-mounting {NETNS_RUN_DIR}"), "", e))?;
            mount(
                None::<&str>,
                NETNS_RUN_DIR,
                None::<&str>,
                shared,
                None::<&str>,
            )
            .map_err(|e| sys_err(format!("making {NETNS_RUN_DIR} shared"), "", e))
        }
        Err(e) => Err(sys_err(format!("making {NETNS_RUN_DIR} shared"), "", e)),
    }
}

impl Netns {
    /// Creates namespace `name` (like `ip netns add`). Its loopback is left down, as there.
    pub fn create(name: &str) -> Result<Netns, NetnsError> {
        check_name(name)?;
        prepare_run_dir()?;
        let path = path_of(name);
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| match e.kind() {
                io::ErrorKind::AlreadyExists => NetnsError::NamespaceExists(name.to_owned()),
                _ => NetnsError::from_errno(format!("creating {}", path.display()), name, e),
            })?;
        let made = std::thread::scope(|s| {
            s.spawn(|| -> Result<(), NetnsError> {
                unshare(CloneFlags::CLONE_NEWNET)
                    .map_err(|e| sys_err(format!("creating namespace {name}"), name, e))?;
                mount(
                    Some("/proc/thread-self/ns/net"),
                    &path,
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
                .map_err(|e| sys_err(format!("mounting namespace {name}"), name, e))
            })
            .join()
            .unwrap_or_else(|_| {
                Err(NetnsError::Kernel {
                    op: format!("creating namespace {name}"),
                    source: io::Error::other("helper thread panicked").into(),
                })
            })
        });
        if let Err(e) = made {
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        Netns::open(name)
    }

    /// Opens existing namespace `name`.
    pub fn open(name: &str) -> Result<Netns, NetnsError> {
        check_name(name)?;
        let file = File::open(path_of(name)).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => NetnsError::NamespaceNotFound(name.to_owned()),
            _ => NetnsError::from_errno(format!("opening namespace {name}"), name, e),
        })?;
        Ok(Netns {
            name: name.to_owned(),
            file,
        })
    }

    /// Deletes namespace `name` (like `ip netns del`): unmounts and removes its file. Links that
    /// live only in it (veth ends, TAPs) are destroyed by the kernel once nothing holds it.
    pub fn delete(name: &str) -> Result<(), NetnsError> {
        check_name(name)?;
        let path = path_of(name);
        if !path.exists() {
            return Err(NetnsError::NamespaceNotFound(name.to_owned()));
        }
        umount2(&path, MntFlags::MNT_DETACH)
            .map_err(|e| sys_err(format!("unmounting namespace {name}"), name, e))?;
        fs::remove_file(&path)
            .map_err(|e| NetnsError::from_errno(format!("removing {}", path.display()), name, e))
    }

    /// Names of all namespaces under /run/netns, sorted.
    pub fn list() -> Result<Vec<String>, NetnsError> {
        let dir = match fs::read_dir(NETNS_RUN_DIR) {
            Ok(dir) => dir,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(NetnsError::from_errno(
                    format!("listing {NETNS_RUN_DIR}"),
                    "",
                    e,
                ));
            }
        };
        let mut names: Vec<String> = dir
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        Ok(names)
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A namespace known only by an open fd (the one a TAP moved to, `TUNGETDEVNETNS`), called
    /// `name` in errors.
    pub fn from_fd(name: &str, fd: std::os::fd::OwnedFd) -> Netns {
        Netns {
            name: name.to_owned(),
            file: File::from(fd),
        }
    }

    /// Runs `f` on a new thread inside this namespace and returns its result. Sockets that `f`
    /// opens, and processes it spawns, belong to the namespace; the caller's thread is untouched.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, NetnsError> {
        std::thread::scope(|s| {
            s.spawn(|| {
                setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| {
                    sys_err(format!("entering namespace {}", self.name), &self.name, e)
                })?;
                Ok(f())
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Like [`Netns::run`], but for work that lives on (servers, switches): the thread is
    /// detached into `JoinHandle` and outlives this call.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<std::thread::JoinHandle<Result<T, NetnsError>>, NetnsError> {
        let file = self
            .file
            .try_clone()
            .map_err(|e| NetnsError::from_errno("duplicating a namespace fd", &self.name, e))?;
        let name = self.name.clone();
        Ok(std::thread::spawn(move || {
            setns(file.as_fd(), CloneFlags::CLONE_NEWNET)
                .map_err(|e| sys_err(format!("entering namespace {name}"), &name, e))?;
            Ok(f())
        }))
    }
}

impl AsFd for Netns {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}
