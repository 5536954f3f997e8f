//! Helpers shared by the binary's privileged tests: waiting for a child's output, and `vswitch
//! lab up` children that leave nothing behind.
#![allow(dead_code)] // each test file uses its own subset

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use vswitch_netns::Netns;
use vswitch_testkit::ChildGuard;

pub const BIN: &str = env!("CARGO_BIN_EXE_vswitch");

/// Reads `child`'s stdout until a line containing `marker`; returns the reader and what it read.
pub fn wait_for_line(
    child: &mut Child,
    marker: &str,
) -> (BufReader<std::process::ChildStdout>, String) {
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut seen = String::new();
    let mut line = String::new();
    loop {
        line.clear();
        let n = out.read_line(&mut line).expect("read");
        assert!(
            n > 0,
            "vswitch exited before printing {marker:?}; it printed:\n{seen}"
        );
        seen.push_str(&line);
        if line.contains(marker) {
            return (out, seen);
        }
    }
}

/// A `vswitch lab up` child: stopped when dropped, and its lab removed with `lab down` (which
/// is idempotent), so a failing test leaves nothing behind either.
pub struct LabChild {
    child: Option<ChildGuard>,
    pub name: String,
}

impl LabChild {
    pub fn spawn(name: &str, args: &[&str]) -> LabChild {
        let child = Command::new(BIN)
            .args(["lab", "up", "--name", name])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        LabChild {
            child: Some(ChildGuard(child)),
            name: name.to_owned(),
        }
    }

    /// Spawns and waits until the lab is up; returns it with what `lab up` printed.
    pub fn up(name: &str, args: &[&str]) -> (LabChild, String) {
        let mut lab = LabChild::spawn(name, args);
        let (out, printed) = wait_for_line(lab.child(), "is up");
        // Keep reading (and discarding) so the child never blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut { out }, &mut std::io::sink()));
        (lab, printed)
    }

    pub fn child(&mut self) -> &mut ChildGuard {
        self.child.as_mut().expect("running")
    }

    /// `vswitch lab SUBCOMMAND --name NAME ARGS...`.
    pub fn run(&self, subcommand: &str, args: &[&str]) -> std::process::Output {
        Command::new(BIN)
            .args(["lab", subcommand, "--name", &self.name])
            .args(args)
            .output()
            .expect("run vswitch")
    }
}

impl Drop for LabChild {
    fn drop(&mut self) {
        // The guard stops the child (SIGINT, then SIGKILL); then whatever it left goes.
        drop(self.child.take());
        let _ = Command::new(BIN)
            .args(["lab", "down", "--name", &self.name])
            .output();
    }
}

pub fn namespaces_with_prefix(prefix: &str) -> Vec<String> {
    Netns::list()
        .expect("list")
        .into_iter()
        .filter(|n| n.starts_with(prefix))
        .collect()
}

pub fn links_with_prefix(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/sys/class/net")
        .expect("sysfs")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .collect()
}

/// Everything lab `name` could leave: namespaces `NAME-*`, links `NAMEl*`, files in
/// /run/vswitch and its state.
pub fn leftovers(name: &str) -> Vec<String> {
    let mut left = namespaces_with_prefix(&format!("{name}-"));
    left.extend(links_with_prefix(&format!("{name}l")));
    for dir in ["/run/vswitch", "/run/vswitch/labs"] {
        if let Ok(entries) = std::fs::read_dir(dir) {
            left.extend(
                entries
                    .filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|f| {
                        f.starts_with(&format!("{name}-")) || f.starts_with(&format!("{name}."))
                    }),
            );
        }
    }
    left
}

/// A lab name unique to this process and call, short enough for link names (≤ 10 bytes).
pub fn lab_name(prefix: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = format!("{prefix}{}{n}", std::process::id() % 10_000);
    assert!(name.len() <= 10, "{name}: use a shorter prefix");
    name
}

/// Runs `vswitch lab up --name NAME ARGS...` that is expected to fail: its output, once it
/// exits (killed, and the test failed, if it is still running after 30 s).
pub fn lab_up_failing(name: &str, args: &[&str]) -> std::process::Output {
    let mut child = ChildGuard(
        Command::new(BIN)
            .args(["lab", "up", "--name", name])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn"),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while child.try_wait().expect("wait").is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "lab up {args:?} didn't fail; it runs"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    use std::io::Read;
    let _ = child
        .stdout
        .take()
        .expect("stdout")
        .read_to_end(&mut stdout);
    let _ = child
        .stderr
        .take()
        .expect("stderr")
        .read_to_end(&mut stderr);
    std::process::Output {
        status: child.try_wait().expect("wait").expect("exited"),
        stdout,
        stderr,
    }
}
