//! What an HTTP adapter answers when it refuses a request, as plain data:
//! every adapter renders these same bytes, so clients cannot tell adapters,
//! or key failures, apart.

use std::borrow::Cow;

use crate::error::{Rejection, VerifyError};

/// A refusal: status, headers and a JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// HTTP status code.
    pub status: u16,
    /// Headers besides `Content-Type: application/json`.
    pub headers: &'static [(&'static str, &'static str)],
    /// The JSON body.
    pub body: Cow<'static, str>,
}

const NO_STORE: (&str, &str) = ("cache-control", "no-store");

impl Answer {
    /// Any key failure: missing, malformed, unknown, wrong, revoked, expired.
    pub fn unauthorized() -> Self {
        Self {
            status: 401,
            headers: &[("www-authenticate", "ApiKey"), NO_STORE],
            body: Cow::Borrowed(r#"{"error":"unauthorized","message":"A valid API key is required."}"#),
        }
    }

    /// The key could not be checked: the store is down.
    pub fn unavailable() -> Self {
        Self {
            status: 503,
            headers: &[("retry-after", "5"), NO_STORE],
            body: Cow::Borrowed(
                r#"{"error":"unavailable","message":"API keys cannot be checked right now; retry later."}"#,
            ),
        }
    }

    /// The application's guards are set up wrongly (no `KeyManager` to
    /// check keys with): a 500, since retrying cannot help and the key may
    /// be fine. The body is generic; the fix is in the server's error log.
    pub fn misconfigured() -> Self {
        Self {
            status: 500,
            headers: &[NO_STORE],
            body: Cow::Borrowed(r#"{"error":"internal","message":"Internal server error."}"#),
        }
    }

    /// A valid key without the scope the route needs.
    pub fn missing_scope(scope: &str) -> Self {
        // Scopes are `[A-Za-z0-9:._-]` (see `Scope`); anything else is
        // dropped, so the body is valid JSON whatever a caller passes.
        let scope: String = scope
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '.' | '_' | '-'))
            .collect();
        Self {
            status: 403,
            headers: &[NO_STORE],
            body: Cow::Owned(format!(
                r#"{{"error":"forbidden","message":"This API key lacks the scope this request needs.","required_scope":"{scope}"}}"#
            )),
        }
    }

    /// A valid key of a team whose plan does not include API access
    /// ([`TeamPolicy`](crate::TeamPolicy)): "the key is fine, the plan is not".
    pub fn no_api_access() -> Self {
        Self {
            status: 403,
            headers: &[NO_STORE],
            body: Cow::Borrowed(
                r#"{"error":"plan_required","message":"This API key is valid, but your team's plan does not include API access. Upgrade the plan to use the API."}"#,
            ),
        }
    }

    /// The answer for a failed verification.
    pub fn for_error(error: &VerifyError) -> Self {
        match error.rejection() {
            Rejection::Unauthorized => Self::unauthorized(),
            Rejection::NoApiAccess => Self::no_api_access(),
            // Unavailable, and any later kind: never a pass.
            _ => Self::unavailable(),
        }
    }
}
