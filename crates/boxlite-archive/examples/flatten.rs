//! Flatten image layers into one canonical tar stream on stdout, printing how long the
//! plan (headers) and the emission (contents) took on stderr. For measuring the
//! flattener alone, and for looking at what it makes of a set of layers:
//!
//!   flatten LAYER... > flat.tar      (each LAYER a tar, `.gz` or `.zst` file)

use std::io::{BufReader, Write};
use std::time::Instant;

use boxlite_archive::layers::{self, Compression, Limits};

fn main() {
    let paths: Vec<String> = std::env::args().skip(1).collect();
    if paths.is_empty() {
        eprintln!("usage: flatten LAYER... > flat.tar");
        std::process::exit(2);
    }
    let open = |i: usize| {
        let p = &paths[i];
        let c = if p.ends_with(".gz") {
            Compression::Gzip
        } else if p.ends_with(".zst") {
            Compression::Zstd
        } else {
            Compression::None
        };
        let f = std::fs::File::open(p)?;
        layers::decompress(BufReader::with_capacity(256 << 10, f), c)
    };
    let t = Instant::now();
    let plan = match layers::plan(paths.len(), open, &Limits::default()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("layer {:?}: {e}", e.layer().map(|i| &paths[i]));
            std::process::exit(1);
        }
    };
    let planned = t.elapsed();
    let t = Instant::now();
    let out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
    let written = match layers::emit(&plan, open, out) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("emitting: {e}");
            std::process::exit(1);
        }
    };
    let _ = std::io::stdout().flush();
    eprintln!(
        "{:?}; plan {:.3} s, emit {:.3} s, {written} bytes",
        plan.stats,
        planned.as_secs_f64(),
        t.elapsed().as_secs_f64()
    );
}
