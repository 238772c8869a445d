//! The management API as the weakest caller: another team's key ids and
//! cursors reach nothing, and a key rotated away reads nothing in its
//! grace period (found by an attack review: it could still list).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod support;

use support::{KeyCaller, TeamOwner};
use teamkey_core::management;
use teamkey_core::{CreateOptions, KeyManager, MemoryStore, Scopes, TeamId};

const JSON: Option<&[u8]> = Some(b"application/json");

/// docs/security.md and `ErrorBody::refused`: a key rotated away "manages,
/// and reads, nothing in its grace period". `events` refuses it; `list`
/// must too, else a leaked key that was rotated (with grace) still reads
/// the team's whole key table (names, ids, scopes, previews).
#[tokio::test]
async fn a_retired_key_cannot_list_the_team_keys() {
    let keys = KeyManager::builder(MemoryStore::new()).build();
    let team = TeamId::new("acme").unwrap();
    let owner = TeamOwner(team.clone());
    let made = keys
        .create(
            &team,
            "leaked",
            CreateOptions::new().scopes(Scopes::new(["keys:manage"]).unwrap()),
        )
        .await
        .unwrap();
    let id = made.info.id.to_string();
    let rotated = management::rotate(&keys, &owner, &id, JSON, br#"{"grace_seconds":600}"#).await;
    assert_eq!(rotated.status, 201);
    let old = keys.verify(made.key.expose_secret()).await.unwrap();
    assert!(old.replaced_by().is_some());
    let retired = KeyCaller(old);
    assert_eq!(management::events(&keys, &retired, "").await.status, 403);
    let listed = management::list(&keys, &retired, "").await;
    assert_eq!(
        listed.status, 403,
        "a retired key read the key table: {:?}",
        listed.body
    );
}

/// A cursor naming another team's key positions the page but never shows
/// that team's rows.
#[tokio::test]
async fn a_foreign_cursor_shows_only_the_own_team() {
    let keys = KeyManager::builder(MemoryStore::new()).build();
    let (a, b) = (TeamId::new("a").unwrap(), TeamId::new("b").unwrap());
    for i in 0..3 {
        keys.create(&b, &format!("b{i}"), CreateOptions::new())
            .await
            .unwrap();
    }
    let own = keys.create(&a, "a0", CreateOptions::new()).await.unwrap();
    let foreign = keys.list(&b).await.unwrap()[0].clone();
    let cursor = format!("{}.{}", i64::MAX / 100_000, foreign.id);
    let admin = TeamOwner(a.clone());
    for query in [
        format!("cursor={cursor}"),
        "cursor=253402300799999999.AAAAAAAAAAAA".into(),
    ] {
        let reply = management::list(&keys, &admin, &query).await;
        let body = reply.body.unwrap_or_default();
        assert!(!body.contains("\"b0\"") && !body.contains("\"b1\""), "{body}");
        let _ = &own;
    }
    // Another team's key by id: 404 on revoke and rotate, and it still works.
    let id = foreign.id.to_string();
    assert_eq!(management::revoke(&keys, &admin, &id).await.status, 404);
    assert_eq!(
        management::rotate(&keys, &admin, &id, JSON, b"{}").await.status,
        404
    );
    assert_eq!(keys.list(&b).await.unwrap().len(), 3);
}
