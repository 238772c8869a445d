//! The key format: `<prefix>_<key id><secret><checksum>`.
//!
//! * prefix: configurable, such as `tk_live` or `gk_test`;
//! * key id: 12 base62 characters, public, the store's lookup key;
//! * secret: 40 base62 characters (238 bits) by default, from the OS CSPRNG;
//! * checksum: CRC-32 (ISO-HDLC) of everything before it, 6 base62 digits.
//!
//! Parsing is pure: a key with the wrong prefix, length, characters or
//! checksum is refused here, before any store is asked. See
//! `docs/key-format.md` for the full specification and the scanner regex.

use std::fmt;
use std::sync::Arc;

use chacha20::ChaCha12Rng;
use rand::distr::{Alphanumeric, SampleString};
use rand::rngs::SysRng;
use rand::{SeedableRng, TryRng};
use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

use crate::error::{MalformedKey, ManageError, ValidationError};
use crate::ident::{KEY_ID_LEN, KeyId};

/// The prefix keys carry unless configured otherwise.
pub const DEFAULT_PREFIX: &str = "tk_live";
/// Secret length by default, in base62 characters (about 238 bits).
pub const DEFAULT_SECRET_LEN: usize = 40;
/// Shortest configurable secret (about 160 bits: at least 128 even if all
/// 32 bits of the checksum were known).
pub const MIN_SECRET_LEN: usize = 27;
/// Longest configurable secret.
pub const MAX_SECRET_LEN: usize = 64;
/// Length of the checksum, in base62 characters.
pub const CHECKSUM_LEN: usize = 6;
/// Longest prefix, in characters.
pub const MAX_PREFIX_LEN: usize = 32;
/// No configuration produces a key longer than this; adapters may refuse
/// longer header values before doing anything else.
pub const MAX_KEY_LEN: usize = MAX_PREFIX_LEN + 1 + KEY_ID_LEN + MAX_SECRET_LEN + CHECKSUM_LEN;

/// Characters of the masked preview taken from the key's end (checksum only).
const PREVIEW_TAIL: usize = 4;

/// How keys look: the prefix and the secret length. Cheap to clone.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyFormat {
    prefix: Arc<str>,
    secret_len: usize,
}

impl Default for KeyFormat {
    fn default() -> Self {
        Self {
            prefix: DEFAULT_PREFIX.into(),
            secret_len: DEFAULT_SECRET_LEN,
        }
    }
}

impl fmt::Debug for KeyFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyFormat")
            .field("prefix", &self.prefix)
            .field("secret_len", &self.secret_len)
            .finish()
    }
}

impl KeyFormat {
    /// A format with the given prefix and the default secret length.
    ///
    /// The prefix is 1 to 32 characters of `a-z0-9`, starting with a
    /// letter, in parts joined by single underscores: `tk_live`, `gk_test`.
    pub fn new(prefix: &str) -> Result<Self, ValidationError> {
        let valid = !prefix.is_empty()
            && prefix.len() <= MAX_PREFIX_LEN
            && prefix.as_bytes()[0].is_ascii_lowercase()
            && prefix.split('_').all(|part| {
                !part.is_empty() && part.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            });
        if !valid {
            return Err(ValidationError::InvalidPrefix);
        }
        Ok(Self {
            prefix: prefix.into(),
            secret_len: DEFAULT_SECRET_LEN,
        })
    }

    /// The same format with another secret length (27 to 64 characters).
    pub fn with_secret_len(mut self, secret_len: usize) -> Result<Self, ValidationError> {
        if !(MIN_SECRET_LEN..=MAX_SECRET_LEN).contains(&secret_len) {
            return Err(ValidationError::InvalidSecretLength {
                min: MIN_SECRET_LEN,
                max: MAX_SECRET_LEN,
            });
        }
        self.secret_len = secret_len;
        Ok(self)
    }

    /// The prefix, without the separating underscore.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Secret length in characters.
    pub fn secret_len(&self) -> usize {
        self.secret_len
    }

    /// Length of every key of this format.
    pub fn key_len(&self) -> usize {
        self.prefix.len() + 1 + KEY_ID_LEN + self.secret_len + CHECKSUM_LEN
    }

    /// A regular expression that matches exactly the keys of this format,
    /// for secret scanners.
    ///
    /// ```
    /// let format = teamkey_core::KeyFormat::default();
    /// assert_eq!(format.scanner_regex(), r"\btk_live_[0-9A-Za-z]{58}\b");
    /// ```
    pub fn scanner_regex(&self) -> String {
        format!(
            r"\b{}_[0-9A-Za-z]{{{}}}\b",
            self.prefix,
            KEY_ID_LEN + self.secret_len + CHECKSUM_LEN
        )
    }

    /// Makes a new key from the operating system's CSPRNG.
    pub fn generate(&self) -> Result<ApiKey, ManageError> {
        // One OS draw seeds a ChaCha12 generator used for this key only; its
        // output is sampled uniformly over base62 by `Alphanumeric`. It is
        // chacha20's own type rather than `StdRng` (whose algorithm may
        // change) so that its `zeroize` feature wipes the cipher state and
        // the buffered output when `rng` drops. The seed sits in a buffer
        // wiped on drop too.
        let mut seed = Zeroizing::new(<ChaCha12Rng as SeedableRng>::Seed::default());
        SysRng
            .try_fill_bytes(seed.as_mut())
            .map_err(ManageError::Random)?;
        let mut rng = ChaCha12Rng::from_seed(*seed);
        let len = self.key_len();
        // Exact capacity: `into_boxed_str` below then reuses the buffer, so no
        // unwiped copy of the key is left behind in freed memory.
        let mut key = String::with_capacity(len);
        key.push_str(&self.prefix);
        key.push('_');
        let id_start = key.len();
        Alphanumeric.append_string(&mut rng, &mut key, KEY_ID_LEN + self.secret_len);
        let id = KeyId::parse(&key[id_start..id_start + KEY_ID_LEN])?;
        let checksum = crc32fast::hash(key.as_bytes());
        push_checksum(&mut key, checksum);
        debug_assert_eq!(key.len(), len);
        // Never grown, so never moved: no copy was left in freed memory.
        debug_assert_eq!(key.capacity(), len);
        Ok(ApiKey {
            id,
            key: SecretString::from(key.into_boxed_str()),
            id_end: id_start + KEY_ID_LEN,
        })
    }

    /// Splits a presented key into its key id and secret, checking prefix,
    /// length, characters and checksum. Does no I/O and never allocates.
    pub fn parse<'k>(&self, presented: &'k str) -> Result<ParsedKey<'k>, MalformedKey> {
        self.parse_bytes(presented.as_bytes())
    }

    /// [`parse`](Self::parse) of bytes as a header gives them: a key is
    /// ASCII, so no UTF-8 check is needed first.
    pub(crate) fn parse_bytes<'k>(&self, presented: &'k [u8]) -> Result<ParsedKey<'k>, MalformedKey> {
        if presented.is_empty() {
            return Err(MalformedKey::Empty);
        }
        if presented.len() != self.key_len() {
            return Err(MalformedKey::WrongLength);
        }
        let prefix_len = self.prefix.len();
        if !presented.starts_with(self.prefix.as_bytes()) || presented[prefix_len] != b'_' {
            return Err(MalformedKey::WrongPrefix);
        }
        let body = &presented[prefix_len + 1..];
        // No early exit: the fold compiles to SIMD compares, ~8x faster here.
        if !body.iter().fold(true, |ok, b| ok & b.is_ascii_alphanumeric()) {
            return Err(MalformedKey::InvalidCharacter);
        }
        let (checked, checksum) = presented.split_at(presented.len() - CHECKSUM_LEN);
        // Six base62 digits always fit; the only encoding of a value is its own.
        let stated = base62::decode(checksum).map_err(|_| MalformedKey::BadChecksum)?;
        if stated != u128::from(crc32fast::hash(checked)) {
            return Err(MalformedKey::BadChecksum);
        }
        let (id, rest) = body.split_at(KEY_ID_LEN);
        Ok(ParsedKey {
            key_id: KeyId::from_alphanumeric(id).ok_or(MalformedKey::InvalidCharacter)?,
            secret: &rest[..self.secret_len],
        })
    }
}

pub(crate) fn push_checksum(key: &mut String, checksum: u32) {
    let mut digits = [0u8; 22];
    // A u32 needs at most 6 base62 digits; the buffer holds any u128.
    let n = base62::encode_bytes(checksum, &mut digits).unwrap_or(0);
    for _ in n..CHECKSUM_LEN {
        key.push('0');
    }
    for &d in &digits[..n] {
        key.push(char::from(d));
    }
}

/// A presented key split into its parts. Borrowed from the caller's input.
pub struct ParsedKey<'k> {
    key_id: KeyId,
    /// ASCII alphanumerics, checked by `parse`.
    secret: &'k [u8],
}

impl<'k> ParsedKey<'k> {
    /// The public key id.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// The secret part, to be hashed.
    pub(crate) fn secret(&self) -> &'k [u8] {
        self.secret
    }
}

impl fmt::Debug for ParsedKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParsedKey")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// A full API key, as shown once at creation.
///
/// It has no `Display` and no `Serialize`; its `Debug` shows only the key
/// id; the memory holding it is wiped on drop. Read it with
/// [`ApiKey::expose_secret`] at the one place it is handed to the user.
pub struct ApiKey {
    id: KeyId,
    key: SecretString,
    /// Where the key id ends and the secret begins.
    id_end: usize,
}

impl ApiKey {
    /// The public key id.
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// The full key. Show it once, to the user who created it, and nowhere else.
    pub fn expose_secret(&self) -> &str {
        self.key.expose_secret()
    }

    /// The masked preview: `<prefix>_<key id>…<last 4 characters>`. The last
    /// four are checksum digits, never secret ones.
    pub fn preview(&self) -> String {
        let key = self.key.expose_secret();
        let head = key.get(..self.id_end).unwrap_or_default();
        let tail = key
            .get(key.len().saturating_sub(PREVIEW_TAIL)..)
            .unwrap_or_default();
        format!("{head}…{tail}")
    }

    /// The secret part, to be hashed.
    pub(crate) fn secret(&self) -> &str {
        let key = self.key.expose_secret();
        key.get(self.id_end..key.len().saturating_sub(CHECKSUM_LEN))
            .unwrap_or_default()
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey")
            .field("id", &self.id)
            .field("key", &"[REDACTED]")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ApiKey {
        KeyFormat::default().generate().unwrap()
    }

    #[test]
    fn generated_keys_parse_back() {
        let format = KeyFormat::default();
        let key = key();
        let s = key.expose_secret();
        assert_eq!(s.len(), 66);
        assert!(s.starts_with("tk_live_"));
        let parsed = format.parse(s).unwrap();
        assert_eq!(parsed.key_id(), key.id());
        assert_eq!(parsed.secret().len(), DEFAULT_SECRET_LEN);
        assert_eq!(&s[8..20], key.id().as_str());
    }

    #[test]
    fn keys_are_distinct() {
        let a = key();
        let b = key();
        assert_ne!(a.id(), b.id());
        assert_ne!(a.expose_secret(), b.expose_secret());
    }

    #[test]
    fn bad_input_is_refused_with_a_reason() {
        let format = KeyFormat::default();
        let key = key();
        let good = key.expose_secret();
        let cases: Vec<(String, MalformedKey)> = vec![
            (String::new(), MalformedKey::Empty),
            (format!(" {good}"), MalformedKey::WrongLength),
            (format!("{good}\n"), MalformedKey::WrongLength),
            (good[..good.len() - 1].to_owned(), MalformedKey::WrongLength),
            ("A".repeat(10 * 1024), MalformedKey::WrongLength),
            (good.replacen("tk_live", "tk_test", 1), MalformedKey::WrongPrefix),
            (
                good.replacen("tk_live_", "tk_live-", 1),
                MalformedKey::WrongPrefix,
            ),
            (
                format!("{}é{}", &good[..20], &good[22..]),
                MalformedKey::InvalidCharacter,
            ),
            (
                format!("{}_{}", &good[..20], &good[21..]),
                MalformedKey::InvalidCharacter,
            ),
        ];
        for (input, reason) in cases {
            assert_eq!(format.parse(&input).err(), Some(reason), "{input:?}");
        }
        // Flip one checksum digit.
        let mut bad = good.to_owned().into_bytes();
        let last = bad.len() - 1;
        bad[last] = if bad[last] == b'0' { b'1' } else { b'0' };
        let bad = String::from_utf8(bad).unwrap();
        assert_eq!(format.parse(&bad).err(), Some(MalformedKey::BadChecksum));
    }

    #[test]
    fn a_key_of_another_prefix_does_not_parse() {
        let test = KeyFormat::new("tk_test").unwrap();
        let key = test.generate().unwrap();
        assert!(test.parse(key.expose_secret()).is_ok());
        assert_eq!(
            KeyFormat::default().parse(key.expose_secret()).err(),
            Some(MalformedKey::WrongPrefix)
        );
    }

    #[test]
    fn prefixes_are_checked() {
        for ok in ["tk_live", "gk_test", "a", "abc1_x2_y"] {
            assert!(KeyFormat::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "_tk",
            "tk_",
            "tk__live",
            "Tk_live",
            "1tk",
            "tk-live",
            &"a".repeat(33),
        ] {
            assert_eq!(KeyFormat::new(bad), Err(ValidationError::InvalidPrefix), "{bad}");
        }
    }

    #[test]
    fn secret_length_is_bounded() {
        let f = KeyFormat::default();
        assert!(f.clone().with_secret_len(26).is_err());
        assert!(f.clone().with_secret_len(65).is_err());
        let short = f.with_secret_len(27).unwrap();
        let key = short.generate().unwrap();
        assert_eq!(key.expose_secret().len(), short.key_len());
        assert!(short.parse(key.expose_secret()).is_ok());
    }

    #[test]
    fn preview_shows_no_secret_character() {
        let key = key();
        let s = key.expose_secret();
        let preview = key.preview();
        let secret = &s[20..60];
        assert_eq!(key.secret(), secret);
        assert_eq!(preview, format!("tk_live_{}…{}", key.id(), &s[62..]));
        assert!(!preview.contains(&secret[secret.len() - 4..]));
    }

    #[test]
    fn debug_never_shows_the_key() {
        let key = key();
        let shown = format!("{key:?}");
        assert!(!shown.contains(key.expose_secret()));
        assert!(!shown.contains(&key.expose_secret()[20..60]));
        assert!(shown.contains(key.id().as_str()));
        let parsed = KeyFormat::default().parse(key.expose_secret()).unwrap();
        assert!(!format!("{parsed:?}").contains(&key.expose_secret()[20..60]));
    }

    #[test]
    fn the_key_generator_wipes_itself_on_drop() {
        // Compile-time: fails to build without chacha20's `zeroize` feature.
        fn assert_zeroize_on_drop<T: zeroize::ZeroizeOnDrop>() {}
        assert_zeroize_on_drop::<ChaCha12Rng>();
    }

    #[test]
    fn checksum_is_left_padded() {
        let mut s = String::new();
        push_checksum(&mut s, 0);
        assert_eq!(s, "000000");
        let mut s = String::new();
        push_checksum(&mut s, u32::MAX);
        assert_eq!(s.len(), 6);
        assert_eq!(base62::decode(&s).unwrap(), u128::from(u32::MAX));
    }
}
