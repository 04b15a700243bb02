//! A small JSON Schema (draft 2020-12) checker for the schemas under
//! docs/schemas/: `type` (one or a list), `enum`, `const`, `properties`,
//! `required`, `additionalProperties: false`, `items`, `minimum`,
//! `maximum`, `anyOf`, `oneOf` and local `$ref`s (`#/$defs/NAME`).
//! Any other keyword is refused, so a schema never promises a check this
//! code does not make. (The schemas were also checked once with Python's
//! `jsonschema` against the same outputs; see docs/json.md.)

use serde_json::Value;

const ANNOTATIONS: &[&str] = &["$schema", "$id", "title", "description", "$defs"];
const KEYWORDS: &[&str] = &[
    "type",
    "enum",
    "const",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "minimum",
    "maximum",
    "anyOf",
    "oneOf",
    "$ref",
];

/// Every problem of `value` against `schema` (empty: valid).
pub fn validate(schema: &Value, value: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    check(schema, schema, value, "$", &mut errors);
    errors
}

fn type_ok(t: &str, v: &Value) -> bool {
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        other => panic!("unknown type {other} in schema"),
    }
}

fn resolve<'a>(root: &'a Value, r: &str) -> &'a Value {
    let name = r
        .strip_prefix("#/$defs/")
        .unwrap_or_else(|| panic!("only local #/$defs/ references: {r}"));
    root.pointer(&format!("/$defs/{name}"))
        .unwrap_or_else(|| panic!("no definition {name}"))
}

fn check(root: &Value, schema: &Value, v: &Value, at: &str, errors: &mut Vec<String>) {
    let Some(s) = schema.as_object() else {
        panic!("a schema is an object: {schema}");
    };
    for k in s.keys() {
        assert!(
            KEYWORDS.contains(&k.as_str()) || ANNOTATIONS.contains(&k.as_str()),
            "schema keyword `{k}` is not checked by this validator"
        );
    }
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        check(root, resolve(root, r), v, at, errors);
    }
    if let Some(t) = s.get("type") {
        let ok = match t {
            Value::String(t) => type_ok(t, v),
            Value::Array(ts) => ts.iter().any(|t| type_ok(t.as_str().unwrap(), v)),
            _ => panic!("bad type {t}"),
        };
        if !ok {
            errors.push(format!("{at}: {v} is not of type {t}"));
            return;
        }
    }
    if let Some(e) = s.get("enum").and_then(Value::as_array) {
        if !e.contains(v) {
            errors.push(format!(
                "{at}: {v} is not one of {}",
                Value::Array(e.clone())
            ));
        }
    }
    if let Some(c) = s.get("const") {
        if c != v {
            errors.push(format!("{at}: {v} is not {c}"));
        }
    }
    if let Some(n) = v.as_f64() {
        if let Some(min) = s.get("minimum").and_then(Value::as_f64) {
            if n < min {
                errors.push(format!("{at}: {n} < minimum {min}"));
            }
        }
        if let Some(max) = s.get("maximum").and_then(Value::as_f64) {
            if n > max {
                errors.push(format!("{at}: {n} > maximum {max}"));
            }
        }
    }
    if let Some(obj) = v.as_object() {
        object(root, s, obj, at, errors);
    }
    if let (Some(items), Some(arr)) = (s.get("items"), v.as_array()) {
        for (i, x) in arr.iter().enumerate() {
            check(root, items, x, &format!("{at}[{i}]"), errors);
        }
    }
    if let Some(any) = s.get("anyOf").and_then(Value::as_array) {
        if !any.iter().any(|sub| validate_in(root, sub, v).is_empty()) {
            errors.push(format!("{at}: matches none of anyOf"));
        }
    }
    if let Some(one) = s.get("oneOf").and_then(Value::as_array) {
        let results: Vec<Vec<String>> = one.iter().map(|sub| validate_in(root, sub, v)).collect();
        let matching = results.iter().filter(|r| r.is_empty()).count();
        if matching != 1 {
            errors.push(format!(
                "{at}: matches {matching} of oneOf (want 1): {results:?}"
            ));
        }
    }
}

fn object(
    root: &Value,
    s: &serde_json::Map<String, Value>,
    obj: &serde_json::Map<String, Value>,
    at: &str,
    errors: &mut Vec<String>,
) {
    let props = s.get("properties").and_then(Value::as_object);
    for r in s
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let r = r.as_str().unwrap();
        if !obj.contains_key(r) {
            errors.push(format!("{at}: missing required `{r}`"));
        }
    }
    for (k, x) in obj {
        match props.and_then(|p| p.get(k)) {
            Some(sub) => check(root, sub, x, &format!("{at}.{k}"), errors),
            None if s.get("additionalProperties") == Some(&Value::Bool(false)) => {
                errors.push(format!("{at}: unexpected property `{k}`"))
            }
            None => {}
        }
    }
}

fn validate_in(root: &Value, schema: &Value, v: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    check(root, schema, v, "$", &mut errors);
    errors
}

#[allow(dead_code)]
/// The schema file `docs/schemas/NAME.json`.
pub fn load(name: &str) -> Value {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../docs/schemas")
        .join(format!("{name}.json"));
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[allow(dead_code)]
/// Panics with every problem when `value` does not match schema `name`.
pub fn assert_valid(name: &str, value: &Value) {
    let errors = validate(&load(name), value);
    assert!(
        errors.is_empty(),
        "output does not match docs/schemas/{name}.json:\n{}\n{}",
        errors.join("\n"),
        serde_json::to_string_pretty(value).unwrap()
    );
}
