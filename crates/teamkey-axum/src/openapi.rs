//! `openapi_json`: the route that serves the management API's OpenAPI
//! document (feature `openapi`).

use axum::routing::{MethodRouter, get};
use teamkey_core::management;
use teamkey_core::utoipa::openapi::OpenApi;

/// A `GET` route that answers with `document` as JSON: the same bytes and
/// headers as the actix adapter's `openapi_json`
/// ([`management::openapi_reply`]). The document is written once, here.
///
/// Add it where the document should be read, usually beside the
/// management routes. A route added after a `.layer(..)` call is outside
/// that layer: here the document is public while the API needs a key.
///
/// ```
/// use axum::{Router, extract::FromRef};
/// use teamkey_axum::{ManagesKeys, RequireApiKey, management_routes, openapi_json};
/// use teamkey_core::{KeyManager, MemoryStore, management};
///
/// #[derive(Clone, FromRef)]
/// struct AppState {
///     keys: KeyManager,
/// }
///
/// let state = AppState { keys: KeyManager::new(MemoryStore::new()) };
/// let v1 = Router::new()
///     .merge(management_routes::<AppState, ManagesKeys>())
///     .layer(RequireApiKey::from_state(&state))
///     // GET /api/v1/openapi.json, no key needed.
///     .route("/openapi.json", openapi_json(&management::openapi("/api/v1")));
/// let app: Router = Router::new().nest("/api/v1", v1).with_state(state);
/// ```
pub fn openapi_json<S>(document: &OpenApi) -> MethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    let reply = management::openapi_reply(document);
    get(move || std::future::ready(crate::manage::respond(reply.clone())))
}
