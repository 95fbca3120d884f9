//! Our OpenAPI document against BoxLite's: every operation of theirs is either served
//! here with the same method, path, operation id and body schemas, or listed below as
//! arriving with a later feature; every schema of theirs that we have matches property
//! by property. Differences are allowed only where they are listed, with the reason.
//!
//! BoxLite's document is not reachable from CI, so `openapi/boxlite-reference.json` holds
//! the facts this compares, extracted by `scripts/openapi-reference.py` (type signatures
//! in the grammar of `sig` below).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

/// Operations of BoxLite's that this server does not serve yet, and why.
const LATER: &[(&str, &str)] = &[
    (
        "exportBox",
        "archives of a box are not part of the snapshot issue (snapshots and clones are local)",
    ),
    (
        "importBox",
        "archives of a box are not part of the snapshot issue (snapshots and clones are local)",
    ),
    (
        "prepareTunnel",
        "network routes arrive with network tunnels",
    ),
];

/// Schemas of BoxLite's we do not have, and why.
const NO_SCHEMA: &[(&str, &str)] = &[
    ("ExportBoxRequest", "export"),
    ("TunnelDescriptor", "tunnels"),
    ("SecurityPreset", "one preset, `standard`: a string here"),
    (
        "CreateBoxAdvancedOptions",
        "refused when it asks for anything: an object here",
    ),
    ("CreateContainerCapabilities", "inside `advanced`"),
];

/// Properties of BoxLite's schemas that ours leave out or type differently, and why.
const DIFFERENT: &[(&str, &str, &str)] = &[
    (
        "ExecutionInfo",
        "started_at",
        "the agent does not report start times",
    ),
    (
        "ExecutionInfo",
        "duration_ms",
        "the agent does not report durations",
    ),
    ("ErrorModel", "request_id", "no request ids"),
    ("ErrorModel", "stack", "never a stack trace"),
    (
        "ImageInfo",
        "cached_at",
        "null when the image's config has no creation time: the store does not record pull times",
    ),
    ("ServerConfig", "overrides", "no per-deployment overrides"),
    ("Principal", "email", "one local principal: no email"),
    (
        "Principal",
        "display_name",
        "one local principal: no display name",
    ),
    ("Principal", "expires_at", "the key does not expire"),
];

/// Values BoxLite's document accepts and this server refuses, and why. Each must show in
/// our document as a constraint theirs lacks (`minItems`, `minLength`, `pattern`), so a
/// client reading ours sees it.
const REFUSED: &[(&str, &str, &str)] = &[(
    "SecretSpec",
    "hosts",
    "an empty list: BoxLite reads it as every host, and a CA that can vouch for every \
     name is a hole; at least one host is required",
)];

fn load(path: &str) -> Value {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path);
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

/// A schema's type signature and whether it may be null: `string`, `integer`,
/// `array<ref:Box>`, `ref:Name`, `any`.
fn sig(s: &Value) -> (String, bool) {
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        return (format!("ref:{}", r.rsplit('/').next().unwrap()), false);
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(parts) = s.get(key).and_then(Value::as_array) {
            let parts: Vec<_> = parts.iter().map(sig).collect();
            let real: Vec<_> = parts.iter().filter(|(t, _)| t != "null").collect();
            let nullable = parts.iter().any(|(t, n)| t == "null" || *n);
            let t = if real.len() == 1 {
                real[0].0.clone()
            } else {
                "any".into()
            };
            return (t, nullable);
        }
    }
    let mut nullable = s.get("nullable") == Some(&Value::Bool(true));
    let t = match s.get("type") {
        Some(Value::String(t)) => Some(t.clone()),
        Some(Value::Array(ts)) => {
            nullable |= ts.iter().any(|t| t == "null");
            let real: Vec<_> = ts.iter().filter(|t| *t != "null").collect();
            (real.len() == 1).then(|| real[0].as_str().unwrap().to_string())
        }
        _ => None,
    };
    match t.as_deref() {
        Some("array") => (
            format!("array<{}>", sig(s.get("items").unwrap_or(&Value::Null)).0),
            nullable,
        ),
        Some(t) => (t.to_string(), nullable),
        None if s.is_null() => ("any".into(), false),
        None => ("any".into(), nullable),
    }
}

/// Our document in the reference's shape.
struct Ours {
    doc: Value,
}

impl Ours {
    fn schema(&self, name: &str) -> Option<&Value> {
        self.doc["components"]["schemas"].get(name)
    }

    /// A signature with each `ref:` replaced by the referred schema's own type, for
    /// comparing across documents whose helper schemas are named differently.
    fn base(&self, t: &str, reference: &Value) -> String {
        if let Some(inner) = t.strip_prefix("array<").and_then(|r| r.strip_suffix('>')) {
            return format!("array<{}>", self.base(inner, reference));
        }
        if let Some(name) = t.strip_prefix("ref:") {
            let in_ours = self.schema(name).map(|s| sig(s).0);
            let in_ref = reference["schemas"][name]["type"]
                .as_str()
                .map(String::from);
            return in_ours.or(in_ref).unwrap_or_else(|| "object".into());
        }
        t.to_string()
    }

    fn body(&self, content: Option<&Value>) -> Option<String> {
        let content = content?.as_object()?;
        [
            "application/json",
            "application/x-tar",
            "application/octet-stream",
        ]
        .iter()
        .find_map(|m| {
            content
                .get(*m)
                .map(|c| format!("{m} {}", sig(c.get("schema").unwrap_or(&Value::Null)).0))
        })
    }
}

/// Two signatures are compatible when equal, or equal after refs are resolved to their
/// schemas' types (`ref:ExecutionStatus` against an inline `string` enum).
fn compatible(ours: &Ours, reference: &Value, theirs: &str, mine: &str) -> bool {
    let base = |t: &str| match t.split_once(' ') {
        Some((media, t)) => format!("{media} {}", ours.base(t, reference)),
        None => ours.base(t, reference),
    };
    theirs == mine || base(theirs) == base(mine)
}

#[test]
fn operations_and_schemas_match_boxlites_document() {
    let reference = load("openapi/boxlite-reference.json");
    let ours = Ours {
        doc: serde_json::from_str(&boxlite_server::openapi::document()).unwrap(),
    };
    let mut problems = Vec::new();
    let mut served = 0;

    for op in reference["operations"].as_array().unwrap() {
        let (method, path) = (op["method"].as_str().unwrap(), op["path"].as_str().unwrap());
        let id = op["operationId"].as_str().unwrap();
        let Some(mine) = ours.doc["paths"].get(path).and_then(|p| p.get(method)) else {
            if !LATER.iter().any(|(l, _)| *l == id) {
                problems.push(format!(
                    "{method} {path} ({id}) is neither served nor listed"
                ));
            }
            continue;
        };
        served += 1;
        if LATER.iter().any(|(l, _)| *l == id) {
            problems.push(format!("{id} is served: take it off LATER"));
        }
        if mine["operationId"] != op["operationId"] {
            problems.push(format!(
                "{method} {path}: operationId {}",
                mine["operationId"]
            ));
        }
        let req = ours.body(mine.get("requestBody").and_then(|b| b.get("content")));
        match (op["request"].as_str(), req.as_deref()) {
            (None, _) => {}
            (Some(t), Some(m)) if compatible(&ours, &reference, t, m) => {}
            (Some(t), m) => problems.push(format!("{id}: request body {m:?}, theirs {t}")),
        }
        for (status, theirs) in op["responses"].as_object().unwrap() {
            if !status.starts_with('2') && status != "101" {
                continue;
            }
            let Some(resp) = mine["responses"].get(status) else {
                problems.push(format!("{id}: no {status} response"));
                continue;
            };
            let m = ours.body(resp.get("content"));
            match (theirs.as_str(), m.as_deref()) {
                (None, None) => {}
                (Some(t), Some(m)) if compatible(&ours, &reference, t, m) => {}
                (t, m) => problems.push(format!("{id} {status}: body {m:?}, theirs {t:?}")),
            }
        }
    }

    // Schemas reached from request bodies: ours must accept each of their fields (if
    // only to refuse it by name) and require nothing more.
    let mut requests = BTreeSet::new();
    let mut todo: Vec<String> = reference["operations"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o["request"].as_str())
        .filter_map(|r| r.split_once(" ref:").map(|(_, n)| n.to_string()))
        .collect();
    while let Some(n) = todo.pop() {
        if requests.insert(n.clone()) {
            for p in reference["schemas"][&n]["properties"]
                .as_object()
                .unwrap()
                .values()
            {
                let t = p["type"].as_str().unwrap();
                let t = t.trim_start_matches("array<").trim_end_matches('>');
                if let Some(r) = t.strip_prefix("ref:") {
                    todo.push(r.to_string());
                }
            }
        }
    }

    let used = std::cell::RefCell::new(BTreeSet::new());
    let listed = |schema: &str, prop: &str| {
        let hit = DIFFERENT
            .iter()
            .position(|(s, p, _)| *s == schema && *p == prop);
        if let Some(i) = hit {
            used.borrow_mut().insert(i);
        }
        hit.is_some()
    };
    let mut compared = 0;
    for (name, theirs) in reference["schemas"].as_object().unwrap() {
        let Some(mine) = ours.schema(name) else {
            if !NO_SCHEMA.iter().any(|(n, _)| n == name) {
                problems.push(format!("schema {name} is missing and not listed"));
            }
            continue;
        };
        compared += 1;
        if let Some(values) = theirs.get("enum") {
            let strings = |v: &Value| -> BTreeSet<String> {
                v.as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            };
            let (want, have) = (strings(values), strings(&mine["enum"]));
            if want != have {
                problems.push(format!("{name}: enum {have:?}, theirs {want:?}"));
            }
        }
        let is_request = requests.contains(name);
        let required: BTreeSet<&str> = mine["required"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let props: BTreeMap<&str, &Value> = mine["properties"]
            .as_object()
            .map(|o| o.iter().map(|(k, v)| (k.as_str(), v)).collect())
            .unwrap_or_default();
        for (prop, t) in theirs["properties"].as_object().unwrap() {
            let Some(p) = props.get(prop.as_str()) else {
                if !listed(name, prop) {
                    problems.push(format!("{name}.{prop} is missing and not listed"));
                }
                continue;
            };
            let (mt, mnull) = sig(p);
            let tt = t["type"].as_str().unwrap();
            if !compatible(&ours, &reference, tt, &mt) && !listed(name, prop) {
                problems.push(format!("{name}.{prop}: {mt}, theirs {tt}"));
            }
            if !is_request && mnull && t["nullable"] == false && !listed(name, prop) {
                problems.push(format!("{name}.{prop} may be null here, never in theirs"));
            }
        }
        let theirs_required: BTreeSet<&str> = theirs["required"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        if is_request {
            for r in required.difference(&theirs_required) {
                problems.push(format!("{name}: requires {r}, theirs does not"));
            }
        } else {
            for r in theirs_required.difference(&required) {
                if !listed(name, r) {
                    problems.push(format!("{name}: {r} is required in theirs, not here"));
                }
            }
        }
    }

    for (schema, prop, _) in REFUSED {
        let p = &ours.doc["components"]["schemas"][schema]["properties"][prop];
        let constrained = ["minItems", "minLength", "pattern"]
            .iter()
            .any(|k| p.get(*k).is_some());
        if !constrained {
            problems.push(format!(
                "{schema}.{prop} is listed as refusing what BoxLite accepts, but our document shows no constraint"
            ));
        }
    }

    for (i, (s, p, _)) in DIFFERENT.iter().enumerate() {
        if !used.borrow().contains(&i) {
            problems.push(format!(
                "{s}.{p} is listed as different but matches: unlist it"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "differences from BoxLite's document:\n{}",
        problems.join("\n")
    );
    // The comparison compared something: most of their operations and schemas.
    assert!(served >= 22, "only {served} operations compared");
    assert!(compared >= 18, "only {compared} schemas compared");
}

#[test]
fn signatures_read_both_documents_alike() {
    let cases = [
        (serde_json::json!({"type": "string"}), ("string", false)),
        (
            serde_json::json!({"type": ["integer", "null"]}),
            ("integer", true),
        ),
        (
            serde_json::json!({"oneOf": [{"type": "null"}, {"$ref": "#/components/schemas/Box"}]}),
            ("ref:Box", true),
        ),
        (
            serde_json::json!({"type": "array", "items": {"$ref": "#/x/VolumeSpec"}}),
            ("array<ref:VolumeSpec>", false),
        ),
        (
            serde_json::json!({"type": "string", "nullable": true}),
            ("string", true),
        ),
    ];
    for (schema, (t, n)) in cases {
        assert_eq!(sig(&schema), (t.to_string(), n), "{schema}");
    }
}
