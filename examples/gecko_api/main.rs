//! The Gecko-style API server: team-scoped API keys with teamkey on axum.
//!
//! `cargo run --example gecko_api`, then paste the curl line it prints.
//!
//! Environment: `DATABASE_URL` (default `sqlite://gecko_api.db?mode=rwc`),
//! `BIND_ADDR` (default `127.0.0.1:3000`), `TEAMKEY_PREFIX` (default
//! `tk_live`, as for the `teamkey` command, whose keys work here too).

mod app;

use teamkey::sqlx::SqlitePool;
use teamkey::{KeyFormat, KeyManager, SqlxStore};

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .init();
    let database_url = env_or("DATABASE_URL", "sqlite://gecko_api.db?mode=rwc");
    let bind_addr = env_or("BIND_ADDR", "127.0.0.1:3000");
    let prefix = env_or("TEAMKEY_PREFIX", teamkey::DEFAULT_PREFIX);

    let db = SqlitePool::connect(&database_url).await?;
    let store = SqlxStore::new(db.clone());
    store.migrate().await?;
    app::prepare(&db).await?;
    let keys = KeyManager::builder(store)
        .format(KeyFormat::new(&prefix)?)
        .build();

    let listener = tokio::net::TcpListener::bind(&bind_addr).await?;
    let addr = listener.local_addr()?;
    if let Some(new) = app::quickstart_key(&keys).await? {
        let key = new.key.expose_secret();
        println!(
            "\nCreated the team acme's first API key, \"Quickstart\". It is shown only this once:\n\n  {key}\n"
        );
        println!(
            "Try it:\n\n  curl http://{addr}/api/v1/scans?limit=10 -H \"X-API-Key: {key}\" -H \"Accept: application/json\"\n"
        );
    } else {
        println!("\nacme already has API keys; create more with `teamkey create --team acme --name NAME`.\n");
    }
    println!("Gecko API listening on http://{addr}");

    let state = app::AppState {
        keys: keys.clone(),
        db,
    };
    axum::serve(listener, app::router(state))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    // Shut down: write the last-used times of the last interval.
    let flushed = keys.flush_last_used().await?;
    println!("Shut down; wrote last-used times of {flushed} key(s).");
    Ok(())
}
