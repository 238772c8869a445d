//! The Gecko-style API server on actix-web: the same API, environment, demo
//! data and quickstart key as `gecko_api`.
//!
//! `cargo run --example gecko_api_actix`, then paste the curl line it prints.

mod app;
#[path = "../gecko_api/demo.rs"]
mod demo;

use actix_web::{App, HttpServer};

#[actix_web::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (config, opened) = demo::start().await?;
    let (keys_data, db_data) = app::data(opened.keys.clone(), opened.db);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(keys_data.clone())
            .app_data(db_data.clone())
            .configure(app::configure)
    })
    .bind(&config.bind_addr)?;
    let addr = server
        .addrs()
        .first()
        .map_or(config.bind_addr.clone(), ToString::to_string);
    demo::announce_quickstart(&opened.keys, &addr, &config, opened.legacy.as_ref()).await?;
    drop(opened.legacy); // Printed once; not kept.
    opened.setup.release().await; // Seeded: another instance may start.
    actix_web::rt::spawn(demo::sweep_expiring_hourly(opened.keys.clone()));
    // actix-web stops gracefully on Ctrl-C; then the last-used times are written.
    server.run().await?;
    let flushed = opened.keys.flush_last_used().await?;
    println!("Shut down; wrote last-used times of {flushed} key(s).");
    Ok(())
}
