//! The control socket: a running switch answers requests on `/run/vswitch/NAME.sock`.
//!
//! Protocol (version 1): one JSON object per line each way. A request is
//! `{"version":1,"request":{"cmd":"stats"}}`; the reply is `{"version":1,"ok":true,"result":...}`
//! or `{"version":1,"ok":false,"error":"..."}`. Commands: `info`, `stats`, `fdb_show`,
//! `fdb_add {mac, port}`, `fdb_del {mac}`, `fdb_flush {port?}`, `port_add {spec}`,
//! `pipeline_show {port}`, `pipeline_set {port, hook, stages}`, `pipeline_clear {port, hook?}`,
//! `port_del {port}`, and `capture {port, count?, direction}`, whose ok line is followed by a pcap
//! stream (nanosecond timestamps) on the same connection. A malformed request gets an error reply; the switch keeps running.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use vswitch_core::{DropReason, MacAddr, pcap};
use vswitch_datapath::{Capture, Direction, Hook, PortSpec, Switch, SwitchStats};

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;
/// Where control sockets live.
pub const RUN_DIR: &str = "/run/vswitch";

/// The socket of the switch called `name`.
pub fn socket_path(name: &str) -> PathBuf {
    Path::new(RUN_DIR).join(format!("{name}.sock"))
}

/// What a client may ask.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// Name, mode, ports.
    Info,
    /// Per-port counters and table counters.
    Stats,
    /// The forwarding table.
    FdbShow,
    /// A static entry.
    FdbAdd {
        /// The MAC.
        mac: String,
        /// The port's name.
        port: String,
        /// For a VXLAN port: the remote VTEP the MAC is behind.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dst: Option<String>,
    },
    /// Remove an entry.
    FdbDel {
        /// The MAC.
        mac: String,
    },
    /// Forget learned entries.
    FdbFlush {
        /// Only this port's.
        port: Option<String>,
    },
    /// Attach a port.
    PortAdd {
        /// A port spec (`tap:NAME`, `dev:NAME`, `NAME`).
        spec: String,
    },
    /// Detach a port.
    PortDel {
        /// The port's name.
        port: String,
    },
    /// Set one of a port's flags.
    PortSet {
        /// The port's name.
        port: String,
        /// `learning`, `flood`, `mcast-flood`, `bcast-flood`, `isolated` or `hairpin`.
        flag: String,
        /// `on` or `off`.
        value: String,
    },
    /// Put a port in a VLAN mode.
    VlanSet {
        /// The port's name.
        port: String,
        /// `access 10`, `trunk 10,20 [native 10 [tagged]]`, `tunnel 100 [tpid 0x88a8]`, `none`.
        mode: String,
    },
    /// Every port's VLAN mode and flags.
    VlanShow,
    /// Add VLANs to a trunk port's list.
    VlanAdd {
        /// The port's name.
        port: String,
        /// VIDs, as `10,20-29`.
        vids: String,
    },
    /// Take VLANs off a trunk port's list.
    VlanDel {
        /// The port's name.
        port: String,
        /// VIDs, as `10,20-29`.
        vids: String,
    },
    /// Bind a MAC to a MACVLAN sub-port (source mode: a source it accepts).
    MacvlanBind {
        /// The sub-port.
        port: String,
        /// The MAC.
        mac: String,
    },
    /// Take a MAC off a MACVLAN sub-port.
    MacvlanUnbind {
        /// The sub-port.
        port: String,
        /// The MAC.
        mac: String,
    },
    /// Every MACVLAN binding.
    MacvlanShow,
    /// A port's pipelines and their counters.
    PipelineShow {
        /// The port's name.
        port: String,
    },
    /// Install a pipeline on a port.
    PipelineSet {
        /// The port's name.
        port: String,
        /// `in` or `out`.
        hook: String,
        /// The stages, in text form.
        stages: String,
    },
    /// Remove a port's pipeline.
    PipelineClear {
        /// The port's name.
        port: String,
        /// `in` or `out`; both if absent.
        hook: Option<String>,
    },
    /// Stream the port's frames as pcap after the reply line, until `count` frames or until
    /// the client closes the connection.
    Capture {
        /// The port's name.
        port: String,
        /// Stop after this many frames.
        count: Option<u64>,
        /// `in`, `out` or `both`.
        direction: String,
    },
}

#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    version: u32,
    request: Request,
}

/// The listening side, owned by the running switch.
pub struct ControlServer {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    _lock: NameLock,
}

/// Connections served at once; more are answered with an error and closed.
const MAX_CONNECTIONS: usize = 32;
/// The longest request line taken.
const MAX_REQUEST_BYTES: u64 = 64 * 1024;
/// How long a connection may stay silent between requests (`stats --watch` asks every second).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a reply may wait for a client that doesn't read it.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

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

impl ControlServer {
    /// Binds the socket for the switch that holds `lock` (replacing a stale socket) and serves
    /// `switch` on a thread.
    pub fn start(lock: NameLock, switch: Arc<Switch>, offload: bool) -> Result<ControlServer> {
        let name = lock.name.clone();
        let path = socket_path(&name);
        // Bound under a temporary name, restricted, then renamed into place: the socket is
        // never reachable with a mode the umask chose.
        let staging = Path::new(RUN_DIR).join(format!(".{name}.{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&staging);
        let listener = UnixListener::bind(&staging)
            .with_context(|| format!("binding {}", staging.display()))?;
        std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("setting the mode of {}", staging.display()))?;
        if path.exists() {
            tracing::warn!(socket = %path.display(), "replacing a stale control socket");
        }
        std::fs::rename(&staging, &path)
            .with_context(|| format!("moving the control socket to {}", path.display()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = stop.clone();
        let connections = Arc::new(AtomicUsize::new(0));
        let thread = std::thread::Builder::new()
            .name("vswitch-control".into())
            .spawn(move || {
                // Blocks in accept: an idle switch costs nothing here. Drop wakes it by
                // connecting once the stop flag is set.
                while !thread_stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok(_) if thread_stop.load(Ordering::Relaxed) => break,
                        Ok((stream, _)) => {
                            accept(stream, &switch, &name, offload, &connections);
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "control socket accept failed");
                            std::thread::sleep(Duration::from_millis(200));
                        }
                    }
                }
            })
            .context("spawning the control thread")?;
        Ok(ControlServer {
            path,
            stop,
            thread: Some(thread),
            _lock: lock,
        })
    }
}

/// Serves a new connection on a thread of its own, within [`MAX_CONNECTIONS`]; a connection
/// over the limit, or one no thread could be made for, gets an error line and is closed.
fn accept(
    stream: UnixStream,
    switch: &Arc<Switch>,
    name: &str,
    offload: bool,
    connections: &Arc<AtomicUsize>,
) {
    let refuse = |mut stream: UnixStream, why: &str| {
        let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
        let reply = json!({"version": PROTOCOL_VERSION, "ok": false, "error": why});
        let _ = writeln!(stream, "{reply}");
    };
    if connections.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
        connections.fetch_sub(1, Ordering::AcqRel);
        tracing::warn!(
            limit = MAX_CONNECTIONS,
            "control connection refused: too many"
        );
        refuse(stream, "too many control connections; try again");
        return;
    }
    let Ok(spare) = stream.try_clone() else {
        connections.fetch_sub(1, Ordering::AcqRel);
        return;
    };
    let (switch, name, count) = (switch.clone(), name.to_owned(), connections.clone());
    let spawned = std::thread::Builder::new()
        .name("vswitch-conn".into())
        .spawn(move || {
            serve(stream, &switch, &name, offload);
            count.fetch_sub(1, Ordering::AcqRel);
        });
    if let Err(e) = spawned {
        connections.fetch_sub(1, Ordering::AcqRel);
        tracing::error!(error = %e, "couldn't start a control connection thread");
        refuse(
            spare,
            "the switch couldn't serve this connection; try again",
        );
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = UnixStream::connect(&self.path);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Reads one request line of at most [`MAX_REQUEST_BYTES`]: `None` at end of stream, an error
/// for a longer line, a timeout, or bytes that aren't UTF-8.
fn read_request(reader: &mut impl BufRead) -> Option<Result<String>> {
    let mut line = Vec::new();
    match reader
        .by_ref()
        .take(MAX_REQUEST_BYTES + 1)
        .read_until(b'\n', &mut line)
    {
        Ok(0) => None,
        Ok(n) if n as u64 > MAX_REQUEST_BYTES => Some(Err(anyhow::anyhow!(
            "request longer than {MAX_REQUEST_BYTES} bytes"
        ))),
        Ok(_) => Some(String::from_utf8(line).context("request is not UTF-8")),
        Err(e) => Some(Err(e.into())),
    }
}

/// Answers requests on one connection until the client closes it.
fn serve(stream: UnixStream, switch: &Switch, name: &str, offload: bool) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(IDLE_TIMEOUT));
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let mut writer = match stream.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut reader = BufReader::new(stream);
    while let Some(line) = read_request(&mut reader) {
        let line = match line {
            Ok(line) => line,
            Err(e) => {
                // Too long, not text, or silent too long: say why and hang up. What the client
                // still sends is read away briefly first (boundedly): closing on unread bytes
                // resets the connection, and the client would lose the reason.
                let reply =
                    json!({"version": PROTOCOL_VERSION, "ok": false, "error": format!("{e:#}")});
                let _ = writeln!(writer, "{reply}");
                let _ = writer.shutdown(std::net::Shutdown::Write);
                let _ = reader
                    .get_ref()
                    .set_read_timeout(Some(Duration::from_millis(200)));
                let _ = std::io::copy(&mut reader.take(1 << 20), &mut std::io::sink());
                return;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        if let Ok(Envelope {
            version: PROTOCOL_VERSION,
            request:
                Request::Capture {
                    port,
                    count,
                    direction,
                },
        }) = serde_json::from_str::<Envelope>(&line)
        {
            // The connection becomes a pcap stream; it ends with the capture.
            if let Err(e) = stream_capture(&mut writer, switch, &port, count, &direction) {
                let reply =
                    json!({"version": PROTOCOL_VERSION, "ok": false, "error": format!("{e:#}")});
                let _ = writeln!(writer, "{reply}");
            }
            return;
        }
        let reply = reply_to(&line, |request| handle(request, switch, name, offload));
        if writeln!(writer, "{reply}").is_err() {
            return;
        }
    }
}

/// The reply line to one request line (not a capture), `handle` answering a well-formed request.
fn reply_to(line: &str, handle: impl FnOnce(&Request) -> Result<Value>) -> Value {
    match serde_json::from_str::<Envelope>(line) {
        Ok(env) if env.version != PROTOCOL_VERSION => json!({
            "version": PROTOCOL_VERSION, "ok": false,
            "error": format!("unsupported protocol version {} (this switch speaks {PROTOCOL_VERSION})", env.version),
        }),
        Ok(env) => match handle(&env.request) {
            Ok(result) => json!({"version": PROTOCOL_VERSION, "ok": true, "result": result}),
            Err(e) => {
                json!({"version": PROTOCOL_VERSION, "ok": false, "error": format!("{e:#}")})
            }
        },
        Err(e) => {
            json!({"version": PROTOCOL_VERSION, "ok": false, "error": format!("bad request: {e}")})
        }
    }
}

/// Answers each request line in `input` as [`serve`] does, against `switch`, skipping requests
/// that would reach outside the process (port add, capture, mirror to a file); returns the
/// replies. For the fuzz target.
pub(crate) fn answer_all(input: &[u8], switch: &Switch) -> Vec<Value> {
    let mut reader = std::io::Cursor::new(input);
    let mut replies = Vec::new();
    while let Some(line) = read_request(&mut reader) {
        let Ok(line) = line else { break };
        replies.push(reply_to(&line, |request| match request {
            Request::PortAdd { .. } | Request::Capture { .. } => Ok(json!("skipped")),
            Request::PipelineSet { stages, .. } if stages.contains("file") => Ok(json!("skipped")),
            _ => handle(request, switch, "fuzz", true),
        }));
    }
    replies
}

/// Answers a capture request: an ok line, then pcap bytes until `count` frames were sent or the
/// client went away.
fn stream_capture(
    writer: &mut UnixStream,
    switch: &Switch,
    port: &str,
    count: Option<u64>,
    direction: &str,
) -> Result<()> {
    let direction: Direction = direction.parse().map_err(anyhow::Error::msg)?;
    let port = switch
        .port(port)
        .filter(|p| !p.is_gone())
        .with_context(|| format!("no port {port}"))?;
    let capture = Capture::start(port, direction, 4096)?;
    // From here on the fast path leaves this port's frames to the switch, which copies them.
    switch.captures_changed();
    writeln!(
        writer,
        "{}",
        json!({"version": PROTOCOL_VERSION, "ok": true, "result": null})
    )?;
    writer.write_all(&pcap::file_header())?;
    writer.set_nonblocking(false)?;
    let mut sent = 0u64;
    let mut record = Vec::with_capacity(2048);
    while count.is_none_or(|c| sent < c) {
        match capture.recv_timeout(Duration::from_millis(200)) {
            Ok(frame) => {
                record.clear();
                let nanos = frame
                    .time
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos());
                pcap::write_record(&mut record, nanos, &frame.data);
                if writer.write_all(&record).is_err() {
                    break;
                }
                sent += 1;
            }
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                if client_gone(writer) {
                    break;
                }
            }
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
        }
    }
    let dropped = capture.dropped();
    drop(capture);
    switch.captures_changed();
    tracing::info!(frames = sent, dropped, "capture ended");
    Ok(())
}

/// True if the peer closed its end (a read would return end-of-file).
fn client_gone(stream: &UnixStream) -> bool {
    let mut byte = [0u8; 1];
    if stream.set_nonblocking(true).is_err() {
        return true;
    }
    let gone = matches!(std::io::Read::read(&mut &*stream, &mut byte), Ok(0));
    let _ = stream.set_nonblocking(false);
    gone
}

/// What VLAN membership dropped, by the VID of the frames' outer tag ("0": untagged).
fn vlan_drops_json(drops: &[(u16, u64)]) -> Value {
    drops
        .iter()
        .map(|(vid, n)| (vid.to_string(), json!(n)))
        .collect::<serde_json::Map<String, Value>>()
        .into()
}

/// Counters of every port and of the table, as JSON.
pub fn stats_json(stats: &SwitchStats) -> Value {
    let stages = |stages: &vswitch_datapath::switch::StageCounters| -> Vec<Value> {
        stages
            .iter()
            .map(|(kind, counters)| {
                let c: serde_json::Map<String, Value> = counters
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), json!(v)))
                    .collect();
                json!({"kind": kind, "counters": c})
            })
            .collect()
    };
    let ports: Vec<Value> = stats
        .ports
        .iter()
        .map(|p| {
            let s = &p.counters;
            let drops: serde_json::Map<String, Value> = DropReason::ALL
                .iter()
                .map(|r| (r.name().to_owned(), json!(s.drops(*r))))
                .collect();
            json!({
                "pipeline": {"in": stages(&p.pipelines[0]), "out": stages(&p.pipelines[1])},
                "name": p.name, "kind": p.kind, "state": if p.gone { "gone" } else { "up" },
                "mtu": p.mtu, "rx_packets": s.rx_packets, "rx_bytes": s.rx_bytes,
                "tx_packets": s.tx_packets, "tx_bytes": s.tx_bytes, "drops": drops,
                "kernel_drops": s.kernel_drops,
                "fast_path": p.fast_path,
                "device": p.device.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<String, Value>>(),
                "fast_path_rx_packets": s.fast_rx_packets,
                "fast_path_tx_packets": s.fast_tx_packets,
            })
        })
        .collect();
    let t = &stats.table;
    let busy: Vec<f64> = stats.workers_busy.iter().map(|d| d.as_secs_f64()).collect();
    json!({
        "ports": ports,
        "workers_busy_seconds": busy,
        "fast_path_attachment": stats.fast_path_attachment,
        "vlan_drops_by_vid": vlan_drops_json(&stats.vlan_drops),
        "table": {"entries": stats.table_entries, "capacity": stats.table_capacity, "learned": t.learned, "moved": t.moved, "aged": t.aged, "evicted": t.evicted},
    })
}

fn handle(request: &Request, switch: &Switch, name: &str, offload: bool) -> Result<Value> {
    Ok(match request {
        Request::Info => json!({
            "name": name, "pid": std::process::id(),
            "ports": switch.ports().iter().map(|p| p.name().to_owned()).collect::<Vec<_>>(),
        }),
        Request::Stats => stats_json(&switch.stats()),
        Request::FdbShow => {
            let rows: Vec<Value> = switch
                .fdb()
                .into_iter()
                .map(|row| {
                    json!({
                        "mac": row.key.mac.to_string(), "vlan": row.key.vlan.get(), "port": row.port,
                        "static": row.age.is_none(), "age_ms": row.age.map(|a| a.as_millis() as u64),
                    })
                })
                .collect();
            json!(rows)
        }
        Request::FdbAdd { mac, port, dst } => {
            let mac: MacAddr = mac.parse()?;
            let dst: Option<std::net::IpAddr> = dst
                .as_deref()
                .map(|d| {
                    d.parse()
                        .with_context(|| format!("--dst {d:?} is not an IP address"))
                })
                .transpose()?;
            switch.add_static_at(mac, port, dst)?;
            json!(null)
        }
        Request::FdbDel { mac } => {
            let mac: MacAddr = mac.parse()?;
            if !switch.remove_fdb(mac)? {
                bail!("no entry for {mac}");
            }
            json!(null)
        }
        Request::FdbFlush { port } => json!({"flushed": switch.flush_fdb(port.as_deref())?}),
        Request::PortAdd { spec } => {
            let spec: PortSpec = spec.parse()?;
            if switch.port(spec.name()).is_some_and(|p| !p.is_gone()) {
                bail!("port {} exists already", spec.name());
            }
            let device = spec.open(offload, switch.threads(), switch.steering())?;
            let id = switch.add_port(spec.name().to_owned(), device)?;
            json!({"id": id.0})
        }
        Request::PortDel { port } => {
            switch.remove_port(port)?;
            json!(null)
        }
        Request::PortSet { port, flag, value } => {
            switch.set_port_flag(port, flag, value)?;
            json!(null)
        }
        Request::VlanSet { port, mode } => {
            let mode: vswitch_core::VlanMode = mode.parse().map_err(anyhow::Error::msg)?;
            switch.set_vlan(port, mode)?;
            json!(null)
        }
        Request::VlanAdd { port, vids } | Request::VlanDel { port, vids } => {
            let set: vswitch_core::VlanSet = vids.parse().map_err(anyhow::Error::msg)?;
            switch.change_trunk(port, &set, matches!(request, Request::VlanAdd { .. }))?;
            json!(null)
        }
        Request::MacvlanBind { port, mac } => {
            let mac: MacAddr = mac.parse().map_err(anyhow::Error::msg)?;
            switch.macvlan_bind(mac, port)?;
            json!(null)
        }
        Request::MacvlanUnbind { port, mac } => {
            let mac: MacAddr = mac.parse().map_err(anyhow::Error::msg)?;
            if !switch.macvlan_unbind(mac, port)? {
                bail!("{mac} is not bound to {port}");
            }
            json!(null)
        }
        Request::MacvlanShow => json!(
            switch
                .macvlan_bindings()?
                .into_iter()
                .map(|(mac, port)| json!({"mac": mac.to_string(), "port": port}))
                .collect::<Vec<_>>()
        ),
        Request::VlanShow => json!({
            "ports": switch
                .policies()
                .into_iter()
                .map(|(port, p)| json!({"port": port, "vlan": p.vlan.to_string(), "flags": p.flags.describe()}))
                .collect::<Vec<_>>(),
            "drops_by_vid": vlan_drops_json(&switch.vlan_drops()),
        }),
        Request::Capture { .. } => bail!("capture streams are served by the connection loop"),
        Request::PipelineShow { port } => {
            let [(_, ingress), (_, egress)] = switch.describe_pipelines(port)?;
            json!({"in": ingress, "out": egress})
        }
        Request::PipelineSet { port, hook, stages } => {
            let hook: Hook = hook.parse().map_err(anyhow::Error::msg)?;
            switch.set_pipeline(port, hook, stages)?;
            json!(null)
        }
        Request::PipelineClear { port, hook } => {
            let hooks = match hook {
                Some(h) => vec![h.parse::<Hook>().map_err(anyhow::Error::msg)?],
                None => vec![Hook::Ingress, Hook::Egress],
            };
            for h in hooks {
                switch.clear_pipeline(port, h)?;
            }
            json!(null)
        }
    })
}

/// Sends one request to switch `name` and returns its result, or the switch's error.
pub fn call(name: &str, request: Request) -> Result<Value> {
    open(name, request).map(|(result, _)| result)
}

/// Like [`call`], and also returns the connection, positioned after the reply line (a capture
/// streams pcap bytes there).
pub fn open(name: &str, request: Request) -> Result<(Value, BufReader<UnixStream>)> {
    let path = socket_path(name);
    let stream = UnixStream::connect(&path).with_context(|| {
        format!(
            "no switch named {name} is running (couldn't connect to {})",
            path.display()
        )
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut writer = stream.try_clone()?;
    let envelope = Envelope {
        version: PROTOCOL_VERSION,
        request,
    };
    writeln!(writer, "{}", serde_json::to_string(&envelope)?)?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).context("reading the reply")?;
    let reply: Value = serde_json::from_str(&line).context("malformed reply")?;
    if reply["ok"].as_bool() == Some(true) {
        Ok((reply["result"].clone(), reader))
    } else {
        bail!("{}", reply["error"].as_str().unwrap_or("unknown error"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_have_a_stable_wire_form() {
        let env = Envelope {
            version: 1,
            request: Request::FdbAdd {
                mac: "02:00:00:00:00:01".into(),
                port: "tap0".into(),
                dst: None,
            },
        };
        assert_eq!(
            serde_json::to_string(&env).unwrap(),
            r#"{"version":1,"request":{"cmd":"fdb_add","mac":"02:00:00:00:00:01","port":"tap0"}}"#
        );
        let parsed: Envelope =
            serde_json::from_str(r#"{"version":1,"request":{"cmd":"fdb_flush","port":null}}"#)
                .unwrap();
        assert_eq!(parsed.request, Request::FdbFlush { port: None });
        assert!(
            serde_json::from_str::<Envelope>(r#"{"version":1,"request":{"cmd":"reboot"}}"#)
                .is_err()
        );
    }
}
