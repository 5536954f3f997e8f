//! A port's ingress and egress pipelines as the datapath holds them.
//!
//! A port without a pipeline pays one relaxed atomic load per frame. An installed pipeline sits
//! behind a mutex: ingress stages run on the port's own worker, egress stages on whichever
//! worker transmits, so the lock is rarely contended. Mirror-to-file stages hand their frames to
//! a [`MirrorFile`]'s writer thread.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use vswitch_core::pipeline::MirrorTarget;
use vswitch_core::{Outcome, Pipeline, Timestamp};

use crate::mirror_file::MirrorFile;

/// Which way through the port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// Frames the port received, before the forwarding decision.
    Ingress,
    /// Frames about to leave through the port.
    Egress,
}

impl std::str::FromStr for Hook {
    type Err = vswitch_core::UnknownChoice;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "in" | "ingress" => Ok(Hook::Ingress),
            "out" | "egress" => Ok(Hook::Egress),
            _ => Err(vswitch_core::UnknownChoice::new("hook", s, "in, out")),
        }
    }
}

impl std::fmt::Display for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Hook::Ingress => "in",
            Hook::Egress => "out",
        })
    }
}

#[derive(Debug)]
struct Installed {
    pipeline: Pipeline,
    files: HashMap<usize, MirrorFile>,
}

/// One pipeline slot of a port.
#[derive(Debug, Default)]
pub struct PortPipeline {
    active: AtomicBool,
    /// A stage wants to know whether frames are unknown unicast (a table lookup per frame).
    needs_unknown_unicast: AtomicBool,
    installed: Mutex<Option<Installed>>,
}

/// Where a frame's mirror copies go, decided under the pipeline's lock.
pub(crate) enum MirrorCopy<'a> {
    /// To this port (looked up by the caller).
    Port(&'a str),
}

impl PortPipeline {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Installed>> {
        self.installed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// True when a pipeline is installed.
    pub fn is_active(&self) -> bool {
        self.active.load(Relaxed)
    }

    /// Installs `pipeline`, creating its mirror files (see [`MirrorFile::create`]).
    pub fn install(&self, pipeline: Pipeline) -> std::io::Result<()> {
        let mut files = HashMap::new();
        for i in 0..pipeline.stages().len() {
            if let Some(MirrorTarget::File(path)) = pipeline.mirror_target(i) {
                files.insert(i, MirrorFile::create(std::path::Path::new(path))?);
            }
        }
        let empty = pipeline.is_empty();
        self.needs_unknown_unicast
            .store(pipeline.needs_unknown_unicast(), Relaxed);
        *self.lock() = Some(Installed { pipeline, files });
        self.active.store(!empty, Relaxed);
        Ok(())
    }

    /// Whether the installed stages need to know if a frame is unknown unicast.
    pub fn needs_unknown_unicast(&self) -> bool {
        self.needs_unknown_unicast.load(Relaxed)
    }

    /// Removes the pipeline (closing its files).
    pub fn clear(&self) {
        self.active.store(false, Relaxed);
        *self.lock() = None;
    }

    /// The stages and their counters, one line each.
    pub fn describe(&self) -> Vec<String> {
        match &*self.lock() {
            Some(i) => i
                .pipeline
                .stages()
                .iter()
                .enumerate()
                .map(|(n, stage)| match i.files.get(&n) {
                    Some(file) => format!(
                        "{stage} [file: {} bytes, dropped {}]",
                        file.bytes(),
                        file.dropped()
                    ),
                    None => stage.to_string(),
                })
                .collect(),
            None => Vec::new(),
        }
    }

    /// Each stage's kind and counters, in order.
    pub fn counters(&self) -> Vec<(&'static str, Vec<(&'static str, u64)>)> {
        match &*self.lock() {
            Some(i) => i
                .pipeline
                .stages()
                .iter()
                .map(|s| (s.kind(), s.counters()))
                .collect(),
            None => Vec::new(),
        }
    }

    /// Runs `frame` through the stages; writes file mirrors and calls `mirror` for port mirrors.
    pub(crate) fn process(
        &self,
        now: Timestamp,
        frame: &[u8],
        unknown_unicast: bool,
        mut mirror: impl FnMut(MirrorCopy<'_>),
    ) -> Outcome {
        let mut guard = self.lock();
        let Some(installed) = guard.as_mut() else {
            return Outcome {
                pass: true,
                ..Outcome::default()
            };
        };
        let outcome = installed.pipeline.process(now, frame, unknown_unicast);
        let mut bits = outcome.mirrors;
        while bits != 0 {
            let i = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            match installed.pipeline.mirror_target(i) {
                Some(MirrorTarget::Port(name)) => mirror(MirrorCopy::Port(name)),
                Some(MirrorTarget::File(_)) => {
                    if let Some(file) = installed.files.get(&i) {
                        let nanos = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |d| d.as_nanos());
                        file.offer(nanos, frame);
                    }
                }
                None => {}
            }
        }
        outcome
    }
}
