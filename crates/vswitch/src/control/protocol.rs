//! What travels on the control socket: one JSON object per line each way, versioned.

use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

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

/// A request as it travels: the protocol version, then the request.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Envelope {
    pub(super) version: u32,
    pub(super) request: Request,
}

/// The reply line to one request line (not a capture), `handle` answering a well-formed request.
pub(super) fn reply_to(line: &str, handle: impl FnOnce(&Request) -> Result<Value>) -> Value {
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
