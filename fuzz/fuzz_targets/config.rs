//! The switch's config file and the lab topology file: any text is checked as `vswitch config
//! check` and `vswitch lab check-file` check it, and is refused with a reason or accepted,
//! never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    vswitch::fuzzing::config_text(text);
});
