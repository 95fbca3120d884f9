#![no_main]

use boxlite_net::l7::{MAX_PEEK, Peek, peek};
use boxlite_net::policy::normalize_name;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let whole = peek(data);
    // A name the parser returns is already in canonical form.
    if let Peek::Tls { sni: Some(n) } | Peek::Http { host: Some(n) } = &whole {
        assert_eq!(normalize_name(n).as_deref(), Ok(n.as_str()));
    }
    // Bytes past MAX_PEEK are never looked at.
    if data.len() > MAX_PEEK {
        assert_eq!(whole, peek(&data[..MAX_PEEK]));
    }
});
