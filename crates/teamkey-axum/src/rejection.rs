//! `AuthRejection`: how a refused request is answered.

use std::borrow::Cow;

use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use teamkey_core::{Answer, Rejection, VerifyError};

/// Why a request was refused. Every key failure renders the same 401
/// (status, headers and body, byte for byte); the precise reason was
/// already logged by the core, with the key id only.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthRejection {
    /// Missing, malformed, unknown, wrong, revoked or expired key: 401.
    Unauthorized,
    /// The key store or the team policy is down, or the rate limiter is
    /// and the manager fails closed: 503. Never a pass, never a 401.
    Unavailable,
    /// A valid key of a team whose plan has no API access: 403 with
    /// `"error": "plan_required"` (see `TeamPolicy`).
    NoApiAccess,
    /// A valid key without the scope the route needs: 403.
    MissingScope(String),
    /// The guards are set up wrongly, so no key can be checked: 500. A bug
    /// of the application, logged with its fix; never a 401, which would
    /// blame a caller whose key may be fine.
    Misconfigured,
    /// A valid key over its rate limit: the core's `429` (a problem body of
    /// type `quota-exceeded`, `Retry-After`, `RateLimit-Policy` and
    /// `RateLimit`), as `KeyManager::admit` made it.
    RateLimited(Answer),
}

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

    /// The status code.
    pub fn status(&self) -> StatusCode {
        status_of(&self.answer())
    }

    /// The JSON body.
    pub fn body_text(&self) -> String {
        self.answer().body.clone().into_owned()
    }
}

fn status_of(answer: &Answer) -> StatusCode {
    StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
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

impl IntoResponse for AuthRejection {
    fn into_response(self) -> Response {
        match self {
            Self::RateLimited(answer) => render(answer),
            other => render(other.answer().into_owned()),
        }
    }
}

/// An [`Answer`], exactly: status, content type, its headers and body.
/// The actix adapter renders the same bytes.
pub(crate) fn render(answer: Answer) -> Response {
    let status = status_of(&answer);
    let mut response = (status, answer.body.into_owned()).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(answer.content_type),
    );
    for (name, value) in answer.headers {
        headers.insert(HeaderName::from_static(name), HeaderValue::from_static(value));
    }
    for (name, value) in answer.varying_headers {
        // Numbers and quoted tokens: always a valid value; never a panic.
        if let Ok(value) = HeaderValue::try_from(value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
    response
}
