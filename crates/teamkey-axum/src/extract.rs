//! The `Authenticated` extractor.

use std::sync::LazyLock;

use axum::extract::{FromRef, FromRequestParts, OptionalFromRequestParts};
use axum::http::request::Parts;
use axum::http::{Extensions, HeaderMap, HeaderName, header};
use teamkey_core::{Eager, HeaderProblem, HeaderRules, KeyManager, Now, Principal, VerifyError};

use crate::AuthRejection;
use crate::context::client_ip;
use crate::limit::{admitted, admitted_earlier, leave_for_layer};

/// The caller, proven by a valid API key. Scope every query by
/// `caller.team_id()`.
///
/// Behind [`RequireApiKey`](crate::RequireApiKey) it takes the
/// principal the layer verified; on its own it verifies the key itself,
/// with the [`KeyManager`] from the state (`KeyManager: FromRef<S>`) and the
/// [`HeaderRules`] set by [`with_rules`](crate::with_rules), or the default
/// rules. `Option<Authenticated>` (or [`MaybeAuthenticated`]) is `None`
/// when no key is presented at all; a presented but bad key is still
/// refused.
///
/// On its own it also enforces the key's rate limit
/// ([`KeyManager::admit`]): over the limit the handler never runs and the
/// client gets the `429`, headers included. An allowed response carries
/// the `RateLimit` headers only under [`AddRateLimitHeaders`](crate::AddRateLimitHeaders)
/// (or a guard): an extractor cannot reach the response. However many
/// extractors a handler has, a request is counted once; behind a guard, the
/// guard counted it.
#[derive(Debug, Clone)]
pub struct Authenticated(pub Principal);

impl Authenticated {
    /// Refuses with 403 unless the key carries `scope`:
    /// `caller.require_scope("scans:write")?;`
    pub fn require_scope(&self, scope: &str) -> Result<(), AuthRejection> {
        if self.0.has_scope(scope) {
            Ok(())
        } else {
            Err(AuthRejection::MissingScope(scope.to_owned()))
        }
    }
}

impl std::ops::Deref for Authenticated {
    type Target = Principal;

    fn deref(&self) -> &Principal {
        &self.0
    }
}

/// The rules when the application sets none.
pub(crate) fn default_rules() -> &'static HeaderRules {
    static DEFAULT_RULES: LazyLock<HeaderRules> = LazyLock::new(HeaderRules::default);
    &DEFAULT_RULES
}

/// The default key header, parsed once: looking a header up by `&str`
/// parses and checks the name on every request.
static DEFAULT_KEY_HEADER: HeaderName = HeaderName::from_static(HeaderRules::DEFAULT_HEADER);

/// Verifies the key in `headers` by `rules`; the client's address (from
/// `extensions`) is looked up only if the manager keeps it.
pub(crate) fn verify<'a>(
    manager: &'a KeyManager,
    rules: &HeaderRules,
    headers: &'a HeaderMap,
    extensions: &Extensions,
) -> Eager<'a, Result<Principal, VerifyError>> {
    let client_ip = if manager.records_client_ips() {
        client_ip(extensions)
    } else {
        None
    };
    let key_header = if rules.header_name() == HeaderRules::DEFAULT_HEADER {
        headers.get_all(&DEFAULT_KEY_HEADER)
    } else {
        headers.get_all(rules.header_name())
    };
    let key_header = key_header.into_iter().map(|v| v.as_bytes());
    // Unread without bearer (`presented` ignores it then): skip the lookup.
    let authorization = rules
        .bearer_allowed()
        .then(|| headers.get_all(header::AUTHORIZATION))
        .into_iter()
        .flatten()
        .map(|v| v.as_bytes());
    manager.verify_headers_from(rules, key_header, authorization, client_ip)
}

/// Why no principal: the key, or its rate limit.
enum Failure {
    Key(VerifyError),
    Refused(AuthRejection),
}

impl From<Failure> for AuthRejection {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Key(error) => error.into(),
            Failure::Refused(refusal) => refusal,
        }
    }
}

/// The principal a guard verified and admitted, or else the key verified
/// and admitted here.
async fn principal<S>(parts: &mut Parts, state: &S) -> Result<Principal, Failure>
where
    KeyManager: FromRef<S>,
{
    if let Some(principal) = parts.extensions.get::<Principal>() {
        return Ok(principal.clone());
    }
    if let Some(principal) = admitted_earlier(&parts.extensions) {
        return Ok(principal);
    }
    if let Some(refusal) = kept_refusal(&parts.extensions) {
        return Err(Failure::Refused(refusal));
    }
    let manager = KeyManager::from_ref(state);
    let rules = parts
        .extensions
        .get::<HeaderRules>()
        .unwrap_or_else(|| default_rules());
    // Whether the verification waited (for the store, as the record was
    // not at hand in a `MemoryStore` or the cache, or for the team's
    // policy): then a later extractor must not wait again, whatever the
    // key's limit.
    let (verified, waited) = match verify(&manager, rules, &parts.headers, &parts.extensions).now() {
        Now::Ready(verified) => (verified, false),
        Now::Waiting(rest) => (rest.await, true),
    };
    let principal = verified.map_err(Failure::Key)?;
    match admitted(manager.admit(&principal).await) {
        // Counted: a later extractor of this request takes this principal
        // rather than count the request again, from the layer's slot if
        // there is one (no allocation), else from the extensions.
        Ok(Some(limit)) => {
            if !leave_for_layer(&parts.extensions, &principal, limit) {
                parts.extensions.insert(principal.clone());
            }
        }
        // A limited key let through without headers (its limiter failing
        // open): kept too, or each later extractor would ask the failing
        // limiter again; and a key whose verification waited, or each later
        // extractor would wait again. A key without a limit verified
        // from memory is not kept: verifying it again costs less than
        // keeping it costs every request with one extractor.
        Ok(None) if waited || principal.rate_limit().is_some() => {
            parts.extensions.insert(principal.clone());
        }
        Ok(None) => {}
        // The same answer from every later extractor and guard of the
        // request, even when this one's error is swallowed
        // (`Result<Authenticated, _>`, a middleware's `.ok()`): never a
        // second verification, nor a second question to the limiter.
        Err(refusal) => {
            parts.extensions.insert(Refused(refusal.clone()));
            return Err(Failure::Refused(refusal));
        }
    }
    Ok(principal)
}

/// A rate-limit refusal (the 429, or a 503 from a limiter failing closed)
/// kept in the request by the extractor that got it.
#[derive(Clone)]
struct Refused(AuthRejection);

/// The rate-limit refusal an earlier extractor of this request got.
pub(crate) fn kept_refusal(extensions: &Extensions) -> Option<AuthRejection> {
    extensions
        .get::<Refused>()
        .map(|Refused(refusal)| refusal.clone())
}

impl<S> FromRequestParts<S> for Authenticated
where
    S: Send + Sync,
    KeyManager: FromRef<S>,
{
    type Rejection = AuthRejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(principal(parts, state).await?))
    }
}

impl<S> OptionalFromRequestParts<S> for Authenticated
where
    S: Send + Sync,
    KeyManager: FromRef<S>,
{
    type Rejection = AuthRejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Option<Self>, Self::Rejection> {
        match principal(parts, state).await {
            Ok(principal) => Ok(Some(Self(principal))),
            Err(Failure::Key(VerifyError::Header(HeaderProblem::Missing))) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

/// Optional auth: `None` when no key is presented at all, the caller for a
/// valid key, and still a 401 for a bad one.
///
/// On axum this is the same as `Option<Authenticated>`, which works too. It
/// exists so that both adapters have it under one name: actix-web has its
/// own `Option<T>` extractor for every `T`, which turns any error into
/// `None` (a bad key would pass as anonymous), so the actix adapter cannot
/// use `Option<Authenticated>` and has only this.
///
/// ```
/// use teamkey_axum::MaybeAuthenticated;
///
/// async fn greet(MaybeAuthenticated(caller): MaybeAuthenticated) -> String {
///     match caller {
///         Some(caller) => format!("hello, {}", caller.team_id()),
///         None => "hello, stranger".to_owned(),
///     }
/// }
/// # let _ = greet;
/// ```
#[derive(Debug, Clone)]
pub struct MaybeAuthenticated(pub Option<Authenticated>);

impl<S> FromRequestParts<S> for MaybeAuthenticated
where
    S: Send + Sync,
    KeyManager: FromRef<S>,
{
    type Rejection = AuthRejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let caller = <Authenticated as OptionalFromRequestParts<S>>::from_request_parts(parts, state).await?;
        Ok(Self(caller))
    }
}
