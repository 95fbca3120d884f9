//! The library's modules are layered: each may import only modules of a lower layer (or
//! itself). This reads every `crate::` path in `src/` and fails on an upward or sideways
//! import, so the import graph stays free of cycles. The layers are drawn in
//! `docs/architecture.md`; change both together.

use std::path::{Path, PathBuf};

/// Top-level modules of `src/` by layer, lowest first. Modules of one layer do not
/// import each other.
const LAYERS: &[&[&str]] = &[
    &["jailer"],
    &["util"],
    &["model"],
    &["layout"],
    &["assets", "db", "disk", "net", "volumes", "vmm"],
    &["portal"],
    &["context"],
    &["images"],
    &["config"],
    &["vm"],
    &["litebox"],
    &["builder"],
    &["monitor"],
    &["runtime"],
];

/// Items of the crate root (`lib.rs`) that modules may use: the crate-wide error, from
/// the layer of `context` up (lower modules return their own typed errors).
const ROOT_ITEMS: &[&str] = &["Error"];
const ROOT_ITEMS_FROM: &str = "context";

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a file belongs to.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// Every `crate::<name>` in the code (comments removed), with its line number.
fn crate_paths(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = match line.find("//") {
            Some(i) if !line[..i].contains('"') => &line[..i],
            _ => line,
        };
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let after = &rest[i + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '{')
                .collect();
            out.push((n + 1, name));
            rest = after;
        }
    }
    out
}

#[test]
fn no_module_imports_a_module_of_its_own_layer_or_a_higher_one() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut problems = Vec::new();
    let root_from = layer_of(ROOT_ITEMS_FROM).unwrap();
    for file in &files {
        if file.file_name().is_some_and(|n| n == "lib.rs") {
            continue;
        }
        let module = module_of(&src, file);
        let Some(own) = layer_of(&module) else {
            problems.push(format!(
                "{}: module {module} is in no layer; add it to LAYERS",
                file.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        for (line, name) in crate_paths(&text) {
            let at = format!("{}:{line}", file.strip_prefix(&src).unwrap().display());
            if name.starts_with('{') {
                problems.push(format!(
                    "{at}: `use crate::{{...}}` hides which modules are used; write one path per module"
                ));
            } else if ROOT_ITEMS.contains(&name.as_str()) {
                if own < root_from {
                    problems.push(format!(
                        "{at}: {module} uses crate::{name}; below {ROOT_ITEMS_FROM}, return the module's own error"
                    ));
                }
            } else if name == module {
                continue;
            } else {
                match layer_of(&name) {
                    Some(l) if l < own => {}
                    Some(_) => problems.push(format!(
                        "{at}: {module} (layer {own}) imports {name} (layer {}), which is not below it",
                        layer_of(&name).unwrap()
                    )),
                    None => problems.push(format!(
                        "{at}: crate::{name} is neither a module in LAYERS nor an allowed root item"
                    )),
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "layering violations:\n{}",
        problems.join("\n")
    );
}

#[test]
fn every_top_level_module_is_in_exactly_one_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let declared: Vec<String> = lib
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let l = l
                .strip_prefix("pub(crate) mod ")
                .or_else(|| l.strip_prefix("pub mod "))
                .or_else(|| l.strip_prefix("mod "))?;
            Some(l.trim_end_matches(';').to_string())
        })
        .collect();
    let mut listed: Vec<&str> = LAYERS.iter().flat_map(|l| l.iter().copied()).collect();
    listed.sort_unstable();
    let mut declared_sorted: Vec<&str> = declared.iter().map(String::as_str).collect();
    declared_sorted.sort_unstable();
    assert_eq!(declared_sorted, listed);
}

#[test]
fn the_checker_sees_paths_in_uses_and_in_expressions_but_not_in_comments() {
    let text = "use crate::db::Db;\nlet x = crate::vm::launch(); // crate::runtime\n/// crate::litebox\nuse crate::{a, b};";
    let found: Vec<String> = crate_paths(text).into_iter().map(|(_, n)| n).collect();
    assert_eq!(found, ["db", "vm", "{a"]);
}
