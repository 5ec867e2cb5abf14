//! cargo fuzz target `slot_ranges`: the properties of fuzz/checks/slots.rs.
#![no_main]

#[path = "../checks/slots.rs"]
#[allow(dead_code)]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check_slot_ranges(data));
