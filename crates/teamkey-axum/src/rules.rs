//! `with_rules`: header rules for apps that verify keys in extractors.

use axum::Extension;
use teamkey_core::HeaderRules;

/// Sets the [`HeaderRules`] that [`Authenticated`](crate::Authenticated),
/// [`MaybeAuthenticated`](crate::MaybeAuthenticated),
/// [`ManagesKeys`](crate::ManagesKeys) and a [`RequireScope`](crate::RequireScope)
/// without rules of its own use when they verify a key themselves: in an
/// app that has no [`RequireApiKey`](crate::RequireApiKey) guard. Add it
/// as a layer around those routes:
///
/// ```
/// use axum::{Router, extract::FromRef, routing::get};
/// use teamkey_axum::{Authenticated, with_rules};
/// use teamkey_core::{HeaderRules, KeyManager, MemoryStore};
///
/// #[derive(Clone, FromRef)]
/// struct AppState {
///     keys: KeyManager,
/// }
///
/// async fn whoami(caller: Authenticated) -> String {
///     caller.team_id().to_string()
/// }
///
/// let rules = HeaderRules::new().header("X-Team-Key").expect("a valid header name");
/// let state = AppState { keys: KeyManager::new(MemoryStore::new()) };
/// let app: Router = Router::new()
///     .route("/whoami", get(whoami))
///     .layer(with_rules(rules))
///     .with_state(state);
/// ```
///
/// It is an [`Extension`] holding the rules: the extractors find them in
/// the request's extensions. A [`RequireApiKey`](crate::RequireApiKey)
/// guard reads none of this; it has its own
/// [`rules`](crate::RequireApiKey::rules), and the extractors behind it
/// take the principal it verified. Without any rules, the defaults apply
/// (`X-API-Key` only).
///
/// (The state cannot carry them: axum extractors can ask the state only
/// for what every state must have, and most apps need no rules of their
/// own. The actix adapter reads them from `App::app_data(rules)`.)
pub fn with_rules(rules: HeaderRules) -> Extension<HeaderRules> {
    Extension(rules)
}
