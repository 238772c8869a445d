//! The OpenAPI 3.1 document of the management API (feature `openapi`).
//!
//! The bodies' schemas are derived from the very types that [`super`]
//! serializes and parses; this module adds the operations (paths, status
//! codes, parameters), the `X-API-Key` security scheme, and the schemas of
//! the identifier types, whose limits come from the constants that check
//! them.

use std::borrow::Cow;

use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{InfoBuilder, OpenApi, Ref, RefOr};
use utoipa::{OpenApi as _, PartialSchema, ToSchema};

use super::{
    CreateKeyRequest, CreatedKey, ErrorBody, EventList, KeyList, MANAGE_SCOPE, Reply, RotateKeyRequest,
};
use crate::events::KeyEvent;
use crate::ident::{KEY_ID_LEN, KeyId, KeyName, MAX_NAME_CHARS, MAX_SCOPE_CHARS, MAX_SCOPES, Scope, Scopes};
use crate::record::KeyInfo;

/// The name of the `X-API-Key` security scheme among the document's
/// `components.securitySchemes`, and in its `security` requirement.
pub const SECURITY_SCHEME: &str = "api_key";

/// The management API as an OpenAPI 3.1 document: `GET/POST /api-keys`,
/// `GET /api-keys/events`, `DELETE /api-keys/{id}` and
/// `POST /api-keys/{id}/rotate`, their
/// request and reply bodies, every status code they answer with, and the
/// `X-API-Key` header as the security scheme.
///
/// `mounted_at` is where the application nests the adapters'
/// `management_routes` (`"/api/v1"` for
/// `Router::new().nest("/api/v1", management_routes::<_, ManagesKeys>())`),
/// prefixed to every path so that the document names the real URLs; `""`
/// for the root. A trailing `/` is ignored and a missing leading one added.
///
/// Serve it with the adapters' `openapi_json` route (see
/// [`openapi_reply`]), or merge it into the application's own document
/// (`utoipa`'s `OpenApi::merge`).
///
/// ```
/// let doc = teamkey_core::management::openapi("/api/v1");
/// assert_eq!(doc.info.title, "teamkey API key management");
/// assert!(doc.paths.paths.contains_key("/api/v1/api-keys/{id}/rotate"));
/// let json = doc.to_pretty_json()?;
/// assert!(json.contains(r#""openapi": "3.1.0""#));
/// # Ok::<(), serde_json::Error>(())
/// ```
pub fn openapi(mounted_at: &str) -> OpenApi {
    let mut doc = ManagementApi::openapi();
    // Set here, not by the derive, which would fill in the crate's
    // package metadata (authors, license) as the API's contact and licence.
    doc.info = InfoBuilder::new()
        .title("teamkey API key management")
        .version(env!("CARGO_PKG_VERSION"))
        .description(Some(DESCRIPTION))
        .build();
    doc.security = Some(vec![SecurityRequirement::new(
        SECURITY_SCHEME,
        Vec::<String>::new(),
    )]);
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        SECURITY_SCHEME,
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
            "X-API-Key",
            "A key of the team, with the `keys:manage` scope for these operations.",
        ))),
    );
    let base = base_path(mounted_at);
    if !base.is_empty() {
        let paths = std::mem::take(&mut doc.paths.paths);
        doc.paths.paths = paths
            .into_iter()
            .map(|(path, item)| (format!("{base}{path}"), item))
            .collect();
    }
    doc
}

/// `document` as the reply to `GET …/openapi.json`: 200 with the document
/// as pretty-printed JSON, and the headers of every management reply. Both
/// adapters' `openapi_json` routes send this, so they send the same bytes.
/// (500 if the document cannot be written as JSON, which a document made
/// by [`openapi`] always can.)
pub fn openapi_reply(document: &OpenApi) -> Reply {
    match document.to_pretty_json() {
        Ok(json) => Reply {
            status: 200,
            body: Some(json),
        },
        Err(e) => {
            tracing::error!(error = %e, "teamkey: the OpenAPI document could not be written as JSON");
            Reply {
                status: 500,
                body: Some(r#"{"error":"internal","message":"Internal server error."}"#.to_owned()),
            }
        }
    }
}

const DESCRIPTION: &str = "Create, list, rotate and revoke a team's API keys, and read the team's \
audit trail of key events. Every operation acts on the keys of the caller's team only, and needs a \
key with the `keys:manage` scope in `X-API-Key` (or the application's own sign-in). A key grants \
only what it holds: scopes it has, and keys that expire no later than itself. The team's plan may \
limit API access, scopes, the number of keys and their lifetime. Every reply carries \
`Cache-Control: no-store`. `POST` bodies must be `Content-Type: application/json`. Nothing is \
written when a request fails.";

/// `mounted_at` as a path prefix: `""`, or `/` and no trailing `/`.
fn base_path(mounted_at: &str) -> String {
    let trimmed = mounted_at.trim_end_matches('/');
    if trimmed.is_empty() || trimmed.starts_with('/') {
        trimmed.to_owned()
    } else {
        format!("/{trimmed}")
    }
}

#[derive(utoipa::OpenApi)]
#[openapi(
    paths(list, create, events, revoke, rotate),
    components(schemas(
        KeyInfo,
        KeyList,
        CreateKeyRequest,
        CreatedKey<'_>,
        RotateKeyRequest,
        KeyEvent,
        EventList,
        ErrorBody
    )),
    tags((name = "api-keys", description = "A team's API keys."))
)]
struct ManagementApi;

// The operations. Only their attributes matter: the handlers are the
// adapters', over `super::{list, create, events, revoke, rotate}`.
//
// Every operation's 403 includes the key guard's `plan_required` (a valid
// key of a team whose plan has no API access), and its 503 a team policy
// that cannot answer, as well as a store that cannot.

/// List the team's keys
///
/// Newest first, a page at a time: follow `next_cursor` until it is `null`.
/// Keys are shown by their masked preview only; revoked and retired keys
/// are not listed.
#[utoipa::path(
    get,
    path = "/api-keys",
    tag = "api-keys",
    operation_id = "listApiKeys",
    params(
        ("limit" = Option<u8>, Query, minimum = 1, maximum = 100,
            description = "Keys per page, 1 to 100; 50 when absent."),
        ("cursor" = Option<String>, Query,
            description = "The `next_cursor` of the page before."),
    ),
    responses(
        (status = 200, description = "One page of keys.", body = KeyList),
        (status = 400, description = "`limit` is not a whole number (`invalid_request`).", body = ErrorBody),
        (status = 401, description = "No valid key (`unauthorized`).", body = ErrorBody),
        (status = 403, description = "The key lacks `keys:manage` (`forbidden`, `required_scope`), or was rotated away and is in its grace period (`forbidden`, `refused: caller_retired`); or the team's plan has no API access (`plan_required`).", body = ErrorBody),
        (status = 422, description = "`limit` out of range, or a cursor that is not one (`invalid_request`).", body = ErrorBody),
        (status = 503, description = "The key store or the team policy is unavailable (`unavailable`); retry later.", body = ErrorBody),
    )
)]
#[allow(dead_code)]
fn list() {}

/// Create a key
///
/// The reply holds the full key: it is shown this once and cannot be
/// shown again. The key gets only scopes the caller holds, and expires no
/// later than the caller.
#[utoipa::path(
    post,
    path = "/api-keys",
    tag = "api-keys",
    operation_id = "createApiKey",
    request_body(content = CreateKeyRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Created: the full key, shown once, and its row.", body = CreatedKey<'_>),
        (status = 400, description = "The body is not JSON (`invalid_request`).", body = ErrorBody),
        (status = 401, description = "No valid key (`unauthorized`).", body = ErrorBody),
        (status = 403, description = "The key lacks `keys:manage` (`required_scope`), or asks for scopes it does not hold (`refused_scopes`) or a key that would outlive it (`refused: expires_at`), or was rotated away (`refused: caller_retired`) (`forbidden`); or the team's plan has no API access (`plan_required`) or does not grant the scopes (`scopes_not_in_plan`, `refused_scopes`) or allows no looser rate limit than its own (`rate_limit_not_in_plan`).", body = ErrorBody),
        (status = 415, description = "Not `Content-Type: application/json` (`unsupported_media_type`).", body = ErrorBody),
        (status = 422, description = "An invalid name, scope or expiry, or no expiry or one too far where the team's plan requires one (`invalid_request`); or the team's active-key limit, or its plan's, reached (`too_many_keys`).", body = ErrorBody),
        (status = 503, description = "The key store or the team policy is unavailable (`unavailable`); retry later.", body = ErrorBody),
    )
)]
#[allow(dead_code)]
fn create() {}

/// List the team's key events
///
/// The team's audit trail, newest first, a page at a time: follow
/// `next_cursor` until it is `null`. Each event names what happened
/// (`key.created`, `key.rotated`, `key.revoked`, `key.expired`,
/// `key.expiring`), the key (by id, name and masked preview, never the
/// key), who did it, and the request it came from.
#[utoipa::path(
    get,
    path = "/api-keys/events",
    tag = "api-keys",
    operation_id = "listApiKeyEvents",
    params(
        ("limit" = Option<u8>, Query, minimum = 1, maximum = 100,
            description = "Events per page, 1 to 100; 50 when absent."),
        ("cursor" = Option<String>, Query,
            description = "The `next_cursor` of the page before."),
    ),
    responses(
        (status = 200, description = "One page of events.", body = EventList),
        (status = 400, description = "`limit` is not a whole number (`invalid_request`).", body = ErrorBody),
        (status = 401, description = "No valid key (`unauthorized`).", body = ErrorBody),
        (status = 403, description = "The key lacks `keys:manage` (`forbidden`, `required_scope`), or was rotated away and is in its grace period (`forbidden`, `refused: caller_retired`); or the team's plan has no API access (`plan_required`).", body = ErrorBody),
        (status = 422, description = "`limit` out of range, or a cursor that is not one (`invalid_request`).", body = ErrorBody),
        (status = 501, description = "The server's key store keeps no events (`not_implemented`).", body = ErrorBody),
        (status = 503, description = "The key store or the team policy is unavailable (`unavailable`); retry later.", body = ErrorBody),
    )
)]
#[allow(dead_code)]
fn events() {}

/// Revoke a key
///
/// At once: the key is refused from the next request on.
#[utoipa::path(
    delete,
    path = "/api-keys/{id}",
    tag = "api-keys",
    operation_id = "revokeApiKey",
    params(("id" = KeyId, Path, description = "The key's public id.")),
    responses(
        (status = 204, description = "Revoked."),
        (status = 401, description = "No valid key (`unauthorized`).", body = ErrorBody),
        (status = 403, description = "The key lacks `keys:manage` (`required_scope`), or the key to revoke has scopes it lacks (`refused_scopes`) or outlives it (`refused: expires_at`), or it was rotated away (`refused: caller_retired`) (`forbidden`); or the team's plan has no API access (`plan_required`).", body = ErrorBody),
        (status = 404, description = "No such active key in the caller's team (`not_found`).", body = ErrorBody),
        (status = 503, description = "The key store or the team policy is unavailable (`unavailable`); retry later.", body = ErrorBody),
    )
)]
#[allow(dead_code)]
fn revoke() {}

/// Rotate a key
///
/// Makes its successor, with the same name, scopes and expiry, and
/// retires the old key at once or after `grace_seconds`. The reply holds
/// the successor's full key, shown this once.
#[utoipa::path(
    post,
    path = "/api-keys/{id}/rotate",
    tag = "api-keys",
    operation_id = "rotateApiKey",
    params(("id" = KeyId, Path, description = "The public id of the key to rotate.")),
    request_body(content = RotateKeyRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "The successor: its full key, shown once, and its row.", body = CreatedKey<'_>),
        (status = 400, description = "The body is not JSON (`invalid_request`).", body = ErrorBody),
        (status = 401, description = "No valid key (`unauthorized`).", body = ErrorBody),
        (status = 403, description = "The key lacks `keys:manage` (`required_scope`), or the key to rotate has scopes it lacks (`refused_scopes`) or outlives it (`refused: expires_at`), or it was rotated away (`refused: caller_retired`) (`forbidden`); or the team's plan has no API access (`plan_required`).", body = ErrorBody),
        (status = 404, description = "No such active key in the caller's team (`not_found`).", body = ErrorBody),
        (status = 409, description = "The key was already rotated; rotate its successor (`already_rotated`).", body = ErrorBody),
        (status = 415, description = "Not `Content-Type: application/json` (`unsupported_media_type`).", body = ErrorBody),
        (status = 422, description = "A grace period too long (`invalid_request`), or no room for the old key during it (`too_many_keys`).", body = ErrorBody),
        (status = 503, description = "The key store or the team policy is unavailable (`unavailable`); retry later.", body = ErrorBody),
    )
)]
#[allow(dead_code)]
fn rotate() {}

// The identifier types: strings with the limits their constructors check.

fn string_schema(description: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
}

impl PartialSchema for KeyId {
    fn schema() -> RefOr<Schema> {
        string_schema("A key's public id: random base62, safe to log and to show.")
            .min_length(Some(KEY_ID_LEN))
            .max_length(Some(KEY_ID_LEN))
            .pattern(Some(format!("^[A-Za-z0-9]{{{KEY_ID_LEN}}}$")))
            .into()
    }
}

impl ToSchema for KeyId {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("KeyId")
    }
}

impl PartialSchema for KeyName {
    fn schema() -> RefOr<Schema> {
        string_schema(&format!(
            "A key's name, such as `CI/CD Pipeline`: trimmed, then 1 to {MAX_NAME_CHARS} characters, \
             none of them control or invisible formatting characters."
        ))
        .min_length(Some(1))
        .max_length(Some(MAX_NAME_CHARS))
        .into()
    }
}

impl ToSchema for KeyName {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("KeyName")
    }
}

impl PartialSchema for Scope {
    fn schema() -> RefOr<Schema> {
        string_schema(&format!(
            "A permission, such as `scans:read`; `{MANAGE_SCOPE}` lets a key manage its team's keys."
        ))
        .min_length(Some(1))
        .max_length(Some(MAX_SCOPE_CHARS))
        .pattern(Some(format!("^[A-Za-z0-9:._-]{{1,{MAX_SCOPE_CHARS}}}$")))
        .into()
    }
}

impl ToSchema for Scope {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Scope")
    }
}

impl PartialSchema for Scopes {
    fn schema() -> RefOr<Schema> {
        ArrayBuilder::new()
            .items(Ref::from_schema_name(Scope::name()))
            .max_items(Some(MAX_SCOPES))
            .unique_items(true)
            .description(Some(format!(
                "A key's scopes: at most {MAX_SCOPES}, in the order given."
            )))
            .into()
    }
}

impl ToSchema for Scopes {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Scopes")
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((Scope::name().into_owned(), Scope::schema()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::presented::HeaderRules;

    #[test]
    fn the_security_scheme_is_the_default_key_header() {
        let doc = serde_json::to_value(openapi("")).unwrap();
        let scheme = &doc["components"]["securitySchemes"][SECURITY_SCHEME];
        assert_eq!(
            (&scheme["type"], &scheme["in"]),
            (&"apiKey".into(), &"header".into())
        );
        let name = scheme["name"].as_str().unwrap_or_default();
        assert_eq!(name.to_ascii_lowercase(), HeaderRules::DEFAULT_HEADER);
    }

    #[test]
    fn the_mount_point_prefixes_every_path() {
        for mounted_at in ["/api/v1", "/api/v1/", "api/v1"] {
            let paths: Vec<String> = openapi(mounted_at).paths.paths.into_keys().collect();
            assert_eq!(
                paths,
                [
                    "/api/v1/api-keys",
                    "/api/v1/api-keys/events",
                    "/api/v1/api-keys/{id}",
                    "/api/v1/api-keys/{id}/rotate"
                ],
                "{mounted_at}"
            );
        }
        for root in ["", "/"] {
            let paths: Vec<String> = openapi(root).paths.paths.into_keys().collect();
            assert_eq!(
                paths,
                [
                    "/api-keys",
                    "/api-keys/events",
                    "/api-keys/{id}",
                    "/api-keys/{id}/rotate"
                ]
            );
        }
    }

    #[test]
    fn the_events_operation_lists_every_status_and_its_schemas() {
        let doc = serde_json::to_value(openapi("")).unwrap();
        let operation = &doc["paths"]["/api-keys/events"]["get"];
        assert_eq!(operation["operationId"], "listApiKeyEvents");
        let codes: Vec<&String> = operation["responses"].as_object().unwrap().keys().collect();
        assert_eq!(codes, ["200", "400", "401", "403", "422", "501", "503"]);
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for name in ["EventList", "KeyEvent", "EventKind", "Actor", "RequestContext"] {
            assert!(schemas.contains_key(name), "schema {name}");
        }
        // Every reference resolves: no schema is named but left out.
        let text = doc.to_string();
        for reference in text.split("\"#/components/schemas/").skip(1) {
            let name = reference.split('"').next().unwrap_or_default();
            assert!(schemas.contains_key(name), "dangling reference to {name}");
        }
    }
}
