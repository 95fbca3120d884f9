#![no_main]

use std::time::Instant;

use boxlite_net::config::{HostEntry, Rules, Subnet};
use boxlite_net::dns::Resolver;
use boxlite_net::policy::{PinSet, Policy};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let subnet = Subnet::default();
    let rules = Rules {
        allow: vec!["*.example.com".into(), "10.0.0.0/8".into()],
        deny: vec!["evil.test".into()],
    };
    let policy = Policy::new(&rules, &subnet).expect("valid rules");
    let hosts = [HostEntry {
        name: "static.example.com".into(),
        ip: [203, 0, 113, 10].into(),
    }];
    let resolver = Resolver::new(&hosts, &subnet).expect("valid hosts");
    let mut pins = PinSet::new(16);
    let _ = resolver.on_query(data, &policy, &mut pins, Instant::now());
});
