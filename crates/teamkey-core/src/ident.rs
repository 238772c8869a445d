//! Validated identifiers and labels: team ids, key ids, key names and scopes.
//!
//! Each type checks its input once, at construction, so the rest of the
//! crate (and every store) can trust it. The string-backed ones hold an
//! `Arc<str>`: a verification clones them into the [`Principal`](crate::Principal)
//! and that must stay an atomic increment, not an allocation.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::ValidationError;

/// Longest team id, in characters.
pub const MAX_TEAM_ID_CHARS: usize = 128;
/// Longest key name, in characters (after trimming).
pub const MAX_NAME_CHARS: usize = 100;
/// Longest scope, in characters.
pub const MAX_SCOPE_CHARS: usize = 64;
/// Most scopes one key may carry.
pub const MAX_SCOPES: usize = 32;
/// Length of a [`KeyId`], in characters.
pub const KEY_ID_LEN: usize = 12;

/// Characters that change how text reads without being seen: controls,
/// every format character (Unicode general category Cf: bidirectional
/// overrides and isolates, the "Trojan Source" set of CVE-2021-42574,
/// zero-width characters, the soft hyphen, the byte-order mark, tag
/// characters that hide text), and line and paragraph separators. A name or
/// team id holding one could pass for another in a key table or a log.
pub(crate) fn is_hidden(c: char) -> bool {
    use unicode_properties::{GeneralCategory, UnicodeGeneralCategory as _};
    c.is_control()
        || matches!(
            c.general_category(),
            GeneralCategory::Format | GeneralCategory::LineSeparator | GeneralCategory::ParagraphSeparator
        )
}

/// The team (tenant) a key belongs to; every answer is scoped to it.
///
/// 1 to 128 characters, no control characters, no surrounding whitespace:
/// an identifier must mean exactly what it says.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TeamId(Arc<str>);

impl TeamId {
    /// Checks and wraps a team id.
    ///
    /// ```
    /// use teamkey_core::TeamId;
    /// assert_eq!(TeamId::new("acme").unwrap().as_str(), "acme");
    /// assert!(TeamId::new("").is_err());
    /// assert!(TeamId::new(" acme").is_err());
    /// ```
    pub fn new(id: impl AsRef<str>) -> Result<Self, ValidationError> {
        let id = id.as_ref();
        if id.is_empty() {
            return Err(ValidationError::EmptyTeam);
        }
        if id.chars().count() > MAX_TEAM_ID_CHARS {
            return Err(ValidationError::TeamTooLong {
                max: MAX_TEAM_ID_CHARS,
            });
        }
        if id.chars().any(is_hidden) {
            return Err(ValidationError::TeamControlCharacter);
        }
        if id.trim() != id {
            return Err(ValidationError::TeamWhitespace);
        }
        Ok(Self(id.into()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A key's descriptive name, such as `CI/CD Pipeline` or `Production`.
///
/// Trimmed, then 1 to 100 characters with no control characters.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct KeyName(Arc<str>);

impl KeyName {
    /// Trims, checks and wraps a name.
    ///
    /// ```
    /// use teamkey_core::KeyName;
    /// assert_eq!(KeyName::new("  Production ").unwrap().as_str(), "Production");
    /// assert!(KeyName::new("   ").is_err());
    /// assert!(KeyName::new("a\nb").is_err());
    /// ```
    pub fn new(name: impl AsRef<str>) -> Result<Self, ValidationError> {
        let name = name.as_ref().trim();
        if name.is_empty() {
            return Err(ValidationError::EmptyName);
        }
        if name.chars().count() > MAX_NAME_CHARS {
            return Err(ValidationError::NameTooLong { max: MAX_NAME_CHARS });
        }
        if name.chars().any(is_hidden) {
            return Err(ValidationError::NameControlCharacter);
        }
        Ok(Self(name.into()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A permission carried by a key, such as `scans:read` or `keys:manage`.
///
/// 1 to 64 characters from `A-Z a-z 0-9 : . _ -`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope(Arc<str>);

impl Scope {
    /// Checks and wraps a scope.
    pub fn new(scope: impl AsRef<str>) -> Result<Self, ValidationError> {
        let scope = scope.as_ref();
        let valid_char = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b':' | b'.' | b'_' | b'-');
        if scope.is_empty() || scope.len() > MAX_SCOPE_CHARS || !scope.bytes().all(valid_char) {
            return Err(ValidationError::InvalidScope);
        }
        Ok(Self(scope.into()))
    }

    /// The scope as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The scopes of one key: at most 32, without duplicates, in the order given.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Scopes(Arc<[Scope]>);

impl Scopes {
    /// Checks a list of scopes; duplicates are dropped, order is kept.
    ///
    /// ```
    /// use teamkey_core::Scopes;
    /// let scopes = Scopes::new(["scans:read", "keys:manage", "scans:read"]).unwrap();
    /// assert_eq!(scopes.len(), 2);
    /// assert!(scopes.contains("keys:manage"));
    /// assert!(Scopes::new(["no spaces"]).is_err());
    /// ```
    pub fn new<I>(scopes: I) -> Result<Self, ValidationError>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let mut out: Vec<Scope> = Vec::new();
        for scope in scopes {
            let scope = Scope::new(scope)?;
            if !out.contains(&scope) {
                if out.len() == MAX_SCOPES {
                    return Err(ValidationError::TooManyScopes { max: MAX_SCOPES });
                }
                out.push(scope);
            }
        }
        Ok(Self(out.into()))
    }

    /// Whether `scope` is among them.
    pub fn contains(&self, scope: &str) -> bool {
        self.0.iter().any(|s| s.as_str() == scope)
    }

    /// Those of these scopes that `other` lacks, in order: empty when these
    /// are a subset of `other`.
    ///
    /// ```
    /// use teamkey_core::Scopes;
    /// let held = Scopes::new(["scans:read", "keys:manage"]).unwrap();
    /// let asked = Scopes::new(["scans:read", "billing:admin"]).unwrap();
    /// let missing: Vec<&str> = asked.not_in(&held).map(|s| s.as_str()).collect();
    /// assert_eq!(missing, ["billing:admin"]);
    /// ```
    pub fn not_in<'a>(&'a self, other: &'a Scopes) -> impl Iterator<Item = &'a Scope> + 'a {
        self.0.iter().filter(|s| !other.contains(s.as_str()))
    }

    /// Those of these scopes that `allowed` has too, in order; `None` when
    /// that is all of them (nothing to allocate).
    pub(crate) fn within(&self, allowed: &Scopes) -> Option<Scopes> {
        // Most keys are within their plan: no allocation for them.
        self.not_in(allowed).next()?;
        let kept: Vec<Scope> = self
            .0
            .iter()
            .filter(|s| allowed.contains(s.as_str()))
            .cloned()
            .collect();
        Some(Self(kept.into()))
    }

    /// The scopes, in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &Scope> {
        self.0.iter()
    }

    /// How many scopes there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'a> IntoIterator for &'a Scopes {
    type Item = &'a Scope;
    type IntoIter = std::slice::Iter<'a, Scope>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// The public id of a key: 12 characters of base62, random, unique, safe
/// to log and to show. It is the store's lookup key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId([u8; KEY_ID_LEN]);

impl KeyId {
    /// Checks and wraps a key id given as text (a URL path segment, a CLI
    /// argument, a database column).
    ///
    /// ```
    /// use teamkey_core::KeyId;
    /// assert!(KeyId::parse("3xAmPle0Key1").is_ok());
    /// assert!(KeyId::parse("too-short").is_err());
    /// ```
    pub fn parse(id: &str) -> Result<Self, ValidationError> {
        let bytes: [u8; KEY_ID_LEN] = id
            .as_bytes()
            .try_into()
            .map_err(|_| ValidationError::InvalidKeyId)?;
        if !bytes.iter().all(u8::is_ascii_alphanumeric) {
            return Err(ValidationError::InvalidKeyId);
        }
        Ok(Self(bytes))
    }

    /// The id in `bytes`, which the caller checked are ASCII alphanumerics
    /// (`None` only for a wrong length): spares a verification checking
    /// them twice.
    pub(crate) fn from_alphanumeric(bytes: &[u8]) -> Option<Self> {
        debug_assert!(bytes.iter().all(u8::is_ascii_alphanumeric));
        bytes.try_into().ok().map(Self)
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        // Only ASCII alphanumerics ever get in (see `parse`), so this cannot fail.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl FromStr for KeyId {
    type Err = ValidationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

macro_rules! text_impls {
    ($($ty:ident => $ctor:expr),* $(,)?) => {$(
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(self.as_str())
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($ty), self.as_str())
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                self.as_str()
            }
        }

        impl TryFrom<&str> for $ty {
            type Error = ValidationError;

            fn try_from(s: &str) -> Result<Self, Self::Error> {
                $ctor(s)
            }
        }

        impl TryFrom<String> for $ty {
            type Error = ValidationError;

            fn try_from(s: String) -> Result<Self, Self::Error> {
                $ctor(s.as_str())
            }
        }

        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                $ctor(&*s).map_err(serde::de::Error::custom)
            }
        }
    )*};
}

text_impls! {
    TeamId => TeamId::new,
    KeyName => KeyName::new,
    Scope => Scope::new,
    KeyId => KeyId::parse,
}

impl fmt::Debug for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.iter()).finish()
    }
}

impl Serialize for Scopes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter())
    }
}

impl<'de> Deserialize<'de> for Scopes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Vec::<std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Scopes::new(raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_characters_are_controls_format_and_separators_only() {
        for c in [
            '\u{0}',
            '\u{1B}',
            '\u{7F}',
            '\u{85}',
            '\u{AD}',
            '\u{61C}',
            '\u{180E}',
            '\u{200B}',
            '\u{200D}',
            '\u{2028}',
            '\u{2029}',
            '\u{202E}',
            '\u{2066}',
            '\u{2069}',
            '\u{FEFF}',
            '\u{110BD}',
            '\u{E0001}',
            '\u{E0041}',
            '\u{E007F}',
        ] {
            assert!(is_hidden(c), "U+{:04X}", u32::from(c));
        }
        for c in [
            'a',
            'Z',
            '0',
            '-',
            ' ',
            'é',
            'ß',
            'Ω',
            '中',
            '\u{1F600}',
            '\u{A0}',
        ] {
            assert!(!is_hidden(c), "U+{:04X}", u32::from(c));
        }
    }

    #[test]
    fn team_ids_are_checked() {
        assert_eq!(TeamId::new(""), Err(ValidationError::EmptyTeam));
        assert_eq!(
            TeamId::new("x".repeat(10 * 1024)),
            Err(ValidationError::TeamTooLong { max: 128 })
        );
        assert_eq!(TeamId::new("a\0b"), Err(ValidationError::TeamControlCharacter));
        assert_eq!(TeamId::new("acme "), Err(ValidationError::TeamWhitespace));
        let odd = TeamId::new("o'brien\"; DROP TABLE api_keys;-- 🦎").unwrap();
        assert_eq!(odd.as_str(), "o'brien\"; DROP TABLE api_keys;-- 🦎");
    }

    #[test]
    fn invisible_formatting_characters_are_refused() {
        for hidden in [
            '\u{202E}', '\u{2066}', '\u{200B}', '\u{200D}', '\u{2028}', '\u{FEFF}', '\u{061C}',
        ] {
            let text = format!("prod {hidden}gnp.exe");
            assert_eq!(
                KeyName::new(&text),
                Err(ValidationError::NameControlCharacter),
                "{hidden:?}"
            );
            assert_eq!(
                TeamId::new(&text),
                Err(ValidationError::TeamControlCharacter),
                "{hidden:?}"
            );
        }
        // Visible non-ASCII stays welcome.
        assert!(KeyName::new("Déploiement 🦎 日本").is_ok());
    }

    #[test]
    fn names_are_trimmed_and_counted_in_characters() {
        assert_eq!(KeyName::new(""), Err(ValidationError::EmptyName));
        assert_eq!(KeyName::new(" \t "), Err(ValidationError::EmptyName));
        assert_eq!(
            KeyName::new("🦎".repeat(100)).unwrap().as_str().chars().count(),
            100
        );
        assert_eq!(
            KeyName::new("🦎".repeat(101)),
            Err(ValidationError::NameTooLong { max: 100 })
        );
        assert_eq!(
            KeyName::new("a\u{7f}b"),
            Err(ValidationError::NameControlCharacter)
        );
    }

    #[test]
    fn scopes_are_checked_and_deduplicated() {
        assert_eq!(Scopes::new([""]), Err(ValidationError::InvalidScope));
        assert_eq!(Scopes::new(["a b"]), Err(ValidationError::InvalidScope));
        let many: Vec<String> = (0..33).map(|i| format!("s{i}")).collect();
        assert_eq!(
            Scopes::new(&many),
            Err(ValidationError::TooManyScopes { max: 32 })
        );
        let scopes = Scopes::new(["b", "a", "b"]).unwrap();
        let order: Vec<&str> = scopes.iter().map(Scope::as_str).collect();
        assert_eq!(order, ["b", "a"]);
    }

    #[test]
    fn key_ids_are_twelve_base62_characters() {
        assert!(KeyId::parse("abcdefABCDEF").is_ok());
        assert_eq!(KeyId::parse("abcdefABCDE"), Err(ValidationError::InvalidKeyId));
        assert_eq!(KeyId::parse("abcdefABCDE_"), Err(ValidationError::InvalidKeyId));
        assert_eq!(KeyId::parse("abcdefABCDEé"), Err(ValidationError::InvalidKeyId));
    }

    #[test]
    fn serde_validates() {
        let team: TeamId = serde_json::from_str("\"acme\"").unwrap();
        assert_eq!(team.as_str(), "acme");
        assert!(serde_json::from_str::<TeamId>("\"\"").is_err());
        let scopes: Scopes = serde_json::from_str("[\"a\",\"b\"]").unwrap();
        assert_eq!(serde_json::to_string(&scopes).unwrap(), "[\"a\",\"b\"]");
    }
}
