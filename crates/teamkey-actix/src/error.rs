//! `AuthRejection`: how a refused request is answered.

use std::borrow::Cow;
use std::fmt;

use actix_web::http::StatusCode;
use actix_web::http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use teamkey_core::{Answer, Rejection, VerifyError};

/// Why a request was refused, answered exactly as the axum adapter does:
/// every key failure is the same 401 byte for byte, a store or team-policy
/// failure 503 (never a 500), a missing scope 403, a valid key of a team
/// whose plan has no API access 403 `plan_required`, and teamkey set up
/// without a [`KeyManager`](teamkey_core::KeyManager) 500.
///
/// The axum adapter's rejection has the same name and variants. actix
/// calls these "errors" (`ResponseError`), axum "rejections"; teamkey uses
/// one name in both so that code and docs read the same in either.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthRejection {
    /// Missing, malformed, unknown, wrong, revoked or expired key: 401.
    Unauthorized,
    /// The key store or the team policy is down, or the rate limiter is
    /// and the manager fails closed: 503.
    Unavailable,
    /// A valid key of a team whose plan has no API access: 403 with
    /// `"error": "plan_required"` (see `TeamPolicy`).
    NoApiAccess,
    /// A valid key without the scope the route needs: 403.
    MissingScope(String),
    /// No [`KeyManager`](teamkey_core::KeyManager) to check keys with: 500.
    /// A bug of the application, logged with its fix; not a 503, since
    /// retrying cannot help, and not a 401, since the key may be fine.
    Misconfigured,
    /// A valid key over its rate limit: the core's `429` (a problem body of
    /// type `quota-exceeded`, `Retry-After`, `RateLimit-Policy` and
    /// `RateLimit`), as `KeyManager::admit` made it.
    RateLimited(Answer),
}

/// The 0.1 name of [`AuthRejection`].
#[deprecated(
    since = "0.2.0",
    note = "renamed to `AuthRejection`, the name both adapters use"
)]
pub type AuthError = AuthRejection;

impl AuthRejection {
    /// What the core's [`Admission::Refused`](teamkey_core::Admission::Refused)
    /// answer stands for: a limiter down and failing closed is the one
    /// "retry later" of a store that is down; anything else is the 429.
    pub(crate) fn refused(answer: Answer) -> Self {
        if answer.status == 503 {
            Self::Unavailable
        } else {
            Self::RateLimited(answer)
        }
    }

    fn answer(&self) -> Cow<'_, Answer> {
        Cow::Owned(match self {
            Self::Unauthorized => Answer::unauthorized(),
            Self::Unavailable => Answer::unavailable(),
            Self::NoApiAccess => Answer::no_api_access(),
            Self::MissingScope(scope) => Answer::missing_scope(scope),
            Self::Misconfigured => Answer::misconfigured(),
            Self::RateLimited(answer) => return Cow::Borrowed(answer),
        })
    }
}

impl From<VerifyError> for AuthRejection {
    fn from(error: VerifyError) -> Self {
        match error.rejection() {
            Rejection::Unauthorized => Self::Unauthorized,
            Rejection::NoApiAccess => Self::NoApiAccess,
            // Unavailable, and any later kind: never a pass.
            _ => Self::Unavailable,
        }
    }
}

impl fmt::Display for AuthRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unauthorized => f.write_str("unauthorized"),
            Self::Unavailable => f.write_str("API keys cannot be checked"),
            Self::NoApiAccess => f.write_str("the team's plan has no API access"),
            Self::MissingScope(scope) => write!(f, "missing scope {scope}"),
            Self::Misconfigured => f.write_str("teamkey has no KeyManager"),
            Self::RateLimited(_) => f.write_str("over the key's rate limit"),
        }
    }
}

impl ResponseError for AuthRejection {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.answer().status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE)
    }

    fn error_response(&self) -> HttpResponse {
        render(&self.answer())
    }
}

/// An [`Answer`], exactly: status, content type, its headers and body.
/// The axum adapter renders the same bytes.
pub(crate) fn render(answer: &Answer) -> HttpResponse {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let mut response = HttpResponse::build(status);
    response.insert_header((CONTENT_TYPE, HeaderValue::from_static(answer.content_type)));
    for (name, value) in answer.headers {
        response.insert_header((HeaderName::from_static(name), HeaderValue::from_static(value)));
    }
    for (name, value) in &answer.varying_headers {
        // Numbers and quoted tokens: always a valid value; never a panic.
        if let Ok(value) = HeaderValue::from_str(value) {
            response.insert_header((HeaderName::from_static(name), value));
        }
    }
    response.body(answer.body.clone().into_owned())
}
