//! Reading the presented key out of HTTP header values. Framework-free:
//! adapters hand in raw header bytes, so every adapter applies the same
//! rules the same way.

use crate::error::HeaderProblem;

/// Where a request may carry its key, and how much of it to read.
///
/// Default: the `X-API-Key` header only, at most 256 bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderRules {
    header: String,
    bearer: bool,
    max_len: usize,
}

impl Default for HeaderRules {
    fn default() -> Self {
        Self {
            header: Self::DEFAULT_HEADER.to_owned(),
            bearer: false,
            max_len: Self::DEFAULT_MAX_LEN,
        }
    }
}

impl HeaderRules {
    /// The key header unless configured otherwise (header names are
    /// case-insensitive; they are kept lowercase).
    pub const DEFAULT_HEADER: &'static str = "x-api-key";
    /// The length cap unless configured otherwise: above any key teamkey makes.
    pub const DEFAULT_MAX_LEN: usize = 256;

    /// The default rules.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads the key from header `name` instead of `X-API-Key`. `None` if
    /// `name` is not a valid header name (1 to 64 of `A-Za-z0-9-_`).
    pub fn header(mut self, name: &str) -> Option<Self> {
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        valid.then(|| {
            self.header = name.to_ascii_lowercase();
            self
        })
    }

    /// Also accepts `Authorization: Bearer <key>` (off by default). A key in
    /// both headers is refused.
    pub fn allow_bearer(mut self, allow: bool) -> Self {
        self.bearer = allow;
        self
    }

    /// Refuses header values longer than `max_len` bytes before anything
    /// else is done with them.
    pub fn max_len(mut self, max_len: usize) -> Self {
        self.max_len = max_len;
        self
    }

    /// The key header's name, lowercase.
    pub fn header_name(&self) -> &str {
        &self.header
    }

    /// Whether `Authorization: Bearer` is read.
    pub fn bearer_allowed(&self) -> bool {
        self.bearer
    }

    /// The one presented key, from all values of the key header and of
    /// `Authorization`. Exactly one key must be present; it must be 1 to
    /// `max_len` bytes of visible ASCII.
    pub fn presented<'a>(
        &self,
        key_header: impl IntoIterator<Item = &'a [u8]>,
        authorization: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<&'a str, HeaderProblem> {
        let value = self.presented_bytes(key_header, authorization)?;
        std::str::from_utf8(value).map_err(|_| HeaderProblem::NotVisibleAscii)
    }

    /// [`presented`](Self::presented), as the bytes (visible ASCII) that
    /// verification reads: no UTF-8 check.
    pub(crate) fn presented_bytes<'a>(
        &self,
        key_header: impl IntoIterator<Item = &'a [u8]>,
        authorization: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<&'a [u8], HeaderProblem> {
        let from_header = single(key_header.into_iter())?;
        let from_bearer = if self.bearer {
            single(authorization.into_iter().filter_map(bearer_token))?
        } else {
            None
        };
        let value = match (from_header, from_bearer) {
            (Some(_), Some(_)) => return Err(HeaderProblem::Ambiguous),
            (Some(v), None) | (None, Some(v)) => v,
            (None, None) => return Err(HeaderProblem::Missing),
        };
        if value.len() > self.max_len {
            return Err(HeaderProblem::TooLong);
        }
        if value.is_empty() {
            return Err(HeaderProblem::Empty);
        }
        // No early exit: the fold compiles to SIMD compares (as in
        // KeyFormat::parse); the byte loop cost ~400 instructions a key.
        if !value.iter().fold(true, |ok, b| ok & matches!(b, 0x21..=0x7e)) {
            return Err(HeaderProblem::NotVisibleAscii);
        }
        Ok(value)
    }
}

/// The only item, `None` if there is none; two or more is a problem.
fn single<'a>(mut values: impl Iterator<Item = &'a [u8]>) -> Result<Option<&'a [u8]>, HeaderProblem> {
    let first = values.next();
    if values.next().is_some() {
        return Err(HeaderProblem::Duplicate);
    }
    Ok(first)
}

/// The token of `Bearer <token>` (scheme case-insensitive), else `None`.
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let (scheme, token) = value.split_at_checked(7)?;
    scheme.eq_ignore_ascii_case(b"bearer ").then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"tk_live_abc";

    fn none() -> std::iter::Empty<&'static [u8]> {
        std::iter::empty()
    }

    #[test]
    fn exactly_one_visible_ascii_value() {
        let rules = HeaderRules::new();
        assert_eq!(rules.presented([KEY], none()), Ok("tk_live_abc"));
        assert_eq!(rules.presented(none(), none()), Err(HeaderProblem::Missing));
        assert_eq!(rules.presented([KEY, KEY], none()), Err(HeaderProblem::Duplicate));
        assert_eq!(rules.presented([&b""[..]], none()), Err(HeaderProblem::Empty));
        assert_eq!(
            rules.presented([&b" tk_live_abc"[..]], none()),
            Err(HeaderProblem::NotVisibleAscii)
        );
        assert_eq!(
            rules.presented([&b"tk\x7flive"[..]], none()),
            Err(HeaderProblem::NotVisibleAscii)
        );
        assert_eq!(
            rules.presented(["tk_lïve".as_bytes()], none()),
            Err(HeaderProblem::NotVisibleAscii)
        );
        let long = vec![b'a'; 10 * 1024];
        assert_eq!(rules.presented([&long[..]], none()), Err(HeaderProblem::TooLong));
    }

    #[test]
    fn bearer_only_when_allowed_and_never_with_the_header() {
        let bearer: &[u8] = b"Bearer tk_live_abc";
        assert_eq!(
            HeaderRules::new().presented(none(), [bearer]),
            Err(HeaderProblem::Missing)
        );
        let rules = HeaderRules::new().allow_bearer(true);
        assert_eq!(rules.presented(none(), [bearer]), Ok("tk_live_abc"));
        assert_eq!(
            rules.presented(none(), [&b"bEaReR tk_live_abc"[..]]),
            Ok("tk_live_abc")
        );
        assert_eq!(
            rules.presented(none(), [&b"Basic dXNlcg=="[..]]),
            Err(HeaderProblem::Missing)
        );
        assert_eq!(rules.presented([KEY], [bearer]), Err(HeaderProblem::Ambiguous));
        assert_eq!(
            rules.presented(none(), [bearer, bearer]),
            Err(HeaderProblem::Duplicate)
        );
        assert_eq!(
            rules.presented(none(), [&b"Bearer "[..]]),
            Err(HeaderProblem::Empty)
        );
    }

    #[test]
    fn header_names_are_checked_and_lowercased() {
        assert_eq!(
            HeaderRules::new().header("X-Team-Key").unwrap().header_name(),
            "x-team-key"
        );
        assert!(HeaderRules::new().header("bad header").is_none());
        assert!(HeaderRules::new().header("").is_none());
    }
}
