//! The key-management HTTP API, framework-free: request bytes in, a status
//! and a JSON body out. Adapters route `GET/POST /api-keys`,
//! `DELETE /api-keys/{id}` and `POST /api-keys/{id}/rotate` here, for the
//! caller's team, so every adapter speaks the same JSON.
//!
//! - list: 200 `{"data": [KeyInfo, ...]}`, newest first;
//! - create: `{"name", "scopes"?, "expires_at"?}` -> 201 `{"key", ...KeyInfo}`;
//! - revoke: 204; rotate: `{"grace_seconds"?}` (or no body) -> 201 like create;
//! - errors: `{"error": code, "message": text}`: 400 malformed JSON, 422
//!   invalid input, 404 unknown id or another team's key, 409 already
//!   rotated, 503 store down.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::error::ManageError;
use crate::ident::{KeyId, Scopes, TeamId};
use crate::manager::{CreateOptions, KeyManager, NewKey};
use crate::record::KeyInfo;

/// The scope that lets a key manage its own team's keys.
pub const MANAGE_SCOPE: &str = "keys:manage";

/// An answer: a status and, except for 204, a JSON body. A `create` or
/// `rotate` body holds the new full key, so `Debug` shows only its length.
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
            Err(_) => Self::error(500, "internal", "The answer could not be written."),
        }
    }

    fn error(status: u16, code: &str, message: &str) -> Self {
        let body = serde_json::json!({ "error": code, "message": message });
        Self {
            status,
            body: Some(body.to_string()),
        }
    }

    fn not_found() -> Self {
        Self::error(404, "not_found", "No such API key.")
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
            _ => Self::error(
                503,
                "unavailable",
                "API keys cannot be managed right now; retry later.",
            ),
        }
    }
}

/// Malformed JSON is 400; well-formed but wrong is 422.
fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, Reply> {
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
    #[derive(Serialize)]
    struct Created<'a> {
        key: &'a str,
        #[serde(flatten)]
        info: &'a KeyInfo,
    }
    Reply::json(
        201,
        &Created {
            key: new.key.expose_secret(),
            info: &new.info,
        },
    )
}

fn settle(result: Result<Reply, Reply>) -> Reply {
    result.unwrap_or_else(|reply| reply)
}

/// `GET /api-keys`.
pub async fn list(keys: &KeyManager, team_id: &TeamId) -> Reply {
    #[derive(Serialize)]
    struct Listed {
        data: Vec<KeyInfo>,
    }
    match keys.list(team_id).await {
        Ok(data) => Reply::json(200, &Listed { data }),
        Err(e) => e.into(),
    }
}

/// `POST /api-keys`.
pub async fn create(keys: &KeyManager, team_id: &TeamId, body: &[u8]) -> Reply {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Request {
        name: String,
        #[serde(default)]
        scopes: Vec<String>,
        #[serde(default, with = "time::serde::rfc3339::option")]
        expires_at: Option<OffsetDateTime>,
    }
    settle(
        async {
            let request: Request = parse(body)?;
            let scopes = Scopes::new(&request.scopes).map_err(|e| Reply::from(ManageError::from(e)))?;
            let options = CreateOptions {
                scopes,
                expires_at: request.expires_at,
            };
            let new = keys
                .create(team_id, &request.name, options)
                .await
                .map_err(Reply::from)?;
            Ok(created(&new))
        }
        .await,
    )
}

/// `DELETE /api-keys/{id}`.
pub async fn revoke(keys: &KeyManager, team_id: &TeamId, id: &str) -> Reply {
    settle(
        async {
            keys.revoke(team_id, &key_id(id)?).await.map_err(Reply::from)?;
            Ok(Reply {
                status: 204,
                body: None,
            })
        }
        .await,
    )
}

/// `POST /api-keys/{id}/rotate`; an empty body means no grace period.
pub async fn rotate(keys: &KeyManager, team_id: &TeamId, id: &str, body: &[u8]) -> Reply {
    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    struct Request {
        #[serde(default)]
        grace_seconds: u32,
    }
    settle(
        async {
            let id = key_id(id)?;
            let request: Request = if body.is_empty() {
                Request::default()
            } else {
                parse(body)?
            };
            let grace = time::Duration::seconds(i64::from(request.grace_seconds));
            let new = keys.rotate(team_id, &id, grace).await.map_err(Reply::from)?;
            Ok(created(&new))
        }
        .await,
    )
}

#[cfg(all(test, feature = "memory"))]
mod tests {
    use super::*;
    use crate::MemoryStore;

    #[tokio::test]
    async fn a_reply_with_a_new_key_never_prints_it() {
        let keys = KeyManager::new(MemoryStore::new());
        let team = TeamId::new("acme").unwrap();
        let reply = create(&keys, &team, br#"{"name":"CI"}"#).await;
        assert_eq!(reply.status, 201);
        let body: serde_json::Value = serde_json::from_str(reply.body.as_deref().unwrap()).unwrap();
        let key = body["key"].as_str().unwrap();
        assert!(!format!("{reply:?}").contains(&key[20..60]));
    }
}
