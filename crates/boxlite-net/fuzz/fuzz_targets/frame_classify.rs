#![no_main]

use boxlite_net::config::Subnet;
use boxlite_net::frame::{Kind, classify};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let subnet = Subnet::default();
    if let Kind::Udp { payload, .. } = classify(data, &subnet) {
        // The payload range must lie inside the frame it came from.
        assert!(payload.start <= payload.end && payload.end <= data.len());
    }
});
