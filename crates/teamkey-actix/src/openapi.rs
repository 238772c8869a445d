//! `openapi_json`: the route that serves the management API's OpenAPI
//! document (feature `openapi`).

use actix_web::{Route, web};
use teamkey_core::management;
use teamkey_core::utoipa::openapi::OpenApi;

/// A `GET` route that answers with `document` as JSON: the same bytes and
/// headers as the axum adapter's `openapi_json`
/// ([`management::openapi_reply`]). The document is written once, here.
///
/// Register it where the document should be read. Registered before a
/// `web::scope` with the same prefix, it is matched first and stays
/// outside the scope's middleware: here the document is public while the
/// API needs a key.
///
/// ```
/// use actix_web::{App, web};
/// use teamkey_actix::{ManagesKeys, RequireApiKey, management_routes, openapi_json};
/// use teamkey_core::{KeyManager, MemoryStore, management};
///
/// let keys = web::Data::new(KeyManager::new(MemoryStore::new()));
/// let app = App::new()
///     .app_data(keys)
///     // GET /api/v1/openapi.json, no key needed.
///     .route("/api/v1/openapi.json", openapi_json(&management::openapi("/api/v1")))
///     .service(
///         web::scope("/api/v1")
///             .wrap(RequireApiKey::new())
///             .service(management_routes::<ManagesKeys>()),
///     );
/// # drop(app);
/// ```
pub fn openapi_json(document: &OpenApi) -> Route {
    let reply = management::openapi_reply(document);
    web::get().to(move || std::future::ready(crate::manage::respond(reply.clone())))
}
