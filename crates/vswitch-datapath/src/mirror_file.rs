//! A pcap file that a `mirror file PATH` stage writes, safely and off the datapath.
//!
//! The switch runs as root and the path comes from whoever may use the control socket, so the
//! file is created new (`O_EXCL`: an existing file, a symlink or a FIFO at the path is refused,
//! never truncated, followed or blocked on), only at an absolute path, mode 0600. Workers never
//! write it: they hand each record to a writer thread through a queue bounded in bytes, and a
//! record that doesn't fit in the queue, or past the file's size cap, is counted as dropped.
//! A write error ends the writing (logged once); what comes after is dropped and counted too.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::thread::JoinHandle;

use crossbeam_channel::{Sender, TrySendError};
use vswitch_core::pcap;

/// Bytes of records waiting for the writer at most.
pub const QUEUE_BYTES: u64 = 8 << 20;
/// The largest a mirror file grows; frames beyond are dropped and counted.
pub const MAX_FILE_BYTES: u64 = 1 << 30;

/// What a mirror file did, for `pipeline show`.
#[derive(Debug, Default)]
struct Counts {
    /// Bytes queued and not yet written.
    queued: AtomicU64,
    /// Bytes handed to the writer in all (header included).
    accepted: AtomicU64,
    /// Frames dropped: queue full, size cap reached, or writing failed.
    dropped: AtomicU64,
    /// Writing failed; nothing more is queued.
    failed: AtomicBool,
}

/// An open mirror file and its writer thread; dropping it lets the writer finish the queue and
/// close the file.
#[derive(Debug)]
pub struct MirrorFile {
    queue: Option<Sender<Vec<u8>>>,
    counts: Arc<Counts>,
    writer: Option<JoinHandle<()>>,
}

impl MirrorFile {
    /// Creates the pcap file at `path` (absolute, not existing) and starts its writer.
    pub fn create(path: &Path) -> io::Result<MirrorFile> {
        if !path.is_absolute() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not an absolute path", path.display()),
            ));
        }
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| match e.kind() {
                io::ErrorKind::AlreadyExists => io::Error::new(
                    e.kind(),
                    format!("{} exists; remove it or pick a new name", path.display()),
                ),
                _ => io::Error::new(e.kind(), format!("{}: {e}", path.display())),
            })?;
        let header = pcap::file_header();
        file.write_all(&header)?;
        let counts = Arc::new(Counts::default());
        counts.accepted.store(header.len() as u64, Relaxed);
        let (queue, records) = crossbeam_channel::unbounded::<Vec<u8>>();
        let writer_counts = counts.clone();
        let shown = path.display().to_string();
        let writer = std::thread::Builder::new()
            .name("vswitch-mirror".into())
            .spawn(move || write_records(file, &records, &writer_counts, &shown))?;
        Ok(MirrorFile {
            queue: Some(queue),
            counts,
            writer: Some(writer),
        })
    }

    /// Queues `frame` as a pcap record, or counts it dropped. Never blocks.
    pub fn offer(&self, nanos: u128, frame: &[u8]) {
        let size = (frame.len() + 16) as u64;
        let c = &self.counts;
        let full = c.queued.load(Relaxed) + size > QUEUE_BYTES
            || c.accepted.load(Relaxed) + size > MAX_FILE_BYTES
            || c.failed.load(Relaxed);
        let Some(queue) = self.queue.as_ref().filter(|_| !full) else {
            c.dropped.fetch_add(1, Relaxed);
            return;
        };
        let mut record = Vec::with_capacity(size as usize);
        pcap::write_record(&mut record, nanos, frame);
        c.queued.fetch_add(size, Relaxed);
        c.accepted.fetch_add(size, Relaxed);
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = queue.try_send(record) {
            c.queued.fetch_sub(size, Relaxed);
            c.accepted.fetch_sub(size, Relaxed);
            c.dropped.fetch_add(1, Relaxed);
        }
    }

    /// Frames dropped so far.
    pub fn dropped(&self) -> u64 {
        self.counts.dropped.load(Relaxed)
    }

    /// Bytes of the file written or queued so far.
    pub fn bytes(&self) -> u64 {
        self.counts.accepted.load(Relaxed)
    }
}

impl Drop for MirrorFile {
    fn drop(&mut self) {
        drop(self.queue.take());
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

fn write_records(
    mut file: File,
    records: &crossbeam_channel::Receiver<Vec<u8>>,
    counts: &Counts,
    path: &str,
) {
    for record in records {
        counts.queued.fetch_sub(record.len() as u64, Relaxed);
        if counts.failed.load(Relaxed) {
            counts.dropped.fetch_add(1, Relaxed);
            continue;
        }
        if let Err(e) = file.write_all(&record) {
            tracing::error!(file = path, error = %e, "mirror file write failed; mirroring to it stops");
            counts.failed.store(true, Relaxed);
            counts.dropped.fetch_add(1, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("vsmir-{}-{name}", std::process::id()))
    }

    #[test]
    fn refuses_relative_existing_and_symlinked_paths() {
        assert!(MirrorFile::create(Path::new("relative.pcap")).is_err());
        let existing = temp("existing");
        std::fs::write(&existing, b"precious").expect("write");
        let e = MirrorFile::create(&existing).expect_err("existing file");
        assert!(e.to_string().contains("exists"), "{e}");
        assert_eq!(
            std::fs::read(&existing).expect("read"),
            b"precious",
            "truncated"
        );
        let link = temp("link");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(temp("target"), &link).expect("symlink");
        assert!(MirrorFile::create(&link).is_err(), "followed a symlink");
        assert!(!temp("target").exists());
        let _ = std::fs::remove_file(existing);
        let _ = std::fs::remove_file(link);
    }

    #[test]
    fn records_reach_the_file_and_the_queue_is_bounded_in_bytes() {
        let path = temp("bounded");
        let _ = std::fs::remove_file(&path);
        let mirror = MirrorFile::create(&path).expect("create");
        let frame = vec![0xabu8; 60];
        for _ in 0..10 {
            mirror.offer(0, &frame);
        }
        // Far more than the queue holds, offered as fast as a loop can: whatever the writer
        // doesn't keep up with is dropped, and the queue never grows past its bound.
        let big = vec![0u8; 65_000];
        for _ in 0..2_000 {
            mirror.offer(0, &big);
        }
        assert!(mirror.counts.queued.load(Relaxed) <= QUEUE_BYTES);
        let (dropped, bytes) = (mirror.dropped(), mirror.bytes());
        drop(mirror);
        let written = std::fs::metadata(&path).expect("file").len();
        assert_eq!(written, bytes, "every accepted byte was written");
        assert_eq!(
            written,
            24 + 10 * 76 + (2_000 - dropped) * 65_016,
            "header, small records, big ones"
        );
        let _ = std::fs::remove_file(path);
    }
}
