//! The name of a running switch: a lock per name under `/run/vswitch`, and the cleanup of what
//! a crashed switch of that name left.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use nix::fcntl::{Flock, FlockArg};

use super::protocol::{RUN_DIR, socket_path};

/// The name of a running switch, held for its lifetime: an exclusive `flock` on
/// `/run/vswitch/NAME.lock`. Of two starts with one name the kernel lets exactly one hold it,
/// and a crashed switch's lock is released with its process, so its stale socket can be replaced
/// safely.
#[derive(Debug)]
pub struct NameLock {
    name: String,
    path: PathBuf,
    _file: Flock<std::fs::File>,
}

impl NameLock {
    /// The name held.
    pub(super) fn name(&self) -> &str {
        &self.name
    }

    /// Takes the name, or fails if a switch of that name is running.
    pub fn acquire(name: &str) -> Result<NameLock> {
        if name.is_empty() || name.contains('/') || name.contains('\0') || name.len() > 64 {
            bail!("switch name {name:?} must be 1 to 64 characters without '/'");
        }
        create_run_dir()?;
        let path = Path::new(RUN_DIR).join(format!("{name}.lock"));
        // A holder removes the file as it stops; a lock taken on a file so removed (opened
        // just before) names nothing, so take it again on the file the path names now.
        loop {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&path)
                .with_context(|| format!("opening {}", path.display()))?;
            let lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => lock,
                Err((_, nix::errno::Errno::EWOULDBLOCK)) => bail!(
                    "a switch named {name} is already running (control socket {}); pick another --name",
                    socket_path(name).display()
                ),
                Err((_, e)) => {
                    return Err(e).with_context(|| format!("locking {}", path.display()));
                }
            };
            let held = lock.metadata().map(|m| (m.dev(), m.ino()));
            let named = std::fs::symlink_metadata(&path).map(|m| (m.dev(), m.ino()));
            if let (Ok(held), Ok(named)) = (held, named)
                && held == named
            {
                return Ok(NameLock {
                    name: name.to_owned(),
                    path,
                    _file: lock,
                });
            }
        }
    }
}

impl Drop for NameLock {
    /// Removes the lock file while still holding it, so a stopped switch leaves nothing.
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Removes what switch `name` left when it died: its socket and its lock file. Fails if it
/// runs; succeeds when there is nothing to remove.
pub fn cleanup(name: &str) -> Result<()> {
    let lock = NameLock::acquire(name)?;
    let socket = socket_path(name);
    let mut removed = Vec::new();
    match std::fs::remove_file(&socket) {
        Ok(()) => removed.push(socket.display().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", socket.display())),
    }
    // The lock file goes with the lock.
    drop(lock);
    if removed.is_empty() {
        outln!("cleanup {name}: nothing left behind");
    } else {
        outln!("cleanup {name}: removed {}", removed.join(", "));
    }
    Ok(())
}

/// Fails if a switch called `name` is running; a stale socket from a crashed run is fine (it
/// will be replaced).
pub fn ensure_name_free(name: &str) -> Result<()> {
    NameLock::acquire(name).map(drop)
}

/// Creates `/run/vswitch` for root alone, or makes it so: its sockets and locks are the
/// switches' control.
fn create_run_dir() -> Result<()> {
    match std::fs::DirBuilder::new().mode(0o700).create(RUN_DIR) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let meta =
                std::fs::symlink_metadata(RUN_DIR).with_context(|| format!("reading {RUN_DIR}"))?;
            if !meta.is_dir() {
                bail!("{RUN_DIR} exists and is not a directory");
            }
            if meta.permissions().mode() & 0o077 != 0 {
                std::fs::set_permissions(RUN_DIR, std::fs::Permissions::from_mode(0o700))
                    .with_context(|| format!("restricting {RUN_DIR} to its owner"))?;
            }
            Ok(())
        }
        Err(e) => Err(e).with_context(|| format!("creating {RUN_DIR}")),
    }
}
