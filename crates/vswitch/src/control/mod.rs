//! The control socket: a running switch answers requests on `/run/vswitch/NAME.sock`.
//!
//! `protocol` is what travels (requests, replies, the version), `server` the switch's side
//! (one thread per connection within a limit, answering from the running switch), `client` the
//! commands' side, and `names` the per-name locks that keep two switches from one name.
//!
//! Protocol (version 1): one JSON object per line each way. A request is
//! `{"version":1,"request":{"cmd":"stats"}}`; the reply is `{"version":1,"ok":true,"result":...}`
//! or `{"version":1,"ok":false,"error":"..."}`. Commands: `info`, `stats`, `fdb_show`,
//! `fdb_add {mac, port}`, `fdb_del {mac}`, `fdb_flush {port?}`, `port_add {spec}`,
//! `pipeline_show {port}`, `pipeline_set {port, hook, stages}`, `pipeline_clear {port, hook?}`,
//! `port_del {port}`, and `capture {port, count?, direction}`, whose ok line is followed by a pcap
//! stream (nanosecond timestamps) on the same connection. A malformed request gets an error reply; the switch keeps running.

mod client;
mod names;
mod protocol;
mod server;

pub use client::{call, open};
pub use names::{NameLock, cleanup, ensure_name_free};
pub use protocol::{PROTOCOL_VERSION, RUN_DIR, Request, socket_path};
pub use server::ControlServer;
pub(crate) use server::answer_all;
#[cfg(test)]
pub(crate) use server::stats_json;
