//! The Gecko-style API server: team-scoped API keys with teamkey on axum.
//!
//! `cargo run --example gecko_api`, then paste the curl line it prints.
//!
//! Environment: `DATABASE_URL` (default `sqlite://gecko_api.db?mode=rwc`),
//! `BIND_ADDR` (default `127.0.0.1:3000`), `TEAMKEY_PREFIX` (default
//! `tk_live`, as for the `teamkey` command, whose keys work here too),
//! `REDIS_URL` (unset: the rate limits are counted in this process); for
//! the Settings > API Keys page, `PUBLIC_ORIGIN` (default: `http://` and
//! the address it listens on) and `SESSION_COOKIE_SECURE`.

mod app;
mod demo;
mod settings;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (config, opened) = demo::start().await?;
    let listener = tokio::net::TcpListener::bind(&config.bind_addr).await?;
    let addr = listener.local_addr()?.to_string();
    demo::announce_quickstart(&opened.keys, &addr, &config, opened.legacy.as_ref()).await?;
    drop(opened.legacy); // Printed once; not kept.
    let page = settings::Config::from_env(&addr)?;
    settings::start(&opened.db, &page).await?; // The demo users, printed once; sessions.
    opened.setup.release().await; // Seeded: another instance may start.
    tokio::spawn(demo::sweep_expiring_hourly(opened.keys.clone()));

    let state = app::AppState {
        keys: opened.keys.clone(),
        db: opened.db,
    };
    // With the peer's address, for key events and last-used IPs. (Behind
    // a proxy, the app would insert teamkey's `ClientIp` instead.)
    let app = app::router(state.clone())
        .merge(settings::router(state, &page)) // Settings > API Keys, with sign-in
        .into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    // Shut down: write the last-used times of the last interval.
    let flushed = opened.keys.flush_last_used().await?;
    println!("Shut down; wrote last-used times of {flushed} key(s).");
    Ok(())
}
