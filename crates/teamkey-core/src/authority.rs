//! Least privilege in key management: what a caller may grant, and which
//! keys it may rotate or revoke.

use time::OffsetDateTime;

use crate::ident::{Scope, Scopes};
use crate::rate_limit::RateLimit;
use crate::record::Principal;

/// What a caller of the management API holds, and so may hand on.
///
/// - [`Authority::of_key`]: a caller that is itself an API key (teamkey's
///   `ManagesKeys`). It grants only scopes it holds, never a key that
///   outlives it, and rotates or revokes only keys whose scopes it holds.
///   Without this, a `keys:manage` key could mint a key with any scope, or
///   rotate a broader key and receive its successor.
/// - [`Authority::whole_team`]: a signed-in person who administers the
///   team (a dashboard session): every scope, any lifetime. The manager's
///   own limits (maximum lifetime, grace and key count) still apply.
///
/// ```
/// use teamkey_core::{Authority, Scopes};
///
/// let dashboard = Authority::whole_team();
/// let billing = Scopes::new(["billing:admin"]).unwrap();
/// assert!(dashboard.check_grant(&billing, None).is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authority {
    /// `None`: every scope of the team.
    scopes: Option<Scopes>,
    /// The caller's own expiry: nothing it makes or touches may outlive it.
    expires_at: Option<OffsetDateTime>,
    /// The caller's key was rotated away and lives out its grace period.
    retired: bool,
    /// The caller's own rate limit: a key it makes may be no looser.
    rate_limit: Option<RateLimit>,
}

/// Why a caller may not do what it asked. Rendered as a 403 naming it;
/// nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The new key would carry scopes the caller lacks.
    #[error("a caller can grant only scopes it holds; it lacks {}", list(.scopes))]
    ScopesNotHeld {
        /// The scopes asked for that the caller lacks.
        scopes: Vec<Scope>,
    },
    /// The new key would outlive the caller's own key (or never expire).
    #[error("the new key must expire no later than the caller's key")]
    OutlivesCaller {
        /// The caller's expiry: the latest the new key may have.
        caller_expires_at: OffsetDateTime,
    },
    /// The key to rotate or revoke has scopes the caller lacks.
    #[error("a caller can rotate or revoke only keys whose scopes it holds; it lacks {}", list(.scopes))]
    KeyBroaderThanCaller {
        /// The key's scopes that the caller lacks.
        scopes: Vec<Scope>,
    },
    /// The key to rotate or revoke lives longer than the caller's own key:
    /// a dying (or leaked and replaced) key must not kill its successors.
    #[error("a caller can rotate or revoke only keys that expire no later than itself")]
    KeyOutlivesCaller {
        /// The caller's expiry.
        caller_expires_at: OffsetDateTime,
    },
    /// The caller's own key was rotated: during its grace period it still
    /// verifies, but manages no keys.
    #[error("a key that was rotated manages no keys; use its successor")]
    CallerRetired,
    /// The new key would be allowed more requests than the caller (a
    /// higher burst or rate, or no limit while the caller has one).
    #[error("a caller with a rate limit can make only keys limited at least as tightly ({caller_limit})")]
    LooserRateLimit {
        /// The caller's own limit: the loosest the new key may have.
        caller_limit: RateLimit,
    },
}

fn list(scopes: &[Scope]) -> String {
    let names: Vec<&str> = scopes.iter().map(Scope::as_str).collect();
    names.join(", ")
}

impl Authority {
    /// The authority of a caller that is an API key: its scopes and expiry.
    pub fn of_key(principal: &Principal) -> Self {
        Self {
            // The key's own scopes, not only those its plan grants today:
            // what the plan withholds is refused after this, by the plan's
            // check, which names the plan as the reason
            // (`scopes_not_in_plan`) rather than the caller's key.
            scopes: Some(principal.record().scopes.clone()),
            expires_at: principal.expires_at(),
            retired: principal.replaced_by().is_some(),
            // Likewise its own limit as stored (else the plan's or the
            // default): a key made under a larger plan may still rotate
            // itself or a key like it, as a narrowed plan must not stop the
            // rotation of a leaked key; the plan bounds the successor when
            // it verifies.
            rate_limit: principal.record().rate_limit.or(principal.rate_limit()),
        }
    }

    /// Every scope, any lifetime: for a signed-in administrator of the
    /// team, never for an API key.
    pub fn whole_team() -> Self {
        Self {
            scopes: None,
            expires_at: None,
            retired: false,
            rate_limit: None,
        }
    }

    /// Whether the caller may make a key with `scopes` expiring at
    /// `expires_at` (`None`: never).
    pub fn check_grant(&self, scopes: &Scopes, expires_at: Option<OffsetDateTime>) -> Result<(), Refusal> {
        self.check_active()?;
        self.check_scopes(scopes)
            .map_err(|scopes| Refusal::ScopesNotHeld { scopes })?;
        self.outlived_by(expires_at).map_or(Ok(()), |caller_expires_at| {
            Err(Refusal::OutlivesCaller { caller_expires_at })
        })
    }

    /// The caller's own rate limit, if it has one: only then does the
    /// limit of a key it makes need to be known ([`check_rate_limit`](Self::check_rate_limit)).
    pub fn rate_limit(&self) -> Option<RateLimit> {
        self.rate_limit
    }

    /// Whether the caller may make a key whose rate limit will be `limit`
    /// (its own, else its team's or the manager's default; `None`: no
    /// limit). A caller without a limit may grant any; one with a limit
    /// only limits no looser: at most its burst, at most its rate.
    pub fn check_rate_limit(&self, limit: Option<RateLimit>) -> Result<(), Refusal> {
        let Some(own) = self.rate_limit else {
            return Ok(());
        };
        match limit {
            Some(limit) if limit.is_within(own) => Ok(()),
            _ => Err(Refusal::LooserRateLimit { caller_limit: own }),
        }
    }

    /// Whether the caller may read the team's audit events: any active
    /// caller; a key rotated away reads nothing in its grace period.
    pub fn check_read(&self) -> Result<(), Refusal> {
        self.check_active()
    }

    /// Whether the caller may rotate or revoke a key with `scopes`.
    pub fn check_manage(&self, scopes: &Scopes, expires_at: Option<OffsetDateTime>) -> Result<(), Refusal> {
        self.check_active()?;
        self.check_scopes(scopes)
            .map_err(|scopes| Refusal::KeyBroaderThanCaller { scopes })?;
        self.outlived_by(expires_at).map_or(Ok(()), |caller_expires_at| {
            Err(Refusal::KeyOutlivesCaller { caller_expires_at })
        })
    }

    /// The caller's expiry, if a key expiring at `expires_at` (`None`:
    /// never) would outlive it.
    fn outlived_by(&self, expires_at: Option<OffsetDateTime>) -> Option<OffsetDateTime> {
        let limit = self.expires_at?;
        expires_at.is_none_or(|at| at > limit).then_some(limit)
    }

    fn check_active(&self) -> Result<(), Refusal> {
        if self.retired {
            Err(Refusal::CallerRetired)
        } else {
            Ok(())
        }
    }

    /// The scopes of `scopes` the caller lacks, if any.
    fn check_scopes(&self, scopes: &Scopes) -> Result<(), Vec<Scope>> {
        let Some(held) = &self.scopes else {
            return Ok(());
        };
        let lacking: Vec<Scope> = scopes.not_in(held).cloned().collect();
        if lacking.is_empty() { Ok(()) } else { Err(lacking) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn key_authority(scopes: &[&str], expires_at: Option<OffsetDateTime>) -> Authority {
        Authority {
            scopes: Some(Scopes::new(scopes).unwrap()),
            expires_at,
            retired: false,
            rate_limit: None,
        }
    }

    #[test]
    fn a_limited_key_grants_only_limits_as_tight() {
        let limit = |r, w| RateLimit::new(r, std::time::Duration::from_secs(w)).unwrap();
        let caller = Authority {
            rate_limit: Some(limit(100, 60)),
            ..key_authority(&[], None)
        };
        assert!(caller.check_rate_limit(Some(limit(100, 60))).is_ok());
        assert!(caller.check_rate_limit(Some(limit(10, 60))).is_ok());
        assert!(caller.check_rate_limit(Some(limit(100, 3600))).is_ok());
        for looser in [
            None,
            Some(limit(101, 60)),
            Some(limit(100, 59)),
            Some(limit(50, 29)),
        ] {
            assert_eq!(
                caller.check_rate_limit(looser),
                Err(Refusal::LooserRateLimit {
                    caller_limit: limit(100, 60)
                }),
                "{looser:?}"
            );
        }
        assert!(Authority::whole_team().check_rate_limit(None).is_ok());
        assert!(key_authority(&[], None).check_rate_limit(None).is_ok());
    }

    #[test]
    fn a_key_grants_only_what_it_holds() {
        let caller = key_authority(&["keys:manage", "scans:read"], None);
        let asked = Scopes::new(["scans:read", "billing:admin", "scans:write"]).unwrap();
        let Err(Refusal::ScopesNotHeld { scopes }) = caller.check_grant(&asked, None) else {
            panic!("broader scopes must be refused");
        };
        let names: Vec<&str> = scopes.iter().map(Scope::as_str).collect();
        assert_eq!(names, ["billing:admin", "scans:write"]);
        assert!(
            caller
                .check_grant(&Scopes::new(["scans:read"]).unwrap(), None)
                .is_ok()
        );
        assert!(caller.check_grant(&Scopes::default(), None).is_ok());
    }

    #[test]
    fn a_key_that_expires_cannot_make_one_that_outlives_it() {
        let end = datetime!(2030-01-01 0:00 UTC);
        let caller = key_authority(&["keys:manage"], Some(end));
        let none = Scopes::default();
        assert!(caller.check_grant(&none, Some(end)).is_ok());
        assert!(
            caller
                .check_grant(&none, Some(datetime!(2029-01-01 0:00 UTC)))
                .is_ok()
        );
        for later in [None, Some(datetime!(2030-01-01 0:00:01 UTC))] {
            assert_eq!(
                caller.check_grant(&none, later),
                Err(Refusal::OutlivesCaller {
                    caller_expires_at: end
                })
            );
        }
    }

    #[test]
    fn a_key_manages_only_keys_no_broader_than_itself() {
        let caller = key_authority(&["keys:manage", "scans:read"], None);
        assert!(
            caller
                .check_manage(&Scopes::new(["scans:read"]).unwrap(), None)
                .is_ok()
        );
        assert!(matches!(
            caller.check_manage(&Scopes::new(["scans:write"]).unwrap(), None),
            Err(Refusal::KeyBroaderThanCaller { .. })
        ));
    }

    #[test]
    fn a_dying_key_cannot_touch_a_longer_lived_one_and_a_retired_key_nothing() {
        let end = datetime!(2030-01-01 0:00 UTC);
        let dying = key_authority(&["keys:manage"], Some(end));
        let none = Scopes::default();
        assert!(dying.check_manage(&none, Some(end)).is_ok());
        for later in [None, Some(datetime!(2031-01-01 0:00 UTC))] {
            assert_eq!(
                dying.check_manage(&none, later),
                Err(Refusal::KeyOutlivesCaller {
                    caller_expires_at: end
                })
            );
        }
        let retired = Authority {
            retired: true,
            ..key_authority(&["keys:manage"], None)
        };
        assert_eq!(retired.check_manage(&none, None), Err(Refusal::CallerRetired));
        assert_eq!(retired.check_grant(&none, None), Err(Refusal::CallerRetired));
    }

    #[test]
    fn a_team_admin_may_do_everything() {
        let admin = Authority::whole_team();
        let all = Scopes::new(["billing:admin", "keys:manage"]).unwrap();
        assert!(admin.check_grant(&all, None).is_ok());
        assert!(admin.check_manage(&all, None).is_ok());
    }
}
