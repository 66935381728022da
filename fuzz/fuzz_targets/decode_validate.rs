//! Fuzz decode + validate + enrich: arbitrary bytes (the first picks the route, batch or
//! one of the six calls) must never panic, hang or blow the stack, and ferry-wire's scanner
//! must accept exactly the JSON serde_json accepts. The checks are `ferry_event::fuzz_one`,
//! which the unit tests run too.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferry_event::fuzz_one(data));
