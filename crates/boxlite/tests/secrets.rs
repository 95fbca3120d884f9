//! Secrets through the library API: what is checked at creation, where a value lives
//! (only its own 0600 file, never the database or `inspect`), and a start whose source
//! is gone. None of these boots a VM.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use boxlite::model::{NetworkSpec, StoredSource};
use boxlite::{BoxError, BoxOptions, BoxState, Error, ErrorKind, Secret, SecretValue};
use boxlite_testkit::TestHome;

const VALUE: &str = "sk-live-7f3c9a1e5b";

fn literal(name: &str) -> Secret {
    Secret::from_value(name, SecretValue::new(VALUE.into()), ["api.test"])
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() && !p.is_symlink() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn holds(path: &Path, needle: &str) -> bool {
    std::fs::read(path)
        .map(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_literal_value_lives_only_in_its_0600_file_never_in_the_database_or_inspect() {
    let h = TestHome::new();
    let rt = h.runtime();

    let b = rt
        .create(BoxOptions::new("boxlite/busybox").secret(literal("TOKEN").body(true)))
        .await
        .unwrap();
    let info = b.info().await.unwrap();
    let inspect = serde_json::to_value(&info).unwrap();

    let file = info.dir.join("secrets/TOKEN");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&file), 0o600);
    assert_eq!(mode(file.parent().unwrap()), 0o700);
    let holders: Vec<PathBuf> = files(&h.home)
        .into_iter()
        .filter(|p| holds(p, VALUE))
        .collect();
    assert_eq!(
        holders,
        vec![file.clone()],
        "the value is somewhere else too"
    );
    let text = inspect.to_string();
    assert!(!text.contains(VALUE), "{text}");
    assert_eq!(
        inspect["config"]["secrets"],
        serde_json::json!([{
            "name": "TOKEN", "hosts": ["api.test"], "placeholder": "<BOXLITE_SECRET:TOKEN>",
            "body": true, "source": {"stored": true}
        }])
    );
    let env = &info.config.run.env;
    assert!(
        env.contains(&"TOKEN=<BOXLITE_SECRET:TOKEN>".to_string()),
        "{env:?}"
    );
    assert!(env.contains(&"BOXLITE_SECRET_TOKEN=<BOXLITE_SECRET:TOKEN>".to_string()));
    assert!(!format!("{info:?}").contains(VALUE));
    b.remove(false).await.unwrap();
    assert!(!file.exists());
    assert!(files(&h.home).iter().all(|p| !holds(p, VALUE)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_secrets_name_the_problem_and_leave_nothing_behind() {
    let h = TestHome::new();
    let rt = h.runtime();
    let missing = "BOXLITE_TEST_UNSET_VARIABLE_5E1D";
    let cases: Vec<(BoxOptions, &str)> = vec![
        (
            BoxOptions::new("boxlite/busybox")
                .network(NetworkSpec::none())
                .secret(literal("K")),
            "a secret needs the network",
        ),
        (
            BoxOptions::new("boxlite/busybox").secret(Secret::from_env("K", missing, ["a.test"])),
            "environment variable BOXLITE_TEST_UNSET_VARIABLE_5E1D is not set",
        ),
        (
            BoxOptions::new("boxlite/busybox").secret(Secret::from_file(
                "K",
                "/nonexistent/key",
                ["a.test"],
            )),
            "/nonexistent/key",
        ),
        (
            BoxOptions::new("boxlite/busybox")
                .env("BOXLITE_SECRET_K", "x")
                .secret(literal("K")),
            "environment variable BOXLITE_SECRET_K of the box",
        ),
        (
            BoxOptions::new("boxlite/busybox").secret(Secret::from_value(
                "K",
                SecretValue::new(VALUE.into()),
                Vec::<String>::new(),
            )),
            "has no hosts",
        ),
        (
            BoxOptions::new("boxlite/busybox").secret(literal("K").placeholder("short")),
            "invalid placeholder",
        ),
    ];

    for (opts, want) in cases {
        let e = rt.create(opts).await.unwrap_err();
        let msg = boxlite::error_chain(&e);
        assert!(msg.contains(want), "{msg}");
        assert!(!msg.contains(VALUE), "{msg}");
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{msg}");
    }

    assert!(rt.list().await.unwrap().is_empty());
    assert!(h.box_dirs().is_empty(), "{:?}", h.box_dirs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_whose_secret_file_is_gone_fails_naming_it_before_anything_runs() {
    let h = TestHome::new();
    let key = h.home.join("key.txt");
    std::fs::write(&key, format!("{VALUE}\n")).unwrap();
    let rt = h.runtime();
    let b = rt
        .create(BoxOptions::new("boxlite/busybox").secret(Secret::from_file(
            "K",
            &key,
            ["api.test"],
        )))
        .await
        .unwrap();
    std::fs::remove_file(&key).unwrap();

    let e = b.start().await.unwrap_err();

    let msg = boxlite::error_chain(&e);
    assert!(matches!(e, Error::Box(BoxError::Secret(_))), "{msg}");
    assert!(
        msg.contains("secret \"K\"") && msg.contains(&key.display().to_string()),
        "{msg}"
    );
    let info = b.info().await.unwrap();
    assert_eq!(info.state, BoxState::Configured);
    assert_eq!(info.vmm_pid, None);
    assert_eq!(
        info.config.secrets[0].source,
        StoredSource::File(key.clone())
    );
    assert!(h.processes().is_empty(), "{:?}", h.processes());
    b.remove(false).await.unwrap();
}
