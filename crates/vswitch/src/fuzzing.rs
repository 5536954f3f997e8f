//! Entry points for the fuzz targets (`fuzz/`): the control protocol and the two file formats,
//! reached as the binary reaches them. Not a stable interface.

use serde_json::Value;
use vswitch_datapath::Switch;

/// Answers every request line in `input` against `switch`, as the control socket would (less
/// requests that reach outside the process: port add, capture, mirror to a file). Panics if a
/// reply is not the protocol's shape.
pub fn control(input: &[u8], switch: &Switch) {
    for reply in crate::control::answer_all(input, switch) {
        let reply = serde_json::to_value(&reply).expect("a reply serializes");
        assert_eq!(
            reply["version"],
            Value::from(crate::control::PROTOCOL_VERSION)
        );
        match reply["ok"] {
            Value::Bool(true) => assert!(reply.get("result").is_some(), "{reply}"),
            Value::Bool(false) => assert!(reply["error"].is_string(), "{reply}"),
            _ => panic!("reply without ok: {reply}"),
        }
    }
}

/// Checks `text` as `vswitch config check` and `vswitch lab check-file` would.
pub fn config_text(text: &str) {
    if let Ok(config) = crate::config::Config::parse("fuzz.toml", text.to_owned()) {
        let _ = crate::check_switch_config(&config);
    }
    let _ = crate::lab::file::parse("fuzz.toml", text, None);
}
