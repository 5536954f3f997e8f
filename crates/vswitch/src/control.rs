//! The control socket: a running switch answers requests on `/run/vswitch/NAME.sock`.
//!
//! Protocol (version 1): one JSON object per line each way. A request is
//! `{"version":1,"request":{"cmd":"stats"}}`; the reply is `{"version":1,"ok":true,"result":...}`
//! or `{"version":1,"ok":false,"error":"..."}`. Commands: `info`, `stats`, `fdb_show`,
//! `fdb_add {mac, port}`, `fdb_del {mac}`, `fdb_flush {port?}`, `port_add {spec}`,
//! `pipeline_show {port}`, `pipeline_set {port, hook, stages}`, `pipeline_clear {port, hook?}`,
//! `port_del {port}`, and `capture {port, count?, direction}`, whose ok line is followed by a pcap
//! stream (nanosecond timestamps) on the same connection. A malformed request gets an error reply; the switch keeps running.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use vswitch_core::{DropReason, MacAddr, pcap};
use vswitch_datapath::{Capture, Direction, Hook, PortSpec, Switch};

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
}

/// Fails if a switch called `name` is running; a stale socket from a crashed run is fine (it
/// will be replaced). Called before any port is opened, so a refused start leaves nothing.
pub fn ensure_name_free(name: &str) -> Result<()> {
    if name.is_empty() || name.contains('/') || name.len() > 64 {
        bail!("switch name {name:?} must be 1 to 64 characters without '/'");
    }
    let path = socket_path(name);
    if path.exists() && UnixStream::connect(&path).is_ok() {
        bail!(
            "a switch named {name} is already running (control socket {}); pick another --name",
            path.display()
        );
    }
    Ok(())
}

impl ControlServer {
    /// Binds the socket for switch `name` (refusing if a switch of that name is running,
    /// replacing a stale socket) and serves `switch` on a thread.
    pub fn start(name: &str, switch: Arc<Switch>, offload: bool) -> Result<ControlServer> {
        ensure_name_free(name)?;
        std::fs::create_dir_all(RUN_DIR).with_context(|| format!("creating {RUN_DIR}"))?;
        let path = socket_path(name);
        if path.exists() {
            tracing::warn!(socket = %path.display(), "replacing a stale control socket");
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
        let listener =
            UnixListener::bind(&path).with_context(|| format!("binding {}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("setting the mode of {}", path.display()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = stop.clone();
        let switch_name = name.to_owned();
        let thread = std::thread::Builder::new()
            .name("vswitch-control".into())
            .spawn(move || {
                // Blocks in accept: an idle switch costs nothing here. Drop wakes it by
                // connecting once the stop flag is set.
                while !thread_stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok(_) if thread_stop.load(Ordering::Relaxed) => break,
                        Ok((stream, _)) => {
                            let switch = switch.clone();
                            let name = switch_name.clone();
                            std::thread::spawn(move || serve(stream, &switch, &name, offload));
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
        })
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

/// Answers requests on one connection until the client closes it.
fn serve(stream: UnixStream, switch: &Switch, name: &str, offload: bool) {
    let _ = stream.set_nonblocking(false);
    let mut writer = match stream.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { return };
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
        let reply = match serde_json::from_str::<Envelope>(&line) {
            Ok(env) if env.version != PROTOCOL_VERSION => json!({
                "version": PROTOCOL_VERSION, "ok": false,
                "error": format!("unsupported protocol version {} (this switch speaks {PROTOCOL_VERSION})", env.version),
            }),
            Ok(env) => match handle(&env.request, switch, name, offload) {
                Ok(result) => json!({"version": PROTOCOL_VERSION, "ok": true, "result": result}),
                Err(e) => {
                    json!({"version": PROTOCOL_VERSION, "ok": false, "error": format!("{e:#}")})
                }
            },
            Err(e) => {
                json!({"version": PROTOCOL_VERSION, "ok": false, "error": format!("bad request: {e}")})
            }
        };
        if writeln!(writer, "{reply}").is_err() {
            return;
        }
    }
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
    let capture = Capture::start(port, direction, 4096);
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
        match capture.frames().recv_timeout(Duration::from_millis(200)) {
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
    tracing::info!(frames = sent, dropped = capture.dropped(), "capture ended");
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

/// Counters of every port and of the table, as JSON.
pub fn stats_json(switch: &Switch) -> Value {
    let ports: Vec<Value> = switch
        .ports()
        .iter()
        .map(|p| {
            let s = p.counters().snapshot();
            let drops: serde_json::Map<String, Value> = DropReason::ALL
                .iter()
                .map(|r| (r.name().to_owned(), json!(s.drops(*r))))
                .collect();
            let pipeline = |hook: Hook| -> Vec<Value> {
                p.pipeline(hook)
                    .counters()
                    .into_iter()
                    .map(|(kind, counters)| {
                        let c: serde_json::Map<String, Value> =
                            counters.into_iter().map(|(k, v)| (k.to_owned(), json!(v))).collect();
                        json!({"kind": kind, "counters": c})
                    })
                    .collect()
            };
            json!({
                "pipeline": {"in": pipeline(Hook::Ingress), "out": pipeline(Hook::Egress)},
                "name": p.name(), "kind": p.device().kind(), "state": if p.is_gone() { "gone" } else { "up" },
                "mtu": p.mtu(), "rx_packets": s.rx_packets, "rx_bytes": s.rx_bytes,
                "tx_packets": s.tx_packets, "tx_bytes": s.tx_bytes, "drops": drops,
                "kernel_drops": s.kernel_drops,
            })
        })
        .collect();
    let t = switch.table_stats();
    let (entries, capacity) = switch.table_size();
    let busy: Vec<f64> = switch
        .worker_busy()
        .iter()
        .map(|d| d.as_secs_f64())
        .collect();
    json!({
        "ports": ports,
        "workers_busy_seconds": busy,
        "table": {"entries": entries, "capacity": capacity, "learned": t.learned, "moved": t.moved, "aged": t.aged, "evicted": t.evicted},
    })
}

fn handle(request: &Request, switch: &Switch, name: &str, offload: bool) -> Result<Value> {
    Ok(match request {
        Request::Info => json!({
            "name": name, "pid": std::process::id(),
            "ports": switch.ports().iter().map(|p| p.name().to_owned()).collect::<Vec<_>>(),
        }),
        Request::Stats => stats_json(switch),
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
        Request::FdbAdd { mac, port } => {
            let mac: MacAddr = mac.parse()?;
            switch.add_static(mac, port)?;
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
