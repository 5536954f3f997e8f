//! What travels on the control socket: one JSON object per line each way, versioned.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use vswitch_core::MacAddr;
use vswitch_datapath::{Direction, Hook};

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;
/// Where control sockets live.
pub const RUN_DIR: &str = "/run/vswitch";

/// The socket of the switch called `name`.
pub fn socket_path(name: &str) -> PathBuf {
    Path::new(RUN_DIR).join(format!("{name}.sock"))
}

/// What a client may ask. Values travel in their text form (`"02:00:00:00:00:01"`, `"in"`),
/// and are checked as they are read: a request that arrives is well-formed.
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
        #[serde(with = "text")]
        mac: MacAddr,
        /// The port's name.
        port: String,
        /// For a VXLAN port: the remote VTEP the MAC is behind.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dst: Option<IpAddr>,
    },
    /// Remove an entry.
    FdbDel {
        /// The MAC.
        #[serde(with = "text")]
        mac: MacAddr,
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
        #[serde(with = "text")]
        mac: MacAddr,
    },
    /// Take a MAC off a MACVLAN sub-port.
    MacvlanUnbind {
        /// The sub-port.
        port: String,
        /// The MAC.
        #[serde(with = "text")]
        mac: MacAddr,
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
        #[serde(with = "text")]
        hook: Hook,
        /// The stages, in text form.
        stages: String,
    },
    /// Remove a port's pipeline.
    PipelineClear {
        /// The port's name.
        port: String,
        /// `in` or `out`; both if absent.
        #[serde(default, with = "text::option")]
        hook: Option<Hook>,
    },
    /// Stream the port's frames as pcap after the reply line, until `count` frames or until
    /// the client closes the connection.
    Capture {
        /// The port's name.
        port: String,
        /// Stop after this many frames.
        count: Option<u64>,
        /// `in`, `out` or `both`.
        #[serde(with = "text")]
        direction: Direction,
    },
}

/// A request as it travels: the protocol version, then the request.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Envelope {
    pub(super) version: u32,
    pub(super) request: Request,
}

/// The one reply shape: `{"version":1,"ok":true,"result":...}` or
/// `{"version":1,"ok":false,"error":"..."}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    /// The protocol version of the switch that answered.
    pub version: u32,
    /// Whether the request was carried out.
    pub ok: bool,
    /// What it answered (`null` for nothing), if ok.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    result: Option<Value>,
    /// Why not, if not ok.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl Reply {
    /// Carried out, answering `result`.
    pub fn ok(result: Value) -> Reply {
        Reply {
            version: PROTOCOL_VERSION,
            ok: true,
            result: Some(result),
            error: None,
        }
    }

    /// Refused, for `why`.
    pub fn error(why: impl std::fmt::Display) -> Reply {
        Reply {
            version: PROTOCOL_VERSION,
            ok: false,
            result: None,
            error: Some(why.to_string()),
        }
    }

    /// The result, or the switch's error.
    pub fn into_result(self) -> Result<Value> {
        if self.ok {
            Ok(self.result.unwrap_or(Value::Null))
        } else {
            Err(anyhow::anyhow!(
                "{}",
                self.error.as_deref().unwrap_or("unknown error")
            ))
        }
    }
}

impl std::fmt::Display for Reply {
    /// One line of JSON, as it travels.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let line = serde_json::to_string(self).map_err(|_| std::fmt::Error)?;
        f.write_str(&line)
    }
}

/// The reply to one request line (not a capture), `handle` answering a well-formed request.
pub(super) fn reply_to(line: &str, handle: impl FnOnce(&Request) -> Result<Value>) -> Reply {
    match serde_json::from_str::<Envelope>(line) {
        Ok(env) if env.version != PROTOCOL_VERSION => Reply::error(format!(
            "unsupported protocol version {} (this switch speaks {PROTOCOL_VERSION})",
            env.version
        )),
        Ok(env) => match handle(&env.request) {
            Ok(result) => Reply::ok(result),
            Err(e) => Reply::error(format!("{e:#}")),
        },
        Err(e) => Reply::error(format!("bad request: {e}")),
    }
}

/// Serde through `Display` and `FromStr`: values travel in the text form users type.
mod text {
    use std::fmt::Display;
    use std::str::FromStr;

    use serde::{Deserialize, Deserializer, Serializer, de};

    pub(super) fn serialize<T: Display, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(value)
    }

    pub(super) fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: FromStr,
        T::Err: Display,
        D: Deserializer<'de>,
    {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        text.parse().map_err(de::Error::custom)
    }

    /// The same for an optional value (`null` or absent: none).
    pub(super) mod option {
        use super::*;

        pub(in super::super) fn serialize<T: Display, S: Serializer>(
            value: &Option<T>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match value {
                Some(v) => s.collect_str(v),
                None => s.serialize_none(),
            }
        }

        pub(in super::super) fn deserialize<'de, T, D>(d: D) -> Result<Option<T>, D::Error>
        where
            T: FromStr,
            T::Err: Display,
            D: Deserializer<'de>,
        {
            let text = <Option<std::borrow::Cow<'de, str>>>::deserialize(d)?;
            text.map(|t| t.parse().map_err(de::Error::custom))
                .transpose()
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
                mac: MacAddr([2, 0, 0, 0, 0, 1]),
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

    #[test]
    fn values_are_checked_as_requests_are_read() {
        let parsed: Envelope = serde_json::from_str(
            r#"{"version":1,"request":{"cmd":"capture","port":"tap0","count":null,"direction":"in"}}"#,
        )
        .unwrap();
        assert_eq!(
            parsed.request,
            Request::Capture {
                port: "tap0".into(),
                count: None,
                direction: Direction::In
            }
        );
        let parsed: Envelope = serde_json::from_str(
            r#"{"version":1,"request":{"cmd":"pipeline_clear","port":"tap0","hook":"out"}}"#,
        )
        .unwrap();
        assert_eq!(
            parsed.request,
            Request::PipelineClear {
                port: "tap0".into(),
                hook: Some(Hook::Egress)
            }
        );
        let parsed: Envelope = serde_json::from_str(
            r#"{"version":1,"request":{"cmd":"pipeline_clear","port":"tap0"}}"#,
        )
        .unwrap();
        assert_eq!(
            parsed.request,
            Request::PipelineClear {
                port: "tap0".into(),
                hook: None
            }
        );
        // Each bad value is refused with what was wrong, and the handler never sees it.
        for (line, says) in [
            (
                r#"{"cmd":"fdb_del","mac":"nonsense"}"#,
                "invalid MAC address",
            ),
            (
                r#"{"cmd":"fdb_add","mac":"02:00:00:00:00:01","port":"p","dst":"x"}"#,
                "invalid IP address",
            ),
            (
                r#"{"cmd":"pipeline_set","port":"p","hook":"sideways","stages":""}"#,
                "sideways",
            ),
            (
                r#"{"cmd":"capture","port":"p","count":null,"direction":"up"}"#,
                "up",
            ),
        ] {
            let reply = reply_to(&format!(r#"{{"version":1,"request":{line}}}"#), |_| {
                panic!("handled a bad request: {line}")
            });
            let text = reply.to_string();
            assert!(
                !reply.ok && text.contains("bad request") && text.contains(says),
                "{text}"
            );
        }
    }

    #[test]
    fn replies_have_one_shape() {
        assert_eq!(
            Reply::ok(Value::Null).to_string(),
            r#"{"version":1,"ok":true,"result":null}"#
        );
        assert_eq!(
            Reply::error("no port x").to_string(),
            r#"{"version":1,"ok":false,"error":"no port x"}"#
        );
        let back: Reply = serde_json::from_str(r#"{"version":1,"ok":true,"result":null}"#).unwrap();
        assert_eq!(back.into_result().unwrap(), Value::Null);
        let back: Reply = serde_json::from_str(&Reply::error("no port x").to_string()).unwrap();
        assert_eq!(back.into_result().unwrap_err().to_string(), "no port x");
    }
}
