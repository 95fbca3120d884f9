#![no_main]

use std::time::Instant;

use boxlite_net::config::{Rules, Subnet};
use boxlite_net::dns::{QueryOutcome, Resolver};
use boxlite_net::policy::{PinSet, Policy};
use libfuzzer_sys::fuzz_target;

/// A guest's `A` query for `www.example.com` (id 0x1234, RD set), as on the wire.
const QUERY: &[u8] = &[
    0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 3, b'w', b'w', b'w', 7,
    b'e', b'x', b'a', b'm', b'p', b'l', b'e', 3, b'c', b'o', b'm', 0, 0x00, 0x01, 0x00, 0x01,
];

fuzz_target!(|data: &[u8]| {
    let subnet = Subnet::default();
    let rules = Rules {
        allow: vec!["*.example.com".into(), "10.0.0.0/8".into()],
        deny: vec!["*.evil.test".into()],
    };
    let policy = Policy::new(&rules, &subnet).expect("valid rules");
    let resolver = Resolver::new(&[], &subnet).expect("no hosts");
    let now = Instant::now();
    let mut pins = PinSet::new(16);
    let QueryOutcome::Forward(fwd) = resolver.on_query(QUERY, &policy, &mut pins, now) else {
        panic!("the fixed query is forwarded");
    };
    // Patch the id so the input is judged on more than its first two bytes.
    let mut reply = data.to_vec();
    if let Some(id) = reply.get_mut(..2) {
        id.copy_from_slice(&fwd.id.to_be_bytes());
    }
    if let Ok(out) = resolver.on_reply(&fwd, &reply, &policy, &mut pins, now) {
        let _ = boxlite_net::dns::truncate_for_udp(&out, fwd.udp_limit());
    }
});
