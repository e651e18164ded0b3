//! Arbitrary UAPI requests parsed and applied to a core: must never panic.
#![no_main]

use kwg_wg::core::Core;
use kwg_wg::uapi::{Request, apply_to_core, parse_request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(Request::Set(req)) = parse_request(text) {
        apply_to_core(&req, &mut Core::new(None));
    }
});
