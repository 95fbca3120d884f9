//! The REST API under schemathesis (pinned by `scripts/setup.sh` into
//! `build/compat-venv`), generating requests from the document the server serves: no
//! 5xx, responses as documented, the server still up at the end, and nothing left
//! behind: no half-created box, no helper process.
//!
//! The server and the fuzzer run in a network namespace of the test's own with only
//! loopback, so a generated image reference can never make the server pull from the
//! internet: every such pull fails at once as unreachable (422). Before fuzzing, the
//! remote CLI creates a box with a running execution, a second box and a volume, and
//! `fuzz_api.toml` binds path parameters to them most of the time, so the fuzzer
//! reaches a real VM, not only 404s.

#![allow(clippy::disallowed_methods)]

use std::process::Stdio;

use boxlite_testkit::TestHome;

const BIN: &str = env!("CARGO_BIN_EXE_boxlite");

fn repo() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn schemathesis_finds_no_server_error_and_nothing_is_left_behind() {
    let st = repo().join("build/compat-venv/bin/st");
    assert!(
        st.exists(),
        "{} is missing: scripts/setup.sh installs schemathesis there",
        st.display()
    );
    let h = TestHome::new();
    // Inside the namespace: bring loopback up, serve, fuzz, then stop the server and
    // report both exit codes.
    let script = r#"
set -u
ip link set lo up || exit 90
"$BIN" serve --port 8100 2>"$HOME_DIR/serve.log" & srv=$!
export BOXLITE_URL=http://127.0.0.1:8100
for _ in $(seq 200); do "$BIN" ls -q >/dev/null 2>&1 && break; sleep 0.1; done
# Things for the fuzzer to find (fuzz_api.toml binds path parameters to them).
"$BIN" create --name fuzzbox --network none boxlite/busybox >/dev/null || exit 91
"$BIN" create --name victim --network none boxlite/busybox >/dev/null || exit 91
"$BIN" volume create fuzzvol >/dev/null || exit 91
eid=$("$BIN" exec -d fuzzbox sleep 600) || exit 91
sed "s/EXEC_ID/$eid/" "$HOOKS_DIR/fuzz_api.toml" >"$HOME_DIR/schemathesis.toml"
# One worker: CPython 3.11's ast module is not thread-safe, and hypothesis parses its
# lambdas with it (two workers failed with "AST constructor recursion depth mismatch").
SCHEMATHESIS_HOOKS=fuzz_hooks PYTHONPATH="$HOOKS_DIR" "$ST" \
  --config-file "$HOME_DIR/schemathesis.toml" \
  run http://127.0.0.1:8100/openapi.json \
  -H "Authorization: Bearer fuzz-key" \
  --phases examples,coverage,fuzzing \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --max-examples 12 --max-time 90 --request-timeout 60 --workers 1 \
  --generation-database none --no-color
fuzz=$?
kill -0 $srv 2>/dev/null; alive=$?
kill -TERM $srv; wait $srv; served=$?
echo "fuzz=$fuzz alive=$alive served=$served"
"#;
    let mut cmd = h.cli("unshare");
    cmd.args(["--net", "--", "bash", "-c", script])
        .env("BIN", BIN)
        .env("ST", &st)
        .env("HOME_DIR", &h.home)
        .env("BOXLITE_API_KEY", "fuzz-key")
        .env("HOOKS_DIR", repo().join("crates/boxlite-cli/tests"))
        .current_dir(&h.home)
        .stdin(Stdio::null());
    let run = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    let log = std::fs::read_to_string(h.home.join("serve.log")).unwrap_or_default();
    // The server logs to the home's log file (no RUST_LOG here): its warnings and errors
    // say why a request failed.
    let home_log = std::fs::read_to_string(h.home.join("logs/boxlite.log")).unwrap_or_default();
    let trouble: Vec<&str> = home_log
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .collect();
    let trouble = trouble[trouble.len().saturating_sub(40)..].join("\n");
    let last = stdout.lines().last().unwrap_or_default();
    assert_eq!(
        last,
        "fuzz=0 alive=0 served=0",
        "schemathesis found problems, or the server died:\n{stdout}\n{}\nserver log:\n{log}\nthe home's log (warnings and errors):\n{trouble}",
        String::from_utf8_lossy(&run.stderr),
    );
    assert!(
        !log.contains("panicked"),
        "the server panicked under fuzzing:\n{log}"
    );

    // Every box the fuzzer created is a whole box: its directory and its record agree.
    let listed = h.ok(BIN, &["ls", "-a", "-q"]);
    let ids: Vec<&str> = listed.split_whitespace().collect();
    let dirs: Vec<String> = std::fs::read_dir(h.home.join("boxes"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    for d in &dirs {
        assert!(
            ids.iter()
                .any(|id| d.starts_with(id) || id.starts_with(d.as_str())),
            "box directory {d} has no box: a half-created box was left behind ({ids:?})"
        );
    }
    for id in &ids {
        h.ok(BIN, &["rm", "-f", id]);
    }
    assert!(
        h.processes().is_empty(),
        "processes left behind: {:?}",
        h.processes()
    );
    eprintln!(
        "fuzzing left {} boxes (removed); schemathesis said:\n{}",
        ids.len(),
        stdout.lines().rev().take(12).collect::<Vec<_>>().join("\n")
    );
}
