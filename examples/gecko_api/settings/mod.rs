//! The "Settings > API Keys" page: the demo's own sign-in (users with
//! argon2 password hashes, sessions in the demo's database), and a page
//! whose actions go through teamkey's management API with the signed-in
//! person as the [`KeyAdmin`](teamkey::management::KeyAdmin). This is how
//! an app plugs its own sign-in into teamkey: one extractor
//! ([`SessionAdmin`]) and one `management_routes` mount.
//!
//! Routes, none of which takes an API key:
//! - `GET /login`, `POST /login`, `POST /logout`;
//! - `GET /settings/api-keys`, the page, and `GET /settings/api-keys/rows`,
//!   its table body (the page's script refreshes the table with it);
//! - `/dashboard/api-keys...`: teamkey's management routes, for the
//!   signed-in person's team;
//! - `GET /static/settings/{api-keys.js, settings.css, favicon.svg}`.
//!
//! Every answer carries a Content-Security-Policy without inline scripts or
//! styles, with Trusted Types, and isolates the page from other origins
//! (`Cross-Origin-Opener-Policy`, `Cross-Origin-Resource-Policy`); every
//! mutation must come from the page's public origin (`PUBLIC_ORIGIN`, by
//! `Origin` and `Sec-Fetch-Site`), and a signed-in one must also carry the
//! session's CSRF token. Sign-in is throttled (`throttle.rs`). Cookies are
//! `HttpOnly` and `SameSite=Strict`; `Secure`, and named `__Host-...`, only
//! with `SESSION_COOKIE_SECURE=1`, since the demo serves plain http on
//! 127.0.0.1 (behind https, set it).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::uri::{Scheme, Uri};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use teamkey::axum::management_routes;
use teamkey::{KeyInfo, KeyManager, PageRequest, TeamId, TeamPolicy};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_sessions::cookie::SameSite;
use tower_sessions::{Expiry, Session, SessionManagerLayer};

use crate::app::AppState;
use crate::demo;

mod auth;
mod pages;
mod session_store;
pub(crate) mod throttle;
pub(crate) mod users;

pub(crate) use auth::SessionAdmin;
pub(crate) use session_store::SqlSessionStore;
use throttle::SignInLimits;
pub(crate) use users::{SeededUser, prepare};

/// Where teamkey's management routes are mounted for the page.
pub(crate) const API_BASE: &str = "/dashboard";

/// The session cookie's name.
pub(crate) const SESSION_COOKIE: &str = "gecko_session";

/// Its name over https: browsers keep a `__Host-` cookie only if it is
/// `Secure`, for `Path=/` and without `Domain`, so no sibling domain or
/// plain-http page can set or shadow it.
pub(crate) const SECURE_SESSION_COOKIE: &str = "__Host-gecko_session";

/// How long a session lasts after its last change (sign-in).
const SESSION_LIFETIME: teamkey::time::Duration = teamkey::time::Duration::hours(8);

/// No script or style but the app's own files, no HTML from strings in
/// scripts (Trusted Types), no framing, no plugins, forms and fetches only
/// to this origin.
pub(crate) const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; \
     require-trusted-types-for 'script'";

/// Where and how the page is served.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    /// The origin people open the page at, as browsers send it in
    /// `Origin` (scheme, host, and port unless the default): every
    /// mutation must come from it.
    pub(crate) public_origin: String,
    /// The session cookie only over https, as `__Host-gecko_session`.
    pub(crate) secure_cookies: bool,
}

impl Config {
    /// `PUBLIC_ORIGIN`, by default `http://{addr}` with the address the
    /// server listens on, and `SESSION_COOKIE_SECURE=1` (or `true`).
    pub(crate) fn from_env(addr: &str) -> Result<Self, String> {
        let origin = std::env::var("PUBLIC_ORIGIN")
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| format!("http://{addr}"));
        let secure =
            std::env::var("SESSION_COOKIE_SECURE").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
        Self::new(&origin, secure)
    }

    /// `public_origin` in the form browsers send: lowercase, without a
    /// trailing `/` or the scheme's default port. Anything but an http(s)
    /// origin is refused, since no `Origin` could ever match it.
    pub(crate) fn new(public_origin: &str, secure_cookies: bool) -> Result<Self, String> {
        // The value is not repeated: a refused one may hold a password
        // (`https://user:password@host`).
        let refused = || "PUBLIC_ORIGIN must be an origin: http(s)://host[:port], nothing more".to_owned();
        let uri: Uri = public_origin.parse().map_err(|_| refused())?;
        let (scheme, default_port) = match uri.scheme() {
            Some(s) if *s == Scheme::HTTP => ("http", 80),
            Some(s) if *s == Scheme::HTTPS => ("https", 443),
            _ => return Err(refused()),
        };
        let authority = uri.authority().ok_or_else(refused)?;
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() || authority.as_str().contains('@') {
            return Err(refused());
        }
        let host = authority.host().to_ascii_lowercase();
        let public_origin = match authority.port_u16() {
            Some(port) if port != default_port => format!("{scheme}://{host}:{port}"),
            _ => format!("{scheme}://{host}"),
        };
        Ok(Self {
            public_origin,
            secure_cookies,
        })
    }
}

/// The page's routes, sessions and security headers, to merge beside the
/// API: `app::router(state.clone()).merge(settings::router(state, &config))`.
pub(crate) fn router(state: AppState, config: &Config) -> Router {
    let cookie = if config.secure_cookies {
        SECURE_SESSION_COOKIE
    } else {
        SESSION_COOKIE
    };
    // tower-sessions' defaults are what `__Host-` needs: `Path=/`, no `Domain`.
    let sessions = SessionManagerLayer::new(SqlSessionStore::new(state.db.clone()))
        .with_name(cookie)
        .with_http_only(true)
        .with_same_site(SameSite::Strict)
        .with_secure(config.secure_cookies)
        .with_expiry(Expiry::OnInactivity(SESSION_LIFETIME));
    let public_origin: Arc<str> = config.public_origin.as_str().into();
    Router::new()
        .route("/login", get(auth::login_page).post(auth::sign_in))
        .route("/logout", post(auth::sign_out))
        .route("/settings/api-keys", get(page))
        .route("/settings/api-keys/rows", get(rows))
        // The showcase: teamkey's own routes, with the session's person
        // as the admin instead of an API key.
        .nest(
            API_BASE,
            management_routes::<AppState, SessionAdmin>().layer(middleware::map_response(json_rejections)),
        )
        .layer(sessions)
        .layer(Extension(SignInLimits::new()))
        // The assets need no session.
        .route("/static/settings/api-keys.js", get(script))
        .route("/static/settings/settings.css", get(stylesheet))
        .route("/static/settings/favicon.svg", get(favicon))
        .layer(middleware::from_fn_with_state(
            public_origin,
            same_origin_mutations,
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ))
        // No other site's window keeps a handle on the page, and no other
        // site can load its answers (as an image or script, say).
        .layer(SetResponseHeaderLayer::overriding(
            HeaderName::from_static("cross-origin-opener-policy"),
            HeaderValue::from_static("same-origin"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            HeaderName::from_static("cross-origin-resource-policy"),
            HeaderValue::from_static("same-origin"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        // Not `no-referrer`: under it a browser sends `Origin: null` with
        // a form's POST, which the origin check must refuse.
        .layer(SetResponseHeaderLayer::overriding(
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        ))
        .with_state(state)
}

/// At start: the users and sessions tables, the demo users (printed with
/// their passwords when just made), and an hourly sweep of expired
/// sessions.
pub(crate) async fn start(db: &demo::Db, config: &Config) -> Result<(), Box<dyn std::error::Error>> {
    let seeded = prepare(db).await?;
    announce(&seeded, &config.public_origin);
    tokio::spawn(session_store::delete_expired_hourly(SqlSessionStore::new(
        db.clone(),
    )));
    Ok(())
}

/// Prints where to sign in, and the passwords of users made just now
/// (on stdout, once, like the Quickstart key; never in a log).
fn announce(seeded: &[SeededUser], origin: &str) {
    if seeded.is_empty() {
        println!(
            "\nSettings > API Keys: {origin}/settings/api-keys (demo users' passwords were printed at the first start;\n\
             delete the demo database to make new ones)."
        );
        return;
    }
    println!(
        "\nSettings > API Keys: {origin}/settings/api-keys. Demo users, whose passwords are shown only this once:\n"
    );
    for user in seeded {
        println!(
            "  {:<22} team {:<8} password {}",
            user.email,
            user.team,
            user.password.as_str()
        );
    }
    println!();
}

/// The signed-in person's team's keys, with this instance's pending
/// last-used times written first: someone who just tried a key and opens
/// the page expects to see it used, not up to a minute later.
async fn team_keys(keys: &KeyManager, team: &TeamId) -> Result<Vec<KeyInfo>, teamkey::ManageError> {
    // A failed flush is logged by teamkey and retried later; the list
    // still answers.
    let _ = keys.flush_last_used().await;
    // A plan allows at most 20 keys (`demo::MAX_KEYS`); one page holds 100.
    let page = PageRequest::first(100)?;
    Ok(keys.list_page(team, page).await?.keys)
}

/// What the page shows of a team: its keys and its plan.
async fn page_data(state: &AppState, team: &TeamId) -> Result<(Vec<KeyInfo>, teamkey::TeamRules), Response> {
    let keys = team_keys(&state.keys, team).await.map_err(|e| {
        tracing::warn!(error = %e, "settings page: keys unavailable");
        pages::unavailable()
    })?;
    // The rules teamkey applies, from the same policy.
    let rules = demo::Plans.rules(team).await.map_err(|e| {
        tracing::warn!(error = %e, "settings page: plan unavailable");
        pages::unavailable()
    })?;
    Ok((keys, rules))
}

/// `GET /settings/api-keys`: the page, or a redirect to sign in.
async fn page(session: Session, State(state): State<AppState>) -> Response {
    let user = match auth::current_user(&session, &state.db).await {
        Ok(Some(user)) => user,
        Ok(None) => return Redirect::to("/login").into_response(),
        Err(response) => return response,
    };
    let (keys, rules) = match page_data(&state, &user.team).await {
        Ok(data) => data,
        Err(response) => return response,
    };
    let view = pages::SettingsView {
        email: &user.email,
        team: &user.team,
        plan: demo::Plan::of(&user.team),
        csrf: user.csrf.as_str(),
        rules: &rules,
        keys: &keys,
        now: teamkey::time::OffsetDateTime::now_utc(),
    };
    pages::no_store(StatusCode::OK, pages::settings(&view))
}

/// `GET /settings/api-keys/rows`: the table body alone, for the page's
/// script after a change (one template for both). In a table, since the
/// script parses it as a document, where rows outside one are dropped.
async fn rows(session: Session, State(state): State<AppState>) -> Response {
    let user = match auth::current_user(&session, &state.db).await {
        Ok(Some(user)) => user,
        Ok(None) => return auth::api_error(StatusCode::UNAUTHORIZED, "unauthorized", auth::SIGNED_OUT),
        Err(response) => return response,
    };
    let (keys, rules) = match page_data(&state, &user.team).await {
        Ok(data) => data,
        Err(response) => return response,
    };
    let now = teamkey::time::OffsetDateTime::now_utc();
    pages::no_store(StatusCode::OK, pages::rows_table(&keys, rules.api_access, now))
}

/// Refuses a mutation that another site (or no browser) could have made:
/// the browser's `Sec-Fetch-Site`, when sent, must say `same-origin`, and
/// `Origin` must be the page's public origin. Browsers send `Origin` with
/// every `POST` and `DELETE`; a request without one is refused.
async fn same_origin_mutations(
    State(public_origin): State<Arc<str>>,
    request: Request,
    next: Next,
) -> Response {
    if request.method().is_safe() || is_same_origin(request.headers(), &public_origin) {
        return next.run(request).await;
    }
    tracing::info!(method = %request.method(), path = request.uri().path(), "cross-site request refused");
    auth::api_error(
        StatusCode::FORBIDDEN,
        "cross_site",
        "Cross-site request refused: send it from this site's own pages.",
    )
}

/// Against the configured origin, not `Host`: the client chooses `Host`,
/// and it says nothing of the scheme (an http page must not post to the
/// https site).
fn is_same_origin(headers: &HeaderMap, public_origin: &str) -> bool {
    if let Some(site) = headers.get("sec-fetch-site")
        && site.as_bytes() != b"same-origin"
    {
        return false;
    }
    headers
        .get(header::ORIGIN)
        .is_some_and(|origin| origin.as_bytes() == public_origin.as_bytes())
}

/// axum's own refusals under the management routes (a key id that is not
/// UTF-8 once decoded, a body too large) are plain text; the page's script
/// reads JSON errors, as every other answer there is.
async fn json_rejections(response: Response) -> Response {
    let plain_text = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/plain"));
    if plain_text && response.status().is_client_error() {
        return auth::api_error(
            response.status(),
            "invalid_request",
            "The server could not read this request: reload the page and retry.",
        );
    }
    response
}

/// The page's script, served by the app (no CDN: a browser without the
/// internet runs it too).
async fn script() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("static/api-keys.js"),
    )
}

/// The pages' stylesheet.
async fn stylesheet() -> Response {
    asset("text/css; charset=utf-8", include_str!("static/settings.css"))
}

/// The pages' icon (a key), so that browsers do not ask for a missing
/// `/favicon.ico`.
async fn favicon() -> Response {
    asset("image/svg+xml", include_str!("static/favicon.svg"))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // Revalidated each time: a new build's file is used at once.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}
