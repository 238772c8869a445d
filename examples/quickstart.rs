//! The whole key lifecycle in one process, against the in-memory store.
//!
//! `cargo run --example quickstart`

use teamkey::{CreateOptions, KeyManager, MemoryStore, Scopes, TeamId};
use time::format_description::well_known::Rfc3339;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let keys = KeyManager::new(MemoryStore::new());
    let acme = TeamId::new("acme")?;

    let options = CreateOptions::new().scopes(Scopes::new(["scans:read"])?);
    let created = keys.create(&acme, "CI/CD Pipeline", options).await?;
    println!(
        "New key (shown once, copy it now):\n  {}\n",
        created.key.expose_secret()
    );

    let caller = keys.verify(created.key.expose_secret()).await?;
    println!(
        "X-API-Key accepted: team {}, key {} ({})",
        caller.team_id(),
        caller.key_id(),
        caller.name()
    );

    let rotated = keys
        .rotate(&acme, &created.info.id, time::Duration::hours(24))
        .await?;
    println!(
        "Rotated: old key works for 24 h more, new key {}",
        rotated.info.id
    );

    println!("\n{:<14} {:<16} {:<30} CREATED", "ID", "NAME", "KEY");
    for key in keys.list(&acme).await? {
        let created = key.created_at.format(&Rfc3339)?;
        println!("{:<14} {:<16} {:<30} {created}", key.id, key.name, key.preview);
    }

    keys.revoke(&acme, &created.info.id).await?;
    if let Err(refused) = keys.verify(created.key.expose_secret()).await {
        let status = refused.rejection().http_status();
        println!("\nAfter revoking the old key: {refused} -> HTTP {status}");
    }
    Ok(())
}
