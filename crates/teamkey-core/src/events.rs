//! Audit events: what happened to a team's keys, who did it, and from where.
//!
//! Every change the [`KeyManager`](crate::KeyManager) makes hands its event
//! to the store with the change itself ([`KeyStore::insert`](crate::KeyStore::insert),
//! [`revoke`](crate::KeyStore::revoke), [`rotate`](crate::KeyStore::rotate)),
//! so that a store with a transaction records both or neither. After the
//! change, the event also goes to the app's [`EventSink`], if one is set.
//!
//! An event never holds the key, nor its digest.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::error::ValidationError;
use crate::ident::{KeyId, KeyName, Scopes, TeamId};
use crate::record::KeyRecord;

/// A sortable event id: a UUIDv7 (its first 48 bits are the Unix time in
/// milliseconds), written as 36 lowercase characters, so that ids sort as
/// their events happened, as text too.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId(uuid::Uuid);

impl EventId {
    /// A new id for an event at `at`: its millisecond, then 12 bits of
    /// sub-millisecond time kept strictly increasing within this process
    /// (RFC 9562, 6.2 method 3), then 62 random bits. So the events of one
    /// process sort in the order they were made, even within a millisecond.
    pub(crate) fn new(at: OffsetDateTime) -> Self {
        use rand::TryRng;
        use std::sync::atomic::{AtomicU64, Ordering};
        /// The last `millis << 12 | fraction` handed out.
        static LAST: AtomicU64 = AtomicU64::new(0);
        let nanos = at.unix_timestamp_nanos().max(0);
        let millis = u64::try_from(nanos / 1_000_000).unwrap_or(0) & ((1 << 48) - 1);
        let fraction = u64::try_from((nanos % 1_000_000) * 4096 / 1_000_000).unwrap_or(0);
        let wanted = (millis << 12) | fraction;
        let stamp = match LAST.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
            Some(wanted.max(last.saturating_add(1)))
        }) {
            Ok(last) | Err(last) => wanted.max(last.saturating_add(1)),
        };
        let mut random = [0u8; 10];
        if rand::rngs::SysRng.try_fill_bytes(&mut random).is_err() {
            // Event ids need uniqueness, not secrecy: without the OS's
            // generator, the process id still tells processes apart.
            random[..4].copy_from_slice(&std::process::id().to_le_bytes());
        }
        // The first 12 bits (after the version nibble) are the fraction.
        let [hi, lo] = u16::try_from(stamp & 0xFFF).unwrap_or(0).to_be_bytes();
        random[0] = hi;
        random[1] = lo;
        Self(uuid::Builder::from_unix_timestamp_millis(stamp >> 12, &random).into_uuid())
    }

    /// Parses the text form; anything but a UUIDv7 is refused.
    pub fn parse(text: &str) -> Result<Self, ValidationError> {
        match uuid::Uuid::try_parse(text) {
            Ok(id) if id.get_version_num() == 7 => Ok(Self(id)),
            _ => Err(ValidationError::InvalidEventId),
        }
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl fmt::Debug for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for EventId {
    type Err = ValidationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for EventId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for EventId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub enum EventKind {
    /// A key was created.
    #[serde(rename = "key.created")]
    Created,
    /// A key was rotated: `key_id` is the old key, `successor_id` the new one.
    #[serde(rename = "key.rotated")]
    Rotated,
    /// A key was revoked.
    #[serde(rename = "key.revoked")]
    Revoked,
    /// An expired key was presented for the first time after its expiry.
    #[serde(rename = "key.expired")]
    Expired,
    /// A key expires within `days_left` days (7, then 1), from
    /// [`KeyManager::sweep_expiring`](crate::KeyManager::sweep_expiring).
    #[serde(rename = "key.expiring")]
    Expiring,
    /// A key went over its rate limit: the first refusal in an hour (a
    /// sample, not every refusal).
    #[serde(rename = "key.rate_limited")]
    RateLimited,
}

impl EventKind {
    /// Every kind, in lifecycle order.
    pub const ALL: [EventKind; 6] = [
        Self::Created,
        Self::Rotated,
        Self::Revoked,
        Self::Expired,
        Self::Expiring,
        Self::RateLimited,
    ];

    /// The name stored and sent: `key.created`, `key.rotated`, ...
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Created => "key.created",
            Self::Rotated => "key.rotated",
            Self::Revoked => "key.revoked",
            Self::Expired => "key.expired",
            Self::Expiring => "key.expiring",
            Self::RateLimited => "key.rate_limited",
        }
    }

    /// The kind named `name`, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who made a change.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Actor {
    /// An API key with `keys:manage`, through the management API.
    Key {
        /// The acting key's public id.
        key_id: KeyId,
    },
    /// A person signed in to the app (a dashboard session), as the app
    /// names them: a user id or an email.
    User {
        /// The app's name for the user.
        id: String,
    },
    /// Someone running the `teamkey` CLI (or other operator tooling).
    Operator {
        /// The operator's name, such as the OS user.
        name: String,
    },
    /// teamkey itself: expiries, sweeps, calls made without an actor.
    System,
}

/// Longest actor name or id kept; longer ones are cut.
pub const MAX_ACTOR_CHARS: usize = 200;

impl Actor {
    /// A signed-in user, by the app's id for them (cut to
    /// [`MAX_ACTOR_CHARS`], control characters dropped).
    pub fn user(id: impl AsRef<str>) -> Self {
        Self::User {
            id: clean(id.as_ref(), MAX_ACTOR_CHARS),
        }
    }

    /// An operator by name (cut and cleaned as [`Actor::user`]).
    pub fn operator(name: impl AsRef<str>) -> Self {
        Self::Operator {
            name: clean(name.as_ref(), MAX_ACTOR_CHARS),
        }
    }

    /// The kind of actor, as stored: `key`, `user`, `operator` or `system`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Key { .. } => "key",
            Self::User { .. } => "user",
            Self::Operator { .. } => "operator",
            Self::System => "system",
        }
    }

    /// Its id, as stored: the key id, user id or operator name.
    pub fn id(&self) -> Option<String> {
        match self {
            Self::Key { key_id } => Some(key_id.to_string()),
            Self::User { id } => Some(id.clone()),
            Self::Operator { name } => Some(name.clone()),
            Self::System => None,
        }
    }

    /// The actor stored as `kind` and `id`; `None` for anything else.
    pub fn from_parts(kind: &str, id: Option<&str>) -> Option<Self> {
        match (kind, id) {
            ("key", Some(id)) => KeyId::parse(id).ok().map(|key_id| Self::Key { key_id }),
            ("user", Some(id)) => Some(Self::user(id)),
            ("operator", Some(name)) => Some(Self::operator(name)),
            ("system", None) => Some(Self::System),
            _ => None,
        }
    }
}

impl fmt::Debug for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.id() {
            Some(id) => write!(f, "{}:{id}", self.kind()),
            None => f.write_str(self.kind()),
        }
    }
}

/// Where a change came from, as far as the app knows. Every field is
/// optional, bounded and free of control characters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub struct RequestContext {
    /// The request's id (such as `X-Request-Id`), at most
    /// [`MAX_REQUEST_ID_CHARS`] characters.
    pub request_id: Option<String>,
    /// The client's IP address.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub client_ip: Option<IpAddr>,
    /// The client's `User-Agent`, cut to [`MAX_USER_AGENT_CHARS`] characters.
    pub user_agent: Option<String>,
}

/// Longest request id kept.
pub const MAX_REQUEST_ID_CHARS: usize = 128;
/// Longest user agent kept.
pub const MAX_USER_AGENT_CHARS: usize = 256;

impl RequestContext {
    /// No context: a change made outside any request.
    pub fn new() -> Self {
        Self::default()
    }

    /// With a request id (header bytes; cut and cleaned, empty ignored).
    pub fn request_id(mut self, id: impl AsRef<[u8]>) -> Self {
        self.request_id = non_empty(clean(&String::from_utf8_lossy(id.as_ref()), MAX_REQUEST_ID_CHARS));
        self
    }

    /// With the client's IP address.
    pub fn client_ip(mut self, ip: IpAddr) -> Self {
        self.client_ip = Some(ip);
        self
    }

    /// With a user agent (header bytes; cut and cleaned, empty ignored).
    pub fn user_agent(mut self, agent: impl AsRef<[u8]>) -> Self {
        self.user_agent = non_empty(clean(
            &String::from_utf8_lossy(agent.as_ref()),
            MAX_USER_AGENT_CHARS,
        ));
        self
    }

    /// This context with every field cut and cleaned: for contexts built
    /// field by field, or read back from a store.
    pub fn cleaned(self) -> Self {
        Self {
            request_id: self
                .request_id
                .and_then(|s| non_empty(clean(&s, MAX_REQUEST_ID_CHARS))),
            client_ip: self.client_ip,
            user_agent: self
                .user_agent
                .and_then(|s| non_empty(clean(&s, MAX_USER_AGENT_CHARS))),
        }
    }
}

/// `text` without control or bidirectional-override characters, trimmed,
/// cut to `max` characters: what an audit log may show verbatim.
fn clean(text: &str, max: usize) -> String {
    text.chars()
        .filter(|c| !crate::ident::is_hidden(*c))
        .take(max)
        .collect::<String>()
        .trim()
        .to_owned()
}

fn non_empty(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

/// Who made a change and from where: handed to
/// [`KeyManager::on_behalf_of`](crate::KeyManager::on_behalf_of).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// Who.
    pub actor: Actor,
    /// From where.
    pub context: RequestContext,
}

impl Origin {
    /// A change by `actor`, outside any request.
    pub fn new(actor: Actor) -> Self {
        Self {
            actor,
            context: RequestContext::default(),
        }
    }

    /// With the request it came from.
    pub fn context(mut self, context: RequestContext) -> Self {
        self.context = context.cleaned();
        self
    }

    /// teamkey itself, or a caller that named no actor.
    pub fn system() -> Self {
        Self::new(Actor::System)
    }
}

/// One audit event. Never holds the key or its digest: only the key's
/// public id, name, preview and scopes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub struct KeyEvent {
    /// Sortable id.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub id: EventId,
    /// What happened.
    #[serde(rename = "type")]
    pub kind: EventKind,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub at: OffsetDateTime,
    /// The team whose key it is.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub team_id: TeamId,
    /// Who did it.
    pub actor: Actor,
    /// The key (for a rotation, the old key).
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub key_id: KeyId,
    /// The key's name.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub key_name: KeyName,
    /// The key's masked preview.
    pub preview: String,
    /// The key's scopes.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub scopes: Scopes,
    /// For a rotation: the new key.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub successor_id: Option<KeyId>,
    /// For `key.expiring`: 7 or 1.
    pub days_left: Option<u8>,

    /// The request the change came from, where known.
    pub context: RequestContext,
}

impl KeyEvent {
    /// An event about `record` at `at`.
    pub fn new(kind: EventKind, at: OffsetDateTime, record: &KeyRecord, origin: &Origin) -> Self {
        Self {
            id: EventId::new(at),
            kind,
            at,
            team_id: record.team_id.clone(),
            actor: origin.actor.clone(),
            key_id: record.id,
            key_name: record.name.clone(),
            preview: record.preview.clone(),
            scopes: record.scopes.clone(),
            successor_id: None,
            days_left: None,
            context: origin.context.clone(),
        }
    }

    /// An event as a store reads it back: every field it keeps, the id
    /// included. `successor_id` and `days_left` start empty; set them.
    #[allow(clippy::too_many_arguments)] // one per stored column, named by type
    pub fn stored(
        id: EventId,
        kind: EventKind,
        at: OffsetDateTime,
        team_id: TeamId,
        actor: Actor,
        key_id: KeyId,
        key_name: KeyName,
        preview: impl Into<String>,
        scopes: Scopes,
        context: RequestContext,
    ) -> Self {
        Self {
            id,
            kind,
            at,
            team_id,
            actor,
            key_id,
            key_name,
            preview: preview.into(),
            scopes,
            successor_id: None,
            days_left: None,
            context: context.cleaned(),
        }
    }

    /// For events that happen once per key (`key.expired`, and
    /// `key.expiring` once per notice), the text a store keeps unique so
    /// that several instances record it once: `None` for the others.
    pub fn once_key(&self) -> Option<String> {
        match (self.kind, self.days_left) {
            (EventKind::Expired, _) => Some(format!("{}:{}", self.kind, self.key_id)),
            (EventKind::Expiring, Some(days)) => Some(format!("{}:{}:{days}d", self.kind, self.key_id)),
            // A sample: the first in each hour of `at`.
            (EventKind::RateLimited, _) => Some(format!(
                "{}:{}:{}h",
                self.kind,
                self.key_id,
                self.at.unix_timestamp().div_euclid(3_600)
            )),
            _ => None,
        }
    }
}

/// Which page of a team's events to read: newest first, older than
/// `before` (an event id from the previous page), at most `limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct EventQuery {
    /// Only events older than this one; `None` for the newest.
    pub before: Option<EventId>,
    /// At most this many.
    pub limit: usize,
}

impl EventQuery {
    /// The newest `limit` events.
    pub fn newest(limit: usize) -> Self {
        Self { before: None, limit }
    }

    /// Events older than `id`.
    pub fn before(mut self, id: EventId) -> Self {
        self.before = Some(id);
        self
    }

    /// Whether `event` of team `team_id` belongs in this page (before the
    /// limit is applied).
    pub fn matches(&self, team_id: &TeamId, event: &KeyEvent) -> bool {
        &event.team_id == team_id && self.before.is_none_or(|before| event.id < before)
    }
}

/// The error an [`EventSink`] returns; logged, never shown to a client.
pub type SinkError = Box<dyn std::error::Error + Send + Sync>;

/// Where the app receives events as they happen: its own audit log, a
/// queue, webhooks.
///
/// The store's event table is the record (written with the change); a sink
/// gets each event after its change is done, off the caller's path. A
/// failing sink never fails the change: a delivery is tried three times
/// (after 0.2 s, then 1 s; an attempt with no answer in 5 s has failed) and
/// then logged at `error` with the event id, so the app can catch up from
/// the store's events. At most 1,024 deliveries wait at once; past that,
/// events are logged and not delivered.
///
/// ```
/// use teamkey_core::events::{EventSink, KeyEvent, SinkError};
///
/// struct AuditLog;
///
/// #[teamkey_core::async_trait]
/// impl EventSink for AuditLog {
///     async fn deliver(&self, event: &KeyEvent) -> Result<(), SinkError> {
///         println!("{} {} by {:?}", event.kind, event.key_id, event.actor);
///         Ok(())
///     }
/// }
/// ```
#[async_trait]
pub trait EventSink: Send + Sync + 'static {
    /// Takes one event. An error makes teamkey try again, up to three times.
    async fn deliver(&self, event: &KeyEvent) -> Result<(), SinkError>;
}

/// Delays before the second and third delivery attempts.
const RETRY_DELAYS: [std::time::Duration; 2] = [
    std::time::Duration::from_millis(200),
    std::time::Duration::from_secs(1),
];

/// Delivers `event` to `sink` off the caller's path (on the current Tokio
/// runtime; outside one, in place).
pub(crate) fn dispatch(sink: &Arc<dyn EventSink>, event: KeyEvent) {
    // A sink that hangs must not hold a task per event for ever: at most
    // this many deliveries wait at once; past it, events are logged and
    // left to the store's record.
    static IN_FLIGHT: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_IN_FLIGHT);
    let Ok(permit) = IN_FLIGHT.try_acquire() else {
        tracing::error!(
            event_id = %event.id,
            kind = %event.kind,
            "teamkey events: {MAX_IN_FLIGHT} deliveries already wait on the sink; event not delivered (it is in the store)"
        );
        return;
    };
    let sink = Arc::clone(sink);
    let deliver = async move {
        deliver(&*sink, &event).await;
        drop(permit);
    };
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn(deliver);
        }
        Err(_) => tracing::error!("teamkey events: no Tokio runtime; event not delivered to the sink"),
    }
}

/// Deliveries that may wait on a sink at once.
const MAX_IN_FLIGHT: usize = 1_024;

/// How long one delivery attempt may take before it counts as failed.
const ATTEMPT_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);

/// Tries a delivery up to three times; `false` if every try failed.
pub(crate) async fn deliver(sink: &dyn EventSink, event: &KeyEvent) -> bool {
    let mut attempt = 0;
    loop {
        let attempted = tokio::time::timeout(ATTEMPT_DEADLINE, sink.deliver(event)).await;
        let outcome = attempted.unwrap_or_else(|_| Err("no answer within 5 s".into()));
        match outcome {
            Ok(()) => return true,
            Err(error) => match RETRY_DELAYS.get(attempt) {
                Some(delay) => {
                    tracing::warn!(event_id = %event.id, kind = %event.kind, error = %error, "teamkey events: sink failed; retrying");
                    tokio::time::sleep(*delay).await;
                    attempt += 1;
                }
                None => {
                    tracing::error!(
                        event_id = %event.id,
                        kind = %event.kind,
                        team_id = %event.team_id,
                        key_id = %event.key_id,
                        error = %error,
                        "teamkey events: sink failed three times; event dropped from the sink (it is in the store)"
                    );
                    return false;
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn event_ids_made_in_one_millisecond_keep_their_order() {
        let at = datetime!(2026-11-27 10:00 UTC);
        let ids: Vec<EventId> = (0..10_000).map(|_| EventId::new(at)).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        assert!(ids.windows(2).all(|w| w[0].to_string() < w[1].to_string()));
        assert!(ids.iter().all(|id| id.0.get_version_num() == 7));
    }

    #[test]
    fn event_ids_sort_by_time_and_parse_back() {
        let early = EventId::new(datetime!(2026-11-27 10:00 UTC));
        let late = EventId::new(datetime!(2026-11-27 10:00:00.001 UTC));
        assert!(early < late);
        assert!(early.to_string() < late.to_string());
        assert_eq!(EventId::parse(&late.to_string()).unwrap(), late);
        assert!(EventId::parse("00000000-0000-4000-8000-000000000000").is_err());
        assert!(EventId::parse("not an id").is_err());
    }

    #[test]
    fn context_is_bounded_and_clean() {
        let ctx = RequestContext::new()
            .request_id("abc\u{202e}\n\tdef")
            .user_agent("x".repeat(10_000));
        assert_eq!(ctx.request_id.as_deref(), Some("abcdef"));
        assert_eq!(
            ctx.user_agent.as_ref().map(|s| s.chars().count()),
            Some(MAX_USER_AGENT_CHARS)
        );
        assert_eq!(RequestContext::new().request_id("  ").request_id, None);
    }

    #[test]
    fn actors_round_trip_their_stored_parts() {
        let key = KeyId::parse("abcdefABCDEF").unwrap();
        for actor in [
            Actor::Key { key_id: key },
            Actor::user("owner@acme.test"),
            Actor::operator("root"),
            Actor::System,
        ] {
            assert_eq!(
                Actor::from_parts(actor.kind(), actor.id().as_deref()),
                Some(actor.clone())
            );
        }
        assert_eq!(Actor::from_parts("key", Some("nope")), None);
        assert_eq!(Actor::from_parts("system", Some("x")), None);
    }

    #[test]
    fn kinds_have_stable_names() {
        for kind in EventKind::ALL {
            assert_eq!(EventKind::from_name(kind.as_str()), Some(kind));
            assert_eq!(serde_json::to_string(&kind).unwrap(), format!("\"{kind}\""));
        }
    }
}
