//! What an HTTP adapter answers when it refuses a request, as plain data:
//! every adapter renders these same bytes, so clients cannot tell adapters,
//! or key failures, apart.

use std::borrow::Cow;

use crate::error::{Rejection, VerifyError};
use crate::rate_limit::{RateDecision, RateLimit, RateLimitHeaders, header_seconds};

/// A refusal: status, headers and a JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Answer {
    /// HTTP status code.
    pub status: u16,
    /// The body's `Content-Type`: `application/json`, or
    /// `application/problem+json` for a `429`.
    pub content_type: &'static str,
    /// Headers besides the content type.
    pub headers: &'static [(&'static str, &'static str)],
    /// Headers whose values vary (a `429`'s `Retry-After` and `RateLimit`
    /// headers); empty, without allocating, for every other answer.
    pub varying_headers: Vec<(&'static str, String)>,
    /// The JSON body.
    pub body: Cow<'static, str>,
}

const JSON: &str = "application/json";

const NO_STORE: (&str, &str) = ("cache-control", "no-store");

impl Answer {
    /// Any key failure: missing, malformed, unknown, wrong, revoked, expired.
    pub fn unauthorized() -> Self {
        Self {
            status: 401,
            content_type: JSON,
            varying_headers: Vec::new(),
            headers: &[("www-authenticate", "ApiKey"), NO_STORE],
            body: Cow::Borrowed(r#"{"error":"unauthorized","message":"A valid API key is required."}"#),
        }
    }

    /// The key could not be checked: the store is down.
    pub fn unavailable() -> Self {
        Self {
            status: 503,
            content_type: JSON,
            varying_headers: Vec::new(),
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
            content_type: JSON,
            varying_headers: Vec::new(),
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
            content_type: JSON,
            varying_headers: Vec::new(),
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
            content_type: JSON,
            varying_headers: Vec::new(),
            headers: &[NO_STORE],
            body: Cow::Borrowed(
                r#"{"error":"plan_required","message":"This API key is valid, but your team's plan does not include API access. Upgrade the plan to use the API."}"#,
            ),
        }
    }

    /// Over the rate limit: `429` with `Retry-After`, the `RateLimit`
    /// headers and a problem body (RFC 9457) of type `quota-exceeded`.
    pub fn rate_limited(limit: RateLimit, decision: &RateDecision) -> Self {
        let retry_after = header_seconds(decision.retry_after).max(1);
        let mut varying_headers = vec![("retry-after", retry_after.to_string())];
        varying_headers.extend(RateLimitHeaders::new(limit, decision).iter());
        Self {
            status: 429,
            content_type: "application/problem+json",
            headers: &[NO_STORE],
            varying_headers,
            body: Cow::Owned(format!(
                r#"{{"type":"https://iana.org/assignments/http-problem-types#quota-exceeded","title":"Too Many Requests","status":429,"detail":"This API key is over its rate limit of {} per {}; retry after {}.","error":"rate_limited"}}"#,
                count(u64::from(limit.requests()), "request"),
                match limit.window_seconds() {
                    1 => "second".to_owned(),
                    n => format!("{n} seconds"),
                },
                count(retry_after, "second"),
            )),
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

/// `1 request`, `5 requests`.
fn count(n: u64, unit: &str) -> String {
    if n == 1 {
        format!("1 {unit}")
    } else {
        format!("{n} {unit}s")
    }
}
