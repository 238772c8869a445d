//! What several test files share: a key and a team owner acting in the
//! management API,
//! and a key's checksum as anyone can compute it.
//! (Each test file compiles this on its own; not every one uses all of it.)
#![allow(dead_code)]

pub(crate) mod logs;

use teamkey_core::events::Actor;
use teamkey_core::management::{self, KeyAdmin};
use teamkey_core::{Authority, KeyId, KeyManager, Principal, TeamId};

/// A key with `keys:manage`, as the adapters' `ManagesKeys` is.
pub(crate) struct KeyCaller(pub(crate) Principal);

impl KeyAdmin for KeyCaller {
    fn team_id(&self) -> &TeamId {
        self.0.team_id()
    }
    fn authority(&self) -> Authority {
        Authority::of_key(&self.0)
    }
    fn actor(&self) -> Actor {
        Actor::Key {
            key_id: self.0.key_id(),
        }
    }
}

/// A signed-in administrator of the team: every scope, any lifetime.
pub(crate) struct TeamOwner(pub(crate) TeamId);

impl KeyAdmin for TeamOwner {
    fn team_id(&self) -> &TeamId {
        &self.0
    }
    fn authority(&self) -> Authority {
        Authority::whole_team()
    }
    fn actor(&self) -> Actor {
        Actor::user("owner@example.test")
    }
}

/// `POST /api-keys/{id}/rotate` with no grace, by `caller`: the new key,
/// or the refusal's status and body.
pub(crate) async fn rotate_by(
    keys: &KeyManager,
    caller: Principal,
    id: &KeyId,
) -> Result<String, (u16, String)> {
    let reply = management::rotate(
        keys,
        &KeyCaller(caller),
        id.as_str(),
        Some(b"application/json"),
        b"{}",
    )
    .await;
    let body = reply.body.clone().unwrap_or_default();
    if reply.status != 201 {
        return Err((reply.status, body));
    }
    let body: serde_json::Value = serde_json::from_str(&body).map_err(|e| (reply.status, e.to_string()))?;
    body["key"]
        .as_str()
        .map(str::to_owned)
        .ok_or((reply.status, body.to_string()))
}

/// `body` (a key without its checksum) with its checksum recomputed, as an
/// attacker can after editing a key by hand.
pub(crate) fn with_checksum(body: &str) -> String {
    format!("{body}{:0>6}", base62::encode(crc32fast::hash(body.as_bytes())))
}
