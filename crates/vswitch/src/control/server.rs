//! The switch's side of the control socket: accepts connections (a thread each, within a
//! limit, with deadlines), reads request lines, answers them from the running switch, and turns
//! a capture request's connection into a pcap stream.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use vswitch_core::{DropReason, pcap};
use vswitch_datapath::{Capture, Direction, Hook, PortSpec, Switch, SwitchStats};

use super::names::NameLock;
use super::protocol::{Envelope, PROTOCOL_VERSION, RUN_DIR, Reply, Request, reply_to, socket_path};

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

impl ControlServer {
    /// Binds the socket for the switch that holds `lock` (replacing a stale socket) and serves
    /// `switch` on a thread.
    pub fn start(lock: NameLock, switch: Arc<Switch>, offload: bool) -> Result<ControlServer> {
        let name = lock.name().to_owned();
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
        let _ = writeln!(stream, "{}", Reply::error(why));
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
                let _ = writeln!(writer, "{}", Reply::error(format!("{e:#}")));
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
            if let Err(e) = stream_capture(&mut writer, switch, &port, count, direction) {
                let _ = writeln!(writer, "{}", Reply::error(format!("{e:#}")));
            }
            return;
        }
        let reply = reply_to(&line, |request| handle(request, switch, name, offload));
        if writeln!(writer, "{reply}").is_err() {
            return;
        }
    }
}

/// Answers each request line in `input` as [`serve`] does, against `switch`, skipping requests
/// that would reach outside the process (port add, capture, mirror to a file); returns the
/// replies. For the fuzz target.
pub(crate) fn answer_all(input: &[u8], switch: &Switch) -> Vec<Reply> {
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
    direction: Direction,
) -> Result<()> {
    let port = switch
        .port(port)
        .filter(|p| !p.is_gone())
        .with_context(|| format!("no port {port}"))?;
    let capture = Capture::start(port, direction, 4096)?;
    // From here on the fast path leaves this port's frames to the switch, which copies them.
    switch.captures_changed();
    writeln!(writer, "{}", Reply::ok(Value::Null))?;
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
            switch.add_static_at(*mac, port, *dst)?;
            json!(null)
        }
        Request::FdbDel { mac } => {
            if !switch.remove_fdb(*mac)? {
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
            let kernel = switch.kernel_may_carry();
            let device = spec.open(offload, switch.threads(), switch.steering(), kernel)?;
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
            switch.macvlan_bind(*mac, port)?;
            json!(null)
        }
        Request::MacvlanUnbind { port, mac } => {
            if !switch.macvlan_unbind(*mac, port)? {
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
            switch.set_pipeline(port, *hook, stages)?;
            json!(null)
        }
        Request::PipelineClear { port, hook } => {
            let hooks = match hook {
                Some(h) => vec![*h],
                None => vec![Hook::Ingress, Hook::Egress],
            };
            for h in hooks {
                switch.clear_pipeline(port, h)?;
            }
            json!(null)
        }
    })
}
