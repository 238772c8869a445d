//! `AuthRejection`: how a refused request is answered.

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
    /// The key store or the team policy is down: 503. Never a pass, never
    /// a 401.
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
}

impl AuthRejection {
    fn answer(&self) -> Answer {
        match self {
            Self::Unauthorized => Answer::unauthorized(),
            Self::Unavailable => Answer::unavailable(),
            Self::NoApiAccess => Answer::no_api_access(),
            Self::MissingScope(scope) => Answer::missing_scope(scope),
            Self::Misconfigured => Answer::misconfigured(),
        }
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.answer().status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The JSON body.
    pub fn body_text(&self) -> String {
        self.answer().body.into_owned()
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

impl IntoResponse for AuthRejection {
    fn into_response(self) -> Response {
        let answer = self.answer();
        let mut response = (self.status(), answer.body.into_owned()).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (name, value) in answer.headers {
            headers.insert(HeaderName::from_static(name), HeaderValue::from_static(value));
        }
        response
    }
}
