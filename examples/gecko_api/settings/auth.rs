//! Signing in and out, the signed-in person, and [`SessionAdmin`]: that
//! person as teamkey's `KeyAdmin`.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::rejection::FormRejection;
use axum::extract::{ConnectInfo, FromRef, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form, Json};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use teamkey::axum::ClientIp;
use teamkey::events::Actor;
use teamkey::management::KeyAdmin;
use teamkey::{Authority, TeamId};
use tower_sessions::Session;

use super::throttle::SignInLimits;
use super::{pages, users};
use crate::demo::Db;

/// The session's entry for a signed-in person.
const USER: &str = "user";

/// The header that carries the CSRF token on the page's `fetch` calls.
pub(crate) const CSRF_HEADER: &str = "x-csrf-token";

/// What every sign-in refused by the limits reads.
const TOO_MANY_ATTEMPTS: &str = "Too many sign-in attempts: retry later.";

/// What a management call without a session answers.
pub(crate) const SIGNED_OUT: &str = "Your session has ended: sign in again.";

/// What the session keeps: who signed in, and the token every mutation
/// must carry. Never a password or a key.
#[derive(Serialize, Deserialize)]
struct SignedIn {
    email: String,
    csrf: String,
}

/// The signed-in person, as checked on this request.
pub(crate) struct CurrentUser {
    pub(crate) email: String,
    pub(crate) team: TeamId,
    pub(crate) csrf: Csrf,
}

/// A session's CSRF token; `Debug` hides it.
pub(crate) struct Csrf(String);

impl Csrf {
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `presented` is this token, in constant time.
    fn matches(&self, presented: Option<&[u8]>) -> bool {
        presented.is_some_and(|p| bool::from(self.0.as_bytes().ct_eq(p)))
    }
}

impl std::fmt::Debug for Csrf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Csrf(..)")
    }
}

/// The session's person, if signed in and still a user (checked against
/// the users table on each request, which also gives their team). A
/// failing store is a 503 page.
pub(crate) async fn current_user(session: &Session, db: &Db) -> Result<Option<CurrentUser>, Response> {
    let signed_in: Option<SignedIn> = match session.get(USER).await {
        Ok(signed_in) => signed_in,
        // A session of another shape (an older version of the demo): not
        // signed in, rather than stuck on an error until it expires.
        Err(tower_sessions::session::Error::SerdeJson(_)) => None,
        Err(e) => {
            tracing::warn!(error = %e, "session store unavailable");
            return Err(pages::unavailable());
        }
    };
    let Some(signed_in) = signed_in else {
        return Ok(None);
    };
    let team = users::team_of(db, &signed_in.email).await.map_err(|e| {
        tracing::warn!(error = %e, "users table unavailable");
        pages::unavailable()
    })?;
    Ok(team.map(|team| CurrentUser {
        email: signed_in.email,
        team,
        csrf: Csrf(signed_in.csrf),
    }))
}

/// A JSON error in the management API's shape, `{"error", "message"}`,
/// never cached.
pub(crate) fn api_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        [(header::CACHE_CONTROL, "no-store")],
        Json(serde_json::json!({ "error": code, "message": message })),
    )
        .into_response()
}

/// The signed-in person as teamkey's admin: their team, every scope of it
/// (`Authority::whole_team`), and their email in the audit trail. Extracted
/// from the session; a mutation must also carry the session's CSRF token
/// in `X-CSRF-Token`.
#[derive(Debug, Clone)]
pub(crate) struct SessionAdmin {
    team: TeamId,
    email: String,
}

impl KeyAdmin for SessionAdmin {
    fn team_id(&self) -> &TeamId {
        &self.team
    }

    // A team owner may grant every scope of their team (the plan still
    // limits what the team may have).
    fn authority(&self) -> Authority {
        Authority::whole_team()
    }

    fn actor(&self) -> Actor {
        Actor::user(&self.email)
    }
}

impl<S> FromRequestParts<S> for SessionAdmin
where
    S: Send + Sync,
    Db: FromRef<S>,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let session = Session::from_request_parts(parts, state).await.map_err(|_| {
            api_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Sessions are not set up.",
            )
        })?;
        let db = Db::from_ref(state);
        let user = current_user(&session, &db)
            .await
            .map_err(|_| {
                api_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "Sign-in cannot be checked right now; retry later.",
                )
            })?
            .ok_or_else(|| api_error(StatusCode::UNAUTHORIZED, "unauthorized", SIGNED_OUT))?;
        if !parts.method.is_safe() {
            let presented = parts.headers.get(CSRF_HEADER).map(|v| v.as_bytes());
            if !user.csrf.matches(presented) {
                tracing::info!(method = %parts.method, path = parts.uri.path(), "CSRF token missing or wrong");
                return Err(api_error(
                    StatusCode::FORBIDDEN,
                    "csrf_failed",
                    "This request lacks the page's security token: reload the page and retry.",
                ));
            }
        }
        Ok(Self {
            team: user.team,
            email: user.email,
        })
    }
}

/// `GET /login`: the form, or the page if already signed in.
pub(crate) async fn login_page(session: Session, State(db): State<Db>) -> Response {
    match current_user(&session, &db).await {
        Ok(Some(_)) => Redirect::to("/settings/api-keys").into_response(),
        Ok(None) => pages::no_store(StatusCode::OK, pages::login("", None)),
        Err(response) => response,
    }
}

/// The sign-in form. No `Debug`: it holds a password.
#[derive(Deserialize)]
pub(crate) struct LoginForm {
    email: String,
    password: String,
}

/// `POST /login`: checks the password, within the [`SignInLimits`]; on
/// success, a new session id (the one the browser had before signing in
/// is dropped, against session fixation), then the page.
pub(crate) async fn sign_in(
    session: Session,
    State(db): State<Db>,
    Extension(limits): Extension<SignInLimits>,
    app_ip: Option<Extension<ClientIp>>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Response {
    let Ok(Form(LoginForm { email, password })) = form else {
        return pages::no_store(
            StatusCode::UNPROCESSABLE_ENTITY,
            pages::login("", Some("Enter your email and your password.")),
        );
    };
    let email = users::normalize_email(&email);
    // As teamkey takes it: the app's `ClientIp`, else the peer's. Served
    // without either, only the email is counted.
    let client = app_ip
        .map(|Extension(ClientIp(ip))| ip)
        .or_else(|| peer.map(|Extension(ConnectInfo(addr))| addr.ip()));
    let permit = match limits.admit(&email, client) {
        Ok(permit) => permit,
        Err(wait) => {
            tracing::info!("sign-in refused: too many attempts");
            return too_many_attempts(&email, wait);
        }
    };
    let team = match users::check_password(&db, &email, password, permit).await {
        Ok(team) => team,
        Err(e) => {
            tracing::warn!(error = %e, "users table unavailable");
            return pages::unavailable();
        }
    };
    let Some(team) = team else {
        limits.failed(&email, client);
        // Neither the email (it may be a mistyped password) nor the
        // password is logged.
        tracing::info!("sign-in refused: wrong email or password");
        return pages::no_store(
            StatusCode::UNPROCESSABLE_ENTITY,
            pages::login(&email, Some("Wrong email or password.")),
        );
    };
    limits.succeeded(&email);
    let Ok(csrf) = users::random_token() else {
        return pages::unavailable();
    };
    let signed_in = SignedIn {
        email: email.clone(),
        csrf,
    };
    if let Err(e) = session.cycle_id().await {
        tracing::warn!(error = %e, "session store unavailable");
        return pages::unavailable();
    }
    if let Err(e) = session.insert(USER, signed_in).await {
        tracing::warn!(error = %e, "session store unavailable");
        return pages::unavailable();
    }
    tracing::info!(user = %email, team = %team, "signed in");
    Redirect::to("/settings/api-keys").into_response()
}

/// A 429 that reads the same whichever limit refused: it tells neither
/// whether the email has an account nor which limit it hit.
fn too_many_attempts(email: &str, wait: Duration) -> Response {
    let mut response = pages::no_store(
        StatusCode::TOO_MANY_REQUESTS,
        pages::login(email, Some(TOO_MANY_ATTEMPTS)),
    );
    // Whole seconds, rounded up: a retry any sooner is refused again.
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
    response
}

/// The sign-out form's token.
#[derive(Deserialize)]
pub(crate) struct LogoutForm {
    csrf_token: String,
}

/// `POST /logout`: deletes the session (row and cookie).
pub(crate) async fn sign_out(
    session: Session,
    State(db): State<Db>,
    form: Result<Form<LogoutForm>, FormRejection>,
) -> Response {
    let user = match current_user(&session, &db).await {
        Ok(Some(user)) => user,
        Ok(None) => return Redirect::to("/login").into_response(),
        Err(response) => return response,
    };
    let presented = form.as_ref().ok().map(|Form(f)| f.csrf_token.as_bytes());
    if !user.csrf.matches(presented) {
        tracing::info!("sign-out refused: CSRF token missing or wrong");
        return api_error(
            StatusCode::FORBIDDEN,
            "csrf_failed",
            "This request lacks the page's security token: reload the page and retry.",
        );
    }
    if let Err(e) = session.flush().await {
        tracing::warn!(error = %e, "session store unavailable");
        return pages::unavailable();
    }
    tracing::info!(user = %user.email, "signed out");
    Redirect::to("/login").into_response()
}
