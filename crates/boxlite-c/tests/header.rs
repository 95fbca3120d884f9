//! The checked-in `include/boxlite.h` is what cbindgen makes of the crate now: a change
//! to the ABI that forgets the header fails here. `BOXLITE_UPDATE_HEADER=1` rewrites it.

use std::path::Path;

#[test]
fn checked_in_header_matches_the_code() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let mut out = Vec::new();
    cbindgen::Builder::new()
        .with_crate(dir)
        .with_config(config)
        .generate()
        .expect("cbindgen cannot read the crate")
        .write(&mut out);
    let generated = String::from_utf8(out).expect("the header is UTF-8");
    let path = dir.join("include/boxlite.h");
    if std::env::var_os("BOXLITE_UPDATE_HEADER").is_some() {
        std::fs::write(&path, &generated).expect("write include/boxlite.h");
        return;
    }
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        current == generated,
        "include/boxlite.h is stale: run BOXLITE_UPDATE_HEADER=1 cargo test -p boxlite-c --test header"
    );
}
