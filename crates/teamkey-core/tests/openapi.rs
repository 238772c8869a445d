//! The management API's OpenAPI document, committed as `docs/openapi.json`
//! (mounted at the root), must be the one the code makes: a change to a
//! body, a status code or a limit shows up in review as a change to that
//! file. After a deliberate change, write the new one with
//! `TEAMKEY_BLESS=1 cargo test -p teamkey-core --features openapi --test openapi`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::path::PathBuf;

fn committed() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json")
}

#[test]
fn docs_openapi_json_is_the_document_the_code_makes() {
    let made = teamkey_core::management::openapi("").to_pretty_json().unwrap() + "\n";
    let path = committed();
    if std::env::var_os("TEAMKEY_BLESS").is_some() {
        std::fs::write(&path, &made).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; write it with TEAMKEY_BLESS=1", path.display()));
    if committed != made {
        let line = committed
            .lines()
            .zip(made.lines())
            .position(|(a, b)| a != b)
            .map_or(committed.lines().count().min(made.lines().count()), |i| i);
        panic!(
            "docs/openapi.json differs from management::openapi(\"\") from line {}:\n  committed: {:?}\n  made:      {:?}\n\
             If the change is meant, write the new document with \
             TEAMKEY_BLESS=1 cargo test -p teamkey-core --features openapi --test openapi",
            line + 1,
            committed.lines().nth(line),
            made.lines().nth(line),
        );
    }
}

#[test]
fn the_document_is_openapi_3_1_with_every_operation_and_status() {
    let doc: serde_json::Value = serde_json::to_value(teamkey_core::management::openapi("/api/v1")).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let codes = |path: &str, method: &str| -> Vec<String> {
        let responses = doc["paths"][path][method]["responses"]
            .as_object()
            .unwrap_or_else(|| panic!("no {method} {path}"));
        responses.keys().cloned().collect()
    };
    assert_eq!(
        codes("/api/v1/api-keys", "get"),
        ["200", "400", "401", "403", "422", "503"]
    );
    assert_eq!(
        codes("/api/v1/api-keys", "post"),
        ["201", "400", "401", "403", "415", "422", "503"]
    );
    assert_eq!(
        codes("/api/v1/api-keys/{id}", "delete"),
        ["204", "401", "403", "404", "503"]
    );
    assert_eq!(
        codes("/api/v1/api-keys/{id}/rotate", "post"),
        ["201", "400", "401", "403", "404", "409", "415", "422", "503"]
    );
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["api_key"]["type"], "apiKey");
    assert_eq!(schemes["api_key"]["in"], "header");
    assert_eq!(schemes["api_key"]["name"], "X-API-Key");
    assert_eq!(doc["security"], serde_json::json!([{ "api_key": [] }]));
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for name in [
        "KeyInfo",
        "KeyList",
        "CreateKeyRequest",
        "CreatedKey",
        "RotateKeyRequest",
        "ErrorBody",
        "KeyId",
        "KeyName",
        "Scope",
        "Scopes",
    ] {
        assert!(schemas.contains_key(name), "schema {name}");
    }
}
