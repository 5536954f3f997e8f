//! The commands' side of the control socket: one request, its reply.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;

use super::protocol::{Envelope, PROTOCOL_VERSION, Reply, Request, socket_path};

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
    let reply: Reply = serde_json::from_str(&line).context("malformed reply")?;
    Ok((reply.into_result()?, reader))
}
