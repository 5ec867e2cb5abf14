//! cargo fuzz target `rest_body`: the properties of fuzz/checks/protocol.rs.
#![no_main]

#[path = "../checks/protocol.rs"]
#[allow(dead_code)]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check_rest_body(data));
