//! Arbitrary peer Secret data, gateway info JSON and leases through the contract parsers: must
//! never panic, and a parsed peer spec must round-trip.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| kwg_contract::fuzz_parse(data));
