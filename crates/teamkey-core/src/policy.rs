//! Team policy: what a team's plan allows, answered by the app.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use quick_cache::sync::Cache;

use crate::ident::{Scope, Scopes, TeamId};
use crate::rate_limit::RateLimit;

/// What a team may do with API keys, from the app's own data (its plans,
/// its contracts). Set it with
/// [`KeyManagerBuilder::policy`](crate::KeyManagerBuilder::policy); without
/// one, every team may do everything within the manager's limits.
///
/// The manager asks on key creation and rotation, and on verification;
/// answers are kept per team for the policy TTL (30 s by default,
/// [`KeyManagerBuilder::policy_ttl`](crate::KeyManagerBuilder::policy_ttl)),
/// so gating costs no call to the app on the request path. A plan change
/// takes effect within that TTL, or at once on this instance with
/// [`KeyManager::invalidate_team`](crate::KeyManager::invalidate_team).
///
/// ```
/// use teamkey_core::{PolicyError, TeamId, TeamPolicy, TeamRules};
///
/// struct Plans;
///
/// #[teamkey_core::async_trait]
/// impl TeamPolicy for Plans {
///     async fn rules(&self, team: &TeamId) -> Result<TeamRules, PolicyError> {
///         // In an app: look the team's plan up in its own database.
///         Ok(match team.as_str() {
///             "initech" => TeamRules::no_api_access(),
///             _ => TeamRules::allow_all().max_active_keys(20),
///         })
///     }
/// }
/// ```
#[async_trait]
pub trait TeamPolicy: Send + Sync + 'static {
    /// The rules for `team`. An error makes verification a 503 and
    /// management a 503, never a pass.
    async fn rules(&self, team: &TeamId) -> Result<TeamRules, PolicyError>;
}

/// The error a [`TeamPolicy`] returns when it cannot answer (its database
/// is down...). Logged, never shown to a client.
pub type PolicyError = Box<dyn std::error::Error + Send + Sync>;

/// A team's rules. [`TeamRules::allow_all`] is what a manager without a
/// policy applies.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TeamRules {
    /// Whether the team's keys verify and the team may create keys. When
    /// `false`, a valid key gets a 403 saying the plan has no API access.
    pub api_access: bool,
    /// The scopes a key of the team may carry; `None`: any. A new key
    /// asking for others is refused; a key made under a larger plan is
    /// granted only these of its scopes when it verifies.
    pub grantable_scopes: Option<Scopes>,
    /// The most active keys the team may have (the manager's own maximum
    /// applies too: the lower one counts); `None`: only the manager's.
    pub max_active_keys: Option<usize>,
    /// Whether every new key must have an expiry.
    pub require_expiry: bool,
    /// The longest lifetime of a new key (the manager's own maximum
    /// applies too); `None`: only the manager's.
    pub max_lifetime: Option<time::Duration>,
    /// The rate limit of the team's keys that have none of their own, and
    /// the loosest limit a new key of the team may be given (a looser one
    /// is refused with `403 rate_limit_not_in_plan`; a key made under a
    /// larger plan is held within it when it verifies, see
    /// [`RateLimit::bounded_by`](crate::RateLimit::bounded_by)); `None`:
    /// the manager's default, and no ceiling.
    pub rate_limit: Option<RateLimit>,
}

impl Default for TeamRules {
    fn default() -> Self {
        Self::allow_all()
    }
}

impl TeamRules {
    /// Everything, within the manager's limits.
    pub fn allow_all() -> Self {
        Self {
            api_access: true,
            grantable_scopes: None,
            max_active_keys: None,
            require_expiry: false,
            max_lifetime: None,
            rate_limit: None,
        }
    }

    /// A plan without API access: no key verifies, none may be made.
    pub fn no_api_access() -> Self {
        Self {
            api_access: false,
            ..Self::allow_all()
        }
    }

    /// Keys may carry only these scopes.
    pub fn grantable_scopes(mut self, scopes: Scopes) -> Self {
        self.grantable_scopes = Some(scopes);
        self
    }

    /// At most this many active keys.
    pub fn max_active_keys(mut self, max: usize) -> Self {
        self.max_active_keys = Some(max);
        self
    }

    /// Every new key must expire, at most `max` after its creation: an
    /// enterprise rule such as "keys live at most 90 days".
    pub fn require_expiry_within(mut self, max: time::Duration) -> Self {
        self.require_expiry = true;
        self.max_lifetime = Some(max);
        self
    }

    /// The plan's rate limit for keys without their own.
    pub fn rate_limit(mut self, limit: RateLimit) -> Self {
        self.rate_limit = Some(limit);
        self
    }

    /// The scopes of `scopes` that this plan does not grant.
    pub(crate) fn ungrantable<'a>(&'a self, scopes: &'a Scopes) -> Vec<Scope> {
        match &self.grantable_scopes {
            Some(allowed) => scopes.not_in(allowed).cloned().collect(),
            None => Vec::new(),
        }
    }
}

/// How long the rules of a team are kept unless configured.
pub const DEFAULT_POLICY_TTL: Duration = Duration::from_secs(30);

/// Teams whose rules are kept at once; least recently used go first.
const POLICY_ENTRIES: usize = 10_000;

/// The policy and its answers, kept per team for `ttl`.
pub(crate) struct PolicyCache {
    policy: Arc<dyn TeamPolicy>,
    ttl: Duration,
    answers: Cache<TeamId, (Arc<TeamRules>, Instant)>,
    /// Bumped by every `forget`: an answer asked before a forget is not
    /// kept, so a plan change cannot lose to an answer still on its way.
    generation: std::sync::atomic::AtomicU64,
}

impl PolicyCache {
    pub(crate) fn new(policy: Arc<dyn TeamPolicy>, ttl: Duration) -> Self {
        Self {
            policy,
            ttl,
            answers: Cache::new(POLICY_ENTRIES),
            generation: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The team's rules if an answer younger than the ttl is kept.
    pub(crate) fn cached(&self, team: &TeamId) -> Option<Arc<TeamRules>> {
        self.answers
            .get(team)
            .filter(|(_, at)| at.elapsed() < self.ttl)
            .map(|(rules, _)| rules)
    }

    /// The team's rules, kept or asked for.
    pub(crate) async fn rules(&self, team: &TeamId) -> Result<Arc<TeamRules>, PolicyError> {
        if let Some(rules) = self.cached(team) {
            return Ok(rules);
        }
        use std::sync::atomic::Ordering;
        let asked_at = self.generation.load(Ordering::Acquire);
        let rules = Arc::new(self.policy.rules(team).await?);
        // Any forget since (of any team: simpler, and as rare as plan
        // changes) may have been for this one: use the answer, keep nothing.
        if self.generation.load(Ordering::Acquire) == asked_at {
            self.answers
                .insert(team.clone(), (Arc::clone(&rules), Instant::now()));
            if self.generation.load(Ordering::Acquire) != asked_at {
                self.answers.remove(team);
            }
        }
        Ok(rules)
    }

    /// The rules asked anew, for a management call: a plan change takes
    /// effect on the next change at once.
    pub(crate) async fn fresh_rules(&self, team: &TeamId) -> Result<Arc<TeamRules>, PolicyError> {
        self.forget(team);
        self.rules(team).await
    }

    pub(crate) fn forget(&self, team: &TeamId) {
        self.generation.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        self.answers.remove(team);
    }
}
