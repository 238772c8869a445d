//! The key-management HTTP API, framework-free: request bytes in, a status
//! and a JSON body out. Adapters route `GET/POST /api-keys`,
//! `DELETE /api-keys/{id}` and `POST /api-keys/{id}/rotate` here, for the
//! team of the caller's [`KeyAdmin`], so every adapter speaks the same JSON
//! and applies the same rules.
//!
//! - list: `?limit=N&cursor=C` -> 200 `{"data": [KeyInfo, ...], "next_cursor": C|null}`,
//!   newest first, `limit` 1 to 100 (default 50);
//! - create: `{"name", "scopes"?, "expires_at"? | "expires_in"?}` -> 201
//!   `{"key", ...KeyInfo}`; `expires_at` is RFC 3339 (any offset, kept in
//!   UTC), `expires_in` seconds;
//! - revoke: 204; rotate: `{"grace_seconds"?}` (`{}` for none) -> 201 like create;
//! - events (`GET /api-keys/events`): `?limit=N&cursor=C` -> 200
//!   `{"data": [KeyEvent, ...], "next_cursor": C|null}`, newest first: the
//!   team's audit trail (501 from a store that keeps none);
//! - `POST` bodies must be `Content-Type: application/json` (else 415), so
//!   that a cross-site HTML form cannot send one;
//! - errors: `{"error": code, "message": text}`: 400 malformed JSON or
//!   query, 403 beyond the caller's authority (see [`Authority`]) or the
//!   team's plan (`plan_required`, `scopes_not_in_plan`,
//!   `rate_limit_not_in_plan`), 404
//!   unknown id or another team's key, 409 already rotated, 415 not JSON,
//!   422 invalid input or a limit reached, 503 store or policy down. Nothing is
//!   written on any error.
//!
//! Every reply carries `Cache-Control: no-store`: a create or rotate reply
//! holds a full key, and no cache may keep any of them.
//!
//! With the `openapi` feature, `openapi(mounted_at)` describes all of this
//! as an OpenAPI 3.1 document, its schemas derived from the types that
//! serialize these bodies (`docs/openapi.json` in the repository is the
//! document for routes mounted at the root).

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::authority::{Authority, Refusal};
use crate::error::{ManageError, StoreError, ValidationError};
use crate::events::{Actor, EventId, EventQuery, KeyEvent, Origin, RequestContext};
use crate::ident::{KeyId, Scope, Scopes, TeamId};
use crate::manager::{CreateOptions, KeyManager, NewKey};
use crate::page::{Cursor, DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT, PageRequest};
use crate::record::KeyInfo;

#[cfg(feature = "openapi")]
mod openapi;
#[cfg(feature = "openapi")]
#[cfg_attr(docsrs, doc(cfg(feature = "openapi")))]
pub use openapi::{SECURITY_SCHEME, openapi, openapi_reply};

/// The scope that lets a key manage its own team's keys.
pub const MANAGE_SCOPE: &str = "keys:manage";

/// Whoever may manage a team's keys, as the application decides: a key
/// with `keys:manage` (the adapters' `ManagesKeys`), or the app's own
/// signed-in user. The management API acts on [`KeyAdmin::team_id`]'s keys
/// only, within [`KeyAdmin::authority`].
///
/// For a dashboard session whose user administers the whole team:
///
/// ```
/// use teamkey_core::events::Actor;
/// use teamkey_core::management::KeyAdmin;
/// use teamkey_core::{Authority, TeamId};
///
/// struct TeamOwner {
///     team: TeamId,
///     email: String,
/// }
///
/// impl KeyAdmin for TeamOwner {
///     fn team_id(&self) -> &TeamId {
///         &self.team
///     }
///     // A signed-in owner may grant every scope of the team.
///     fn authority(&self) -> Authority {
///         Authority::whole_team()
///     }
///     // Named in the audit events of the changes they make.
///     fn actor(&self) -> Actor {
///         Actor::user(&self.email)
///     }
/// }
/// ```
pub trait KeyAdmin {
    /// The team whose keys the caller manages.
    fn team_id(&self) -> &TeamId;

    /// What the caller may grant, rotate and revoke. An API key gets
    /// [`Authority::of_key`] (only what it holds); a signed-in team
    /// administrator may get [`Authority::whole_team`].
    fn authority(&self) -> Authority;

    /// Who the caller is, for the audit events of its changes: the key
    /// ([`Actor::Key`]) or the app's user ([`Actor::user`]).
    fn actor(&self) -> Actor;

    /// The request the call came from (request id, client IP, user
    /// agent), for the audit events. Adapters fill it in; the default
    /// knows nothing.
    fn context(&self) -> RequestContext {
        RequestContext::default()
    }
}

/// `admin`, with what an adapter knows of the request it came in: the
/// admin's own [`KeyAdmin::context`] wins, field by field, and `request`
/// fills in the rest. What the adapters' `management_routes` hand to this
/// API.
pub fn in_request<A: KeyAdmin + ?Sized>(admin: &A, request: RequestContext) -> impl KeyAdmin + '_ {
    InRequest { admin, request }
}

struct InRequest<'a, A: ?Sized> {
    admin: &'a A,
    request: RequestContext,
}

impl<A: KeyAdmin + ?Sized> KeyAdmin for InRequest<'_, A> {
    fn team_id(&self) -> &TeamId {
        self.admin.team_id()
    }

    fn authority(&self) -> Authority {
        self.admin.authority()
    }

    fn actor(&self) -> Actor {
        self.admin.actor()
    }

    fn context(&self) -> RequestContext {
        let mut context = self.admin.context();
        let request = &self.request;
        context.request_id = context.request_id.or_else(|| request.request_id.clone());
        context.client_ip = context.client_ip.or(request.client_ip);
        context.user_agent = context.user_agent.or_else(|| request.user_agent.clone());
        context
    }
}

/// Who acts, for [`KeyManager::on_behalf_of`].
fn origin<A: KeyAdmin + ?Sized>(admin: &A) -> Origin {
    Origin::new(admin.actor()).context(admin.context())
}

/// Headers every management reply carries, besides `Content-Type:
/// application/json` on replies with a body.
pub const REPLY_HEADERS: &[(&str, &str)] = &[("cache-control", "no-store")];

/// An answer: a status and, except for 204, a JSON body; headers are
/// [`REPLY_HEADERS`]. A `create` or `rotate` body holds the new full key,
/// so `Debug` shows only its length.
#[derive(Clone, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status code.
    pub status: u16,
    /// JSON body, `None` for 204.
    pub body: Option<String>,
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reply")
            .field("status", &self.status)
            .field("body_len", &self.body.as_ref().map(String::len))
            .finish()
    }
}

impl Reply {
    fn json(status: u16, body: &impl Serialize) -> Self {
        match serde_json::to_string(body) {
            Ok(body) => Self {
                status,
                body: Some(body),
            },
            Err(_) => Self {
                status: 500,
                body: Some(r#"{"error":"internal","message":"The answer could not be written."}"#.to_owned()),
            },
        }
    }

    fn error(status: u16, code: &str, message: &str) -> Self {
        Self::json(status, &ErrorBody::new(code, message))
    }

    fn not_found() -> Self {
        Self::error(404, "not_found", "No such API key.")
    }

    /// The headers to send with this reply, besides the content type.
    pub fn headers(&self) -> &'static [(&'static str, &'static str)] {
        REPLY_HEADERS
    }
}

// The bodies. Each is one Rust type, serialized (or parsed) here and, with
// the `openapi` feature, described in the OpenAPI document from the same
// definition, so the document cannot drift from what is sent.

// Fields in alphabetical order: the order they have always been sent in.
/// The body of every error and refusal, of this API and of the key guards
/// (their 401, 403 and 503): `error` and `message` always, the other
/// fields only where they say.
#[derive(Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
struct ErrorBody {
    /// A stable code to branch on: `invalid_request` (400, 422),
    /// `unauthorized` (401), `forbidden` (403), `plan_required` (403: the
    /// team's plan has no API access), `scopes_not_in_plan` (403),
    /// `rate_limit_not_in_plan` (403),
    /// `not_found` (404), `already_rotated` (409),
    /// `unsupported_media_type` (415), `too_many_keys` (422),
    /// `not_implemented` (501), `unavailable` (503), `internal` (500).
    error: String,
    /// 403 `refused: expires_at`: the latest expiry the caller may grant
    /// (its own), RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(format = DateTime, nullable = false))]
    latest_expires_at: Option<String>,
    /// 422 `too_many_keys`: the most active keys a team may have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    max_active_keys: Option<usize>,
    /// For people: what went wrong and what to do.
    message: String,
    /// 403: what was refused other than scopes: `expires_at` (the key
    /// would outlive the caller), `rate_limit` (the key would be limited
    /// more loosely than the caller) or `caller_retired` (the caller was
    /// rotated away and manages, and reads, nothing in its grace period).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    refused: Option<String>,
    /// 403: the scopes the caller may not grant, or that the key to rotate
    /// or revoke has and the caller lacks, or that the plan does not grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Vec<Scope>>, nullable = false))]
    refused_scopes: Option<Vec<String>>,
    /// 403 `forbidden` from a scope guard: the scope the key lacks
    /// (`keys:manage` for this API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Scope>, nullable = false))]
    required_scope: Option<String>,
}

impl ErrorBody {
    fn new(code: &str, message: &str) -> Self {
        Self {
            error: code.to_owned(),
            message: message.to_owned(),
            ..Self::default()
        }
    }
}

/// `GET /api-keys`: one page of the team's keys.
#[derive(Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
struct KeyList {
    /// The keys, newest first.
    data: Vec<KeyInfo>,
    /// Send it back as `?cursor=` for the next page; `null` on the last.
    next_cursor: Option<String>,
}

/// `GET /api-keys/events`: one page of the team's audit events.
#[derive(Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
struct EventList {
    /// The events, newest first.
    data: Vec<KeyEvent>,
    /// Send it back as `?cursor=` for the next page; `null` on the last.
    next_cursor: Option<String>,
}

/// `POST /api-keys`: the key to make. At most one of `expires_at` and
/// `expires_in`; neither for a key that does not expire.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
struct CreateKeyRequest {
    /// What the key is for, shown in the key table: trimmed, then 1 to 100
    /// characters, none of them control or invisible formatting characters.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::ident::KeyName))]
    name: String,
    /// Its permissions (duplicates are dropped). A key grants only the
    /// scopes it holds itself.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Scope>))]
    scopes: Vec<String>,
    /// When it stops working, RFC 3339 with any offset (kept in UTC); at
    /// most 10 years ahead by default.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    expires_at: Option<OffsetDateTime>,
    /// Or: how many seconds from now it stops working.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    expires_in: Option<u64>,
    /// Its own rate limit; without one, the team's default applies.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::rate_limit::RateLimitFields>))]
    rate_limit: Option<crate::RateLimit>,
}

/// `POST /api-keys/{id}/rotate`: `{}` for no grace period.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
struct RotateKeyRequest {
    /// How long the old key keeps working, in seconds: 0 (the default)
    /// retires it at once; at most 7 days by default.
    #[serde(default)]
    grace_seconds: u64,
}

/// `201` for create and rotate: the new key's row, and the full key,
/// shown this once and never again.
#[derive(Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
struct CreatedKey<'a> {
    /// The full key, to send in `X-API-Key`. It is not stored and cannot
    /// be shown again.
    key: &'a str,
    #[serde(flatten)]
    #[cfg_attr(feature = "openapi", schema(value_type = KeyInfo))]
    info: &'a KeyInfo,
}

fn scope_names(scopes: &[Scope]) -> Vec<String> {
    scopes.iter().map(|s| s.as_str().to_owned()).collect()
}

impl From<Refusal> for Reply {
    fn from(refusal: Refusal) -> Self {
        let mut body = ErrorBody::new("forbidden", &refusal.to_string());
        match &refusal {
            Refusal::ScopesNotHeld { scopes } | Refusal::KeyBroaderThanCaller { scopes } => {
                body.refused_scopes = Some(scope_names(scopes));
            }
            Refusal::OutlivesCaller { caller_expires_at }
            | Refusal::KeyOutlivesCaller { caller_expires_at } => {
                body.refused = Some("expires_at".to_owned());
                body.latest_expires_at = caller_expires_at
                    .format(&time::format_description::well_known::Rfc3339)
                    .ok();
            }
            Refusal::CallerRetired => body.refused = Some("caller_retired".to_owned()),
            Refusal::LooserRateLimit { .. } => body.refused = Some("rate_limit".to_owned()),
        }
        Self::json(403, &body)
    }
}

impl From<ManageError> for Reply {
    fn from(error: ManageError) -> Self {
        match error {
            ManageError::Invalid(e) => Self::error(422, "invalid_request", &e.to_string()),
            ManageError::NotFound => Self::not_found(),
            ManageError::AlreadyRotated => Self::error(
                409,
                "already_rotated",
                "This key was already rotated; rotate its successor.",
            ),
            ManageError::Forbidden(refusal) => refusal.into(),
            ManageError::TooManyKeys { max } => Self::json(
                422,
                &ErrorBody {
                    max_active_keys: Some(max),
                    ..ErrorBody::new(
                        "too_many_keys",
                        &format!("A team may have at most {max} active keys; revoke one first."),
                    )
                },
            ),
            ManageError::NoApiAccess => Self::error(
                403,
                "plan_required",
                "Your team's plan does not include API access. Upgrade the plan to create API keys.",
            ),
            ManageError::ScopesNotInPlan { scopes } => Self::json(
                403,
                &ErrorBody {
                    refused_scopes: Some(scope_names(&scopes)),
                    ..ErrorBody::new(
                        "scopes_not_in_plan",
                        "Your team's plan does not grant these scopes.",
                    )
                },
            ),
            ManageError::RateLimitNotInPlan { plan_limit } => Self::error(
                403,
                "rate_limit_not_in_plan",
                &format!(
                    "Your team's plan allows a key at most {} requests per {} seconds.",
                    plan_limit.requests(),
                    plan_limit.window_seconds()
                ),
            ),
            ManageError::Store(StoreError::Unsupported(what)) => Self::error(
                501,
                "not_implemented",
                &format!("This server's key store does not support {what}."),
            ),
            _ => Self::error(
                503,
                "unavailable",
                "API keys cannot be managed right now; retry later.",
            ),
        }
    }
}

impl From<ValidationError> for Reply {
    fn from(error: ValidationError) -> Self {
        ManageError::from(error).into()
    }
}

/// Whether a `Content-Type` header names JSON (`application/json`, any
/// parameters, any case).
fn is_json(content_type: Option<&[u8]>) -> bool {
    content_type.is_some_and(|value| {
        let essence = value.split(|&b| b == b';').next().unwrap_or_default();
        essence.trim_ascii().eq_ignore_ascii_case(b"application/json")
    })
}

/// The JSON body of a mutating request: 415 unless it is declared JSON,
/// 400 if malformed, 422 if well-formed but wrong.
fn parse<T: for<'de> Deserialize<'de>>(content_type: Option<&[u8]>, body: &[u8]) -> Result<T, Reply> {
    if !is_json(content_type) {
        return Err(Reply::error(
            415,
            "unsupported_media_type",
            "Send the request body as Content-Type: application/json.",
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        let status = if e.classify() == serde_json::error::Category::Data {
            422
        } else {
            400
        };
        Reply::error(status, "invalid_request", &format!("Invalid JSON body: {e}"))
    })
}

/// Anything that is not a key id is simply not found.
fn key_id(id: &str) -> Result<KeyId, Reply> {
    KeyId::parse(id).map_err(|_| Reply::not_found())
}

fn created(new: &NewKey) -> Reply {
    Reply::json(
        201,
        &CreatedKey {
            key: new.key.expose_secret(),
            info: &new.info,
        },
    )
}

fn settle(result: Result<Reply, Reply>) -> Reply {
    result.unwrap_or_else(|reply| reply)
}

/// Logs a refused or failed management call, with the team and the key
/// id concerned (never a key): an escalation attempt (403) at `info`, a
/// store failure (5xx) at `warn`. Returns the reply.
fn logged(reply: Reply, action: &'static str, team_id: &TeamId, key_id: Option<&str>) -> Reply {
    match reply.status {
        403 => tracing::info!(
            action,
            team_id = %team_id,
            key_id,
            body = reply.body.as_deref(),
            "API key management refused"
        ),
        500.. => {
            tracing::warn!(action, team_id = %team_id, key_id, status = reply.status, "API key management failed")
        }
        _ => {}
    }
    reply
}

/// The caller's active key `id`, if the caller may rotate or revoke it.
async fn managed_key<A: KeyAdmin + ?Sized>(
    keys: &KeyManager,
    admin: &A,
    id: &KeyId,
) -> Result<KeyInfo, Reply> {
    let key = keys
        .find(admin.team_id(), id)
        .await
        .map_err(Reply::from)?
        .ok_or_else(Reply::not_found)?;
    admin.authority().check_manage(&key.scopes, key.expires_at)?;
    Ok(key)
}

/// `GET /api-keys?limit=N&cursor=C`; `query` is the raw query string.
pub async fn list<A: KeyAdmin + ?Sized>(keys: &KeyManager, admin: &A, query: &str) -> Reply {
    let reply = list_reply(keys, admin, query).await;
    logged(reply, "list", admin.team_id(), None)
}

/// `?limit=N&cursor=C`, the query of every paged route.
#[derive(Deserialize)]
struct PageParams {
    limit: Option<usize>,
    cursor: Option<String>,
}

impl PageParams {
    /// The raw query string, or a 400 naming what the query may hold.
    fn parse(query: &str) -> Result<Self, Reply> {
        serde_urlencoded::from_str(query).map_err(|_| {
            Reply::error(
                400,
                "invalid_request",
                "Invalid query: limit must be a whole number, cursor a value from next_cursor.",
            )
        })
    }
}

async fn list_reply<A: KeyAdmin + ?Sized>(keys: &KeyManager, admin: &A, query: &str) -> Reply {
    settle(
        async {
            // Like events: a key rotated away reads nothing in its grace period.
            admin.authority().check_read()?;
            let params = PageParams::parse(query)?;
            let mut page = match params.limit {
                Some(limit) => PageRequest::first(limit)?,
                None => PageRequest::default(),
            };
            if let Some(cursor) = params.cursor {
                page = page.after(cursor.parse::<Cursor>()?);
            }
            let page = keys.list_page(admin.team_id(), page).await.map_err(Reply::from)?;
            Ok(Reply::json(
                200,
                &KeyList {
                    data: page.keys,
                    next_cursor: page.next.map(|c| c.to_string()),
                },
            ))
        }
        .await,
    )
}

/// `POST /api-keys`.
pub async fn create<A: KeyAdmin + ?Sized>(
    keys: &KeyManager,
    admin: &A,
    content_type: Option<&[u8]>,
    body: &[u8],
) -> Reply {
    let reply = create_reply(keys, admin, content_type, body).await;
    logged(reply, "create", admin.team_id(), None)
}

async fn create_reply<A: KeyAdmin + ?Sized>(
    keys: &KeyManager,
    admin: &A,
    content_type: Option<&[u8]>,
    body: &[u8],
) -> Reply {
    settle(
        async {
            let request: CreateKeyRequest = parse(content_type, body)?;
            let mut options = CreateOptions::new().scopes(Scopes::new(&request.scopes)?);
            options.expires_at = request.expires_at;
            options.rate_limit = request.rate_limit;
            if let Some(seconds) = request.expires_in {
                // Past i64 seconds is far past any allowed lifetime.
                let seconds = i64::try_from(seconds).unwrap_or(i64::MAX);
                options.expires_in = Some(time::Duration::seconds(seconds));
            }
            // Resolved once: the instant checked is the instant stored.
            let expires_at = keys.resolve_expiry(&options)?;
            let authority = admin.authority();
            authority.check_grant(&options.scopes, expires_at)?;
            check_limit_grant(keys, admin, &authority, options.rate_limit).await?;
            options.expires_at = expires_at;
            options.expires_in = None;
            let new = keys
                .on_behalf_of(origin(admin))
                .create(admin.team_id(), &request.name, options)
                .await
                .map_err(Reply::from)?;
            Ok(created(&new))
        }
        .await,
    )
}

/// `GET /api-keys/events?limit=N&cursor=C`: one page of the team's audit
/// events, newest first; `query` is the raw query string.
pub async fn events<A: KeyAdmin + ?Sized>(keys: &KeyManager, admin: &A, query: &str) -> Reply {
    let reply = events_reply(keys, admin, query).await;
    logged(reply, "events", admin.team_id(), None)
}

async fn events_reply<A: KeyAdmin + ?Sized>(keys: &KeyManager, admin: &A, query: &str) -> Reply {
    settle(
        async {
            admin.authority().check_read()?;
            let params = PageParams::parse(query)?;
            let limit = params.limit.unwrap_or(DEFAULT_PAGE_LIMIT);
            if !(1..=MAX_PAGE_LIMIT).contains(&limit) {
                return Err(ValidationError::InvalidPageLimit { max: MAX_PAGE_LIMIT }.into());
            }
            let mut query = EventQuery::newest(limit + 1);
            if let Some(cursor) = params.cursor {
                query = query.before(EventId::parse(&cursor)?);
            }
            let mut data = keys.events(admin.team_id(), query).await.map_err(Reply::from)?;
            let more = data.len() > limit;
            data.truncate(limit);
            let next_cursor = if more {
                data.last().map(|e| e.id.to_string())
            } else {
                None
            };
            Ok(Reply::json(200, &EventList { data, next_cursor }))
        }
        .await,
    )
}

/// `DELETE /api-keys/{id}`.
pub async fn revoke<A: KeyAdmin + ?Sized>(keys: &KeyManager, admin: &A, id: &str) -> Reply {
    let reply = revoke_reply(keys, admin, id).await;
    logged(
        reply,
        "revoke",
        admin.team_id(),
        KeyId::parse(id).ok().as_ref().map(KeyId::as_str),
    )
}

async fn revoke_reply<A: KeyAdmin + ?Sized>(keys: &KeyManager, admin: &A, id: &str) -> Reply {
    settle(
        async {
            let id = key_id(id)?;
            managed_key(keys, admin, &id).await?;
            keys.on_behalf_of(origin(admin))
                .revoke(admin.team_id(), &id)
                .await
                .map_err(Reply::from)?;
            Ok(Reply {
                status: 204,
                body: None,
            })
        }
        .await,
    )
}

/// `POST /api-keys/{id}/rotate` with `{"grace_seconds": N}` (or `{}` for
/// no grace period).
pub async fn rotate<A: KeyAdmin + ?Sized>(
    keys: &KeyManager,
    admin: &A,
    id: &str,
    content_type: Option<&[u8]>,
    body: &[u8],
) -> Reply {
    let reply = rotate_reply(keys, admin, id, content_type, body).await;
    logged(
        reply,
        "rotate",
        admin.team_id(),
        KeyId::parse(id).ok().as_ref().map(KeyId::as_str),
    )
}

/// Refuses a key whose rate limit (`own`, else the plan's or the
/// manager's) the caller could not grant. That limit is resolved, which
/// may ask the team policy, only for a caller limited itself.
async fn check_limit_grant<A: KeyAdmin + ?Sized>(
    keys: &KeyManager,
    admin: &A,
    authority: &Authority,
    own: Option<crate::RateLimit>,
) -> Result<(), Reply> {
    if authority.rate_limit().is_none() {
        return Ok(());
    }
    let limit = keys
        .rate_limit_of_new_key(admin.team_id(), own)
        .await
        .map_err(Reply::from)?;
    Ok(authority.check_rate_limit(limit)?)
}

async fn rotate_reply<A: KeyAdmin + ?Sized>(
    keys: &KeyManager,
    admin: &A,
    id: &str,
    content_type: Option<&[u8]>,
    body: &[u8],
) -> Reply {
    settle(
        async {
            let id = key_id(id)?;
            let request: RotateKeyRequest = parse(content_type, body)?;
            let grace = time::Duration::seconds(i64::try_from(request.grace_seconds).unwrap_or(i64::MAX));
            let old = managed_key(keys, admin, &id).await?;
            // The successor inherits the old key's scopes, expiry and rate
            // limit: the caller must be able to grant all three, or a
            // limited caller would get an unlimited key by rotating one.
            let authority = admin.authority();
            authority.check_grant(&old.scopes, old.expires_at)?;
            check_limit_grant(keys, admin, &authority, old.rate_limit).await?;
            let new = keys
                .on_behalf_of(origin(admin))
                .rotate(admin.team_id(), &id, grace)
                .await
                .map_err(Reply::from)?;
            Ok(created(&new))
        }
        .await,
    )
}

#[cfg(test)]
#[cfg(feature = "memory")]
mod tests {
    use super::*;
    use std::sync::Arc;

    use crate::{ManualClock, MemoryStore, Principal};
    use serde_json::Value;
    use time::macros::datetime;

    const JSON: Option<&[u8]> = Some(b"application/json");
    const T0: OffsetDateTime = datetime!(2030-01-01 12:00 UTC);

    struct Admin {
        team: TeamId,
        authority: Authority,
    }

    impl KeyAdmin for Admin {
        fn team_id(&self) -> &TeamId {
            &self.team
        }
        fn authority(&self) -> Authority {
            self.authority.clone()
        }
        fn actor(&self) -> Actor {
            Actor::user("tester")
        }
    }

    struct Fixture {
        keys: KeyManager,
        clock: ManualClock,
        team: TeamId,
    }

    impl Fixture {
        fn new() -> Self {
            let clock = ManualClock::new(T0);
            let keys = KeyManager::builder(MemoryStore::new())
                .clock(clock.clone())
                .max_active_keys(6)
                .build();
            Self {
                keys,
                clock,
                team: TeamId::new("acme").unwrap(),
            }
        }

        fn owner(&self) -> Admin {
            Admin {
                team: self.team.clone(),
                authority: Authority::whole_team(),
            }
        }

        /// A key of the team with `scopes` (and `expires_in`), verified: the
        /// caller as `ManagesKeys` sees it.
        async fn key(&self, scopes: &[&str], expires_in: Option<time::Duration>) -> (Principal, Admin) {
            let mut options = CreateOptions::new().scopes(Scopes::new(scopes).unwrap());
            options.expires_in = expires_in;
            let new = self.keys.create(&self.team, "caller", options).await.unwrap();
            let principal = self.keys.verify(new.key.expose_secret()).await.unwrap();
            let admin = Admin {
                team: self.team.clone(),
                authority: Authority::of_key(&principal),
            };
            (principal, admin)
        }

        async fn count(&self) -> usize {
            self.keys.list(&self.team).await.unwrap().len()
        }
    }

    fn body(reply: &Reply) -> Value {
        if reply.status >= 400 {
            assert_is_error_body(reply.body.as_deref().unwrap_or_default());
        }
        serde_json::from_str(reply.body.as_deref().unwrap_or("null")).unwrap()
    }

    /// `text` is an `ErrorBody` and nothing else, in the field order it
    /// serializes to: what the OpenAPI document promises for every error.
    fn assert_is_error_body(text: &str) {
        let parsed: ErrorBody = serde_json::from_str(text).unwrap();
        assert_eq!(
            serde_json::to_string(&parsed).unwrap(),
            text,
            "no field beyond ErrorBody's"
        );
    }

    #[tokio::test]
    async fn every_error_reply_is_an_error_body() {
        let f = Fixture::new(); // at most 6 active keys
        let owner = f.owner();
        let (_, expiring) = f.key(&["keys:manage"], Some(time::Duration::hours(1))).await;
        let made = create(&f.keys, &owner, JSON, br#"{"name":"x"}"#).await;
        let id = body(&made)["id"].as_str().unwrap().to_owned();
        let grace = br#"{"grace_seconds":60}"#;
        assert_eq!(rotate(&f.keys, &owner, &id, JSON, grace).await.status, 201);
        let mut replies = vec![
            list(&f.keys, &owner, "limit=x").await,
            list(&f.keys, &owner, "limit=0").await,
            create(&f.keys, &owner, None, b"{}").await,
            create(&f.keys, &owner, JSON, b"{not json").await,
            create(&f.keys, &owner, JSON, br#"{"name":""}"#).await,
            create(
                &f.keys,
                &expiring,
                JSON,
                br#"{"name":"x","scopes":["billing:admin"]}"#,
            )
            .await,
            create(&f.keys, &expiring, JSON, br#"{"name":"forever"}"#).await,
            revoke(&f.keys, &owner, "not-a-key-id").await,
            rotate(&f.keys, &owner, &id, JSON, b"{}").await,
            Reply::from(ManageError::Store(crate::StoreError::backend("down"))),
        ];
        for i in 0..6 {
            let request = format!(r#"{{"name":"k{i}"}}"#);
            replies.push(create(&f.keys, &owner, JSON, request.as_bytes()).await);
        }
        let mut statuses: Vec<u16> = replies
            .iter()
            .filter(|r| r.status >= 400)
            .map(|r| {
                assert_is_error_body(r.body.as_deref().unwrap_or_default());
                r.status
            })
            .collect();
        statuses.sort_unstable();
        statuses.dedup();
        assert_eq!(statuses, [400, 403, 404, 409, 415, 422, 503]);
    }

    #[test]
    fn the_guards_refusals_have_the_error_body_too() {
        for answer in [
            crate::Answer::unauthorized(),
            crate::Answer::unavailable(),
            crate::Answer::misconfigured(),
            crate::Answer::missing_scope(MANAGE_SCOPE),
        ] {
            assert_is_error_body(&answer.body);
        }
    }

    #[tokio::test]
    async fn a_reply_with_a_new_key_never_prints_it() {
        let f = Fixture::new();
        let reply = create(&f.keys, &f.owner(), JSON, br#"{"name":"CI"}"#).await;
        assert_eq!(reply.status, 201);
        let key = body(&reply)["key"].as_str().unwrap().to_owned();
        assert!(!format!("{reply:?}").contains(&key[20..60]));
        assert_eq!(reply.headers(), &[("cache-control", "no-store")]);
    }

    #[tokio::test]
    async fn a_key_grants_only_the_scopes_it_holds() {
        let f = Fixture::new();
        let (_, caller) = f.key(&["keys:manage", "scans:read"], None).await;
        let reply = create(
            &f.keys,
            &caller,
            JSON,
            br#"{"name":"x","scopes":["billing:admin","scans:write","scans:read"]}"#,
        )
        .await;
        assert_eq!(reply.status, 403);
        assert_eq!(
            body(&reply)["refused_scopes"],
            serde_json::json!(["billing:admin", "scans:write"])
        );
        assert_eq!(f.count().await, 1, "nothing written");
        let ok = create(&f.keys, &caller, JSON, br#"{"name":"x","scopes":["scans:read"]}"#).await;
        assert_eq!(ok.status, 201);
    }

    #[tokio::test]
    async fn a_key_that_expires_cannot_make_one_that_outlives_it() {
        let f = Fixture::new();
        let (principal, caller) = f.key(&["keys:manage"], Some(time::Duration::hours(1))).await;
        for request in [
            r#"{"name":"forever"}"#,
            r#"{"name":"later","expires_in":3601}"#,
            r#"{"name":"later","expires_at":"2030-01-01T13:00:01Z"}"#,
        ] {
            let reply = create(&f.keys, &caller, JSON, request.as_bytes()).await;
            assert_eq!(reply.status, 403, "{request}");
            assert_eq!(body(&reply)["refused"], "expires_at");
            assert_eq!(body(&reply)["latest_expires_at"], "2030-01-01T13:00:00Z");
        }
        let reply = create(&f.keys, &caller, JSON, br#"{"name":"ok","expires_in":3600}"#).await;
        assert_eq!(reply.status, 201);
        assert_eq!(body(&reply)["expires_at"], "2030-01-01T13:00:00Z");
        assert_eq!(principal.expires_at(), Some(datetime!(2030-01-01 13:00 UTC)));
    }

    #[tokio::test]
    async fn a_key_cannot_rotate_or_revoke_a_broader_key() {
        let f = Fixture::new();
        let (_, caller) = f.key(&["keys:manage"], None).await;
        let broad = f
            .keys
            .create(
                &f.team,
                "deploy",
                CreateOptions::new().scopes(Scopes::new(["scans:write"]).unwrap()),
            )
            .await
            .unwrap();
        let id = broad.info.id.to_string();
        let rotated = rotate(&f.keys, &caller, &id, JSON, b"{}").await;
        assert_eq!(rotated.status, 403);
        assert_eq!(
            body(&rotated)["refused_scopes"],
            serde_json::json!(["scans:write"])
        );
        assert!(
            !rotated.body.unwrap().contains("tk_live_"),
            "no successor key handed out"
        );
        let revoked = revoke(&f.keys, &caller, &id).await;
        assert_eq!(revoked.status, 403);
        // Nothing changed: the broad key still works and was not rotated.
        assert!(f.keys.verify(broad.key.expose_secret()).await.is_ok());
        assert_eq!(f.count().await, 2);
        // The team's owner may.
        assert_eq!(rotate(&f.keys, &f.owner(), &id, JSON, b"{}").await.status, 201);
    }

    #[tokio::test]
    async fn grace_is_bounded_and_rotation_keeps_the_lifetime() {
        let f = Fixture::new();
        let (principal, caller) = f.key(&["keys:manage"], Some(time::Duration::hours(1))).await;
        let id = principal.key_id().to_string();
        for grace in ["4294967295", "604801", "18446744073709551615"] {
            let request = format!(r#"{{"grace_seconds":{grace}}}"#);
            let reply = rotate(&f.keys, &caller, &id, JSON, request.as_bytes()).await;
            assert_eq!(reply.status, 422, "{grace}");
        }
        assert_eq!(f.count().await, 1, "nothing written");
        let reply = rotate(&f.keys, &caller, &id, JSON, br#"{"grace_seconds":604800}"#).await;
        assert_eq!(reply.status, 201);
        // The successor expires when the old key would have: rotating
        // renews the secret, never the lifetime.
        assert_eq!(body(&reply)["expires_at"], "2030-01-01T13:00:00Z");
        f.clock.advance(time::Duration::minutes(59));
        let successor: KeyId = body(&reply)["id"].as_str().unwrap().parse().unwrap();
        let again = rotate(&f.keys, &f.owner(), successor.as_str(), JSON, b"{}").await;
        assert_eq!(body(&again)["expires_at"], "2030-01-01T13:00:00Z");
    }

    #[tokio::test]
    async fn expiries_are_bounded_normalised_and_never_panic() {
        let f = Fixture::new();
        let owner = f.owner();
        for (request, status) in [
            (r#"{"name":"x","expires_at":"9999-12-31T23:59:59-23:59"}"#, 422),
            (r#"{"name":"x","expires_at":"9999-12-31T23:59:59.999999Z"}"#, 422),
            (r#"{"name":"x","expires_at":"2041-01-01T00:00:00Z"}"#, 422),
            (r#"{"name":"x","expires_in":18446744073709551615}"#, 422),
            (r#"{"name":"x","expires_in":0}"#, 422),
            (r#"{"name":"x","expires_at":"2029-01-01T00:00:00Z"}"#, 422),
            (
                r#"{"name":"x","expires_in":60,"expires_at":"2031-01-01T00:00:00Z"}"#,
                422,
            ),
            (r#"{"name":"x","expires_in":-5}"#, 422),
        ] {
            let reply = create(&f.keys, &owner, JSON, request.as_bytes()).await;
            assert_eq!(reply.status, status, "{request}");
        }
        assert_eq!(f.count().await, 0, "nothing written");
        let reply = create(
            &f.keys,
            &owner,
            JSON,
            br#"{"name":"x","expires_at":"2030-06-01T09:30:00.1234567+02:00"}"#,
        )
        .await;
        assert_eq!(reply.status, 201);
        assert_eq!(body(&reply)["expires_at"], "2030-06-01T07:30:00.123456Z");
        let reply = create(&f.keys, &owner, JSON, br#"{"name":"y","expires_in":86400}"#).await;
        assert_eq!(body(&reply)["expires_at"], "2030-01-02T12:00:00Z");
    }

    #[tokio::test]
    async fn mutations_must_be_declared_json() {
        let f = Fixture::new();
        let owner = f.owner();
        let name = br#"{"name":"x"}"#;
        for content_type in [
            None,
            Some(&b"text/plain"[..]),
            Some(b"application/x-www-form-urlencoded"),
            Some(b"multipart/form-data; boundary=x"),
            Some(b"application/jsonx"),
        ] {
            assert_eq!(create(&f.keys, &owner, content_type, name).await.status, 415);
        }
        assert_eq!(f.count().await, 0);
        let utf8 = Some(&b"Application/JSON; charset=utf-8"[..]);
        let created = create(&f.keys, &owner, utf8, name).await;
        assert_eq!(created.status, 201);
        let id = body(&created)["id"].as_str().unwrap().to_owned();
        assert_eq!(
            rotate(&f.keys, &owner, &id, Some(b"text/plain"), b"{}")
                .await
                .status,
            415
        );
        assert_eq!(rotate(&f.keys, &owner, &id, JSON, b"").await.status, 400);
        assert_eq!(rotate(&f.keys, &owner, &id, JSON, b"{}").await.status, 201);
    }

    #[tokio::test]
    async fn lists_page_and_keys_are_capped_per_team() {
        let f = Fixture::new();
        let owner = f.owner();
        for i in 0..6 {
            f.clock.advance(time::Duration::seconds(1));
            let request = format!(r#"{{"name":"key {i}"}}"#);
            assert_eq!(
                create(&f.keys, &owner, JSON, request.as_bytes()).await.status,
                201
            );
        }
        let full = create(&f.keys, &owner, JSON, br#"{"name":"one too many"}"#).await;
        assert_eq!(full.status, 422);
        assert_eq!(body(&full)["error"], "too_many_keys");
        assert_eq!(f.count().await, 6);

        let mut names = Vec::new();
        let mut query = "limit=4".to_owned();
        loop {
            let page = body(&list(&f.keys, &owner, &query).await);
            names.extend(page["data"].as_array().unwrap().iter().map(|k| k["name"].clone()));
            match page["next_cursor"].as_str() {
                Some(cursor) => query = format!("limit=4&cursor={cursor}"),
                None => break,
            }
        }
        let expected: Vec<Value> = (0..6).rev().map(|i| format!("key {i}").into()).collect();
        assert_eq!(names, expected);
        for (query, status) in [
            ("limit=0", 422),
            ("limit=101", 422),
            ("limit=x", 400),
            ("cursor=nope", 422),
        ] {
            assert_eq!(list(&f.keys, &owner, query).await.status, status, "{query}");
        }
        let other = Admin {
            team: TeamId::new("globex").unwrap(),
            authority: Authority::whole_team(),
        };
        assert_eq!(
            body(&list(&f.keys, &other, "").await)["data"],
            serde_json::json!([])
        );
    }

    #[tokio::test]
    async fn a_dying_or_rotated_key_cannot_kill_a_longer_lived_one() {
        let f = Fixture::new();
        let options = CreateOptions::new()
            .scopes(Scopes::new(["keys:manage"]).unwrap())
            .expires_in(time::Duration::hours(1));
        let made = f.keys.create(&f.team, "dying", options).await.unwrap();
        let principal = f.keys.verify(made.key.expose_secret()).await.unwrap();
        let dying = Admin {
            team: f.team.clone(),
            authority: Authority::of_key(&principal),
        };
        let lasting = f
            .keys
            .create(&f.team, "lasting", CreateOptions::new())
            .await
            .unwrap();
        let id = lasting.info.id.to_string();
        let revoked = revoke(&f.keys, &dying, &id).await;
        assert_eq!(
            revoked.status, 403,
            "a key expiring in an hour must not revoke one that never expires"
        );
        assert_eq!(rotate(&f.keys, &dying, &id, JSON, b"{}").await.status, 403);
        assert!(f.keys.verify(lasting.key.expose_secret()).await.is_ok());

        // The owner rotates the dying key with a grace period; during it the
        // old key still verifies but manages nothing, not even its successor.
        let own = principal.key_id().to_string();
        let rotated = rotate(&f.keys, &f.owner(), &own, JSON, br#"{"grace_seconds":600}"#).await;
        assert_eq!(rotated.status, 201);
        let successor = body(&rotated)["id"].as_str().unwrap().to_owned();
        let old = f.keys.verify(made.key.expose_secret()).await.unwrap();
        assert!(old.replaced_by().is_some(), "still verifies, in its grace period");
        let retired = Admin {
            team: f.team.clone(),
            authority: Authority::of_key(&old),
        };
        let kill = revoke(&f.keys, &retired, &successor).await;
        assert_eq!(kill.status, 403);
        assert_eq!(body(&kill)["refused"], "caller_retired");
        assert_eq!(
            create(&f.keys, &retired, JSON, br#"{"name":"x","expires_in":60}"#)
                .await
                .status,
            403
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_creations_cannot_pass_the_cap_and_rotations_with_grace_need_room() {
        let f = Fixture::new(); // at most 6 active keys
        let owner = Arc::new(f.owner());
        let tasks: Vec<_> = (0..40)
            .map(|i| {
                let (keys, owner) = (f.keys.clone(), Arc::clone(&owner));
                tokio::spawn(async move {
                    let request = format!(r#"{{"name":"burst {i}"}}"#);
                    create(&keys, &*owner, JSON, request.as_bytes()).await.status
                })
            })
            .collect();
        let mut created = 0;
        for task in tasks {
            if task.await.unwrap() == 201 {
                created += 1;
            }
        }
        assert_eq!(created, 6);
        assert_eq!(f.count().await, 6);

        let id = f.keys.list(&f.team).await.unwrap()[0].id.to_string();
        let with_grace = rotate(&f.keys, &*owner, &id, JSON, br#"{"grace_seconds":60}"#).await;
        assert_eq!(with_grace.status, 422, "the old key would live on as a seventh");
        assert_eq!(f.count().await, 6);
        assert_eq!(rotate(&f.keys, &*owner, &id, JSON, b"{}").await.status, 201);
        assert_eq!(f.count().await, 6);
    }
}
