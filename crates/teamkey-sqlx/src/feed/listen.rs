//! PostgreSQL: `LISTEN` on a connection of the feed's own, heartbeats
//! through the pool.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use sqlx::Postgres;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use teamkey_core::{InvalidationSink, InvalidationSource, StoreError};

use super::{FeedError, SqlxInvalidations, report, within};

/// The channel the migration's trigger announces changed key ids on.
pub const NOTIFY_CHANNEL: &str = "teamkey_api_keys";

/// The `application_name` of the feed's listening connection by default,
/// as `pg_stat_activity` shows it.
pub const LISTENER_APPLICATION_NAME: &str = "teamkey-invalidations";

/// How long connecting and `LISTEN` may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and how the listening connection connects.
#[derive(Clone)]
pub(crate) struct ListenerConfig {
    /// Its own options, else the pool's.
    options: Option<PgConnectOptions>,
    application_name: String,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        Self {
            options: None,
            application_name: LISTENER_APPLICATION_NAME.to_owned(),
        }
    }
}

impl SqlxInvalidations<Postgres> {
    /// The `application_name` of the listening connection, so that
    /// operators see it in `pg_stat_activity`. Default:
    /// [`LISTENER_APPLICATION_NAME`].
    #[must_use]
    pub fn application_name(mut self, name: &str) -> Self {
        name.clone_into(&mut self.config.listener.application_name);
        self
    }

    /// Where the listening connection connects, if not where the pool does:
    /// `LISTEN` needs a session of its own, which a pooler in transaction
    /// mode (PgBouncer's `pool_mode = transaction`) does not keep, so point
    /// this at PostgreSQL itself. Heartbeats still go through the pool: the
    /// two must reach the same database.
    #[must_use]
    pub fn listener_options(mut self, options: PgConnectOptions) -> Self {
        self.config.listener.options = Some(options);
        self
    }
}

#[async_trait::async_trait]
impl InvalidationSource for SqlxInvalidations<Postgres> {
    async fn run(&self, sink: InvalidationSink) -> StoreError {
        let Err(error) = listen(self, &sink).await;
        super::log_lost(&error);
        error
    }
}

/// Listens until the channel fails.
async fn listen(
    feed: &SqlxInvalidations<Postgres>,
    sink: &InvalidationSink,
) -> Result<Infallible, StoreError> {
    let config = &feed.config;
    let options = config
        .listener
        .options
        .clone()
        .unwrap_or_else(|| (*feed.pool.connect_options()).clone())
        .application_name(&config.listener.application_name);
    // A heartbeat channel per listening session: instances never see each
    // other's heartbeats, and a late one from a lost session never counts.
    let heartbeat_channel = format!(
        "teamkey_hb_{:016x}",
        RandomState::new().hash_one((std::process::id(), Instant::now()))
    );
    let since = Instant::now();
    let mut listener = within(CONNECT_TIMEOUT, "connecting the listener", async {
        // A pool of one, of the feed's own: the listener holds its connection
        // for good, and must not take one from the application's pool.
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .max_lifetime(None)
            .idle_timeout(None)
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect_with(options)
            .await?;
        let mut listener = PgListener::connect_with(&pool).await?;
        // A lost connection must end the feed, never be replaced silently:
        // what was sent in between would be lost (see `receive`).
        listener.eager_reconnect(false);
        listener
            .listen_all([NOTIFY_CHANNEL, heartbeat_channel.as_str()])
            .await?;
        Ok(listener)
    })
    .await?;
    sink.connected(since);
    tracing::debug!("teamkey invalidation feed: listening on {NOTIFY_CHANNEL}");

    let beats = Mutex::new(Beats::default());
    tokio::select! {
        error = heartbeats(feed, &heartbeat_channel, &beats) => Err(error),
        error = receive(&mut listener, sink, &heartbeat_channel, &beats, config.timeout) => Err(error),
    }
}

/// Sends a heartbeat every interval, through the pool, for ever. A
/// heartbeat that cannot be sent only leaves the cache unconfirmed: the
/// listener is not to blame for the pool.
async fn heartbeats(feed: &SqlxInvalidations<Postgres>, channel: &str, beats: &Mutex<Beats>) -> StoreError {
    let mut ticks = tokio::time::interval(feed.tick());
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let n = lock(beats).send(Instant::now());
        let sent = sqlx::query("SELECT pg_notify($1, $2)")
            .bind(channel)
            .bind(n.to_string())
            .execute(&feed.pool)
            .await;
        match sent {
            Ok(_) => lock(beats).acked(n, Instant::now()),
            Err(e) => {
                tracing::debug!(error = %e, "teamkey invalidation feed: heartbeat not sent");
                lock(beats).failed(n);
            }
        }
    }
}

/// Reports every notice until the connection is lost or a sent heartbeat
/// is not back within `timeout`.
async fn receive(
    listener: &mut PgListener,
    sink: &InvalidationSink,
    heartbeat_channel: &str,
    beats: &Mutex<Beats>,
    timeout: Duration,
) -> StoreError {
    loop {
        let now = Instant::now();
        let due = lock(beats).due(timeout);
        if due.is_some_and(|due| due <= now) {
            return FeedError::lost(format!(
                "a heartbeat was not back within {timeout:?}: the listening connection is lost"
            ));
        }
        // Wake up by the next heartbeat's deadline, or after `timeout` to
        // look again (a heartbeat may have been sent meanwhile).
        let wake = due.unwrap_or(now + timeout);
        // `try_recv`, never `recv`: `recv` reconnects silently and drops what
        // was sent meanwhile; `Ok(None)` is that loss, which must end the feed
        // so that the cache is flushed. Dropping `try_recv` at the deadline
        // is safe: it only takes whole messages off the socket.
        let notice = match tokio::time::timeout_at(wake.into(), listener.try_recv()).await {
            Err(_) => continue,
            Ok(Ok(Some(notice))) => notice,
            Ok(Ok(None)) => return FeedError::lost("the listening connection was closed"),
            Ok(Err(e)) => return FeedError::failed("receiving notices", e),
        };
        if notice.channel() == NOTIFY_CHANNEL {
            report(sink, notice.payload());
        } else if notice.channel() == heartbeat_channel {
            // Notices arrive in commit order: every change committed before
            // this heartbeat was sent has been reported above.
            let sent = notice.payload().parse().ok().and_then(|n| lock(beats).arrived(n));
            if let Some(sent) = sent {
                sink.confirmed(sent);
            }
        }
    }
}

fn lock(beats: &Mutex<Beats>) -> std::sync::MutexGuard<'_, Beats> {
    beats.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Heartbeats sent and not yet back.
#[derive(Default)]
struct Beats {
    next: u64,
    pending: VecDeque<Beat>,
}

struct Beat {
    n: u64,
    /// Taken before sending: what a confirmation vouches for.
    sent: Instant,
    /// When the pool said the `NOTIFY` committed: from then on it is on its
    /// way to the listener.
    committed: Option<Instant>,
}

impl Beats {
    /// Registers heartbeat `n` before it is sent (it may come back before
    /// the pool answers).
    fn send(&mut self, sent: Instant) -> u64 {
        let n = self.next;
        self.next += 1;
        self.pending.push_back(Beat {
            n,
            sent,
            committed: None,
        });
        n
    }

    fn acked(&mut self, n: u64, at: Instant) {
        if let Some(beat) = self.pending.iter_mut().find(|b| b.n == n) {
            beat.committed = Some(at);
        }
    }

    fn failed(&mut self, n: u64) {
        self.pending.retain(|b| b.n != n);
    }

    /// Heartbeat `n` is back: when it was sent, if it was ours. Older ones
    /// are settled too (notices arrive in order).
    fn arrived(&mut self, n: u64) -> Option<Instant> {
        let sent = self.pending.iter().find(|b| b.n == n)?.sent;
        self.pending.retain(|b| b.n > n);
        Some(sent)
    }

    /// When the oldest committed heartbeat becomes overdue.
    fn due(&self, timeout: Duration) -> Option<Instant> {
        self.pending
            .iter()
            .filter_map(|b| b.committed)
            .min()
            .map(|at| at + timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeats_settle_in_order_and_fall_due_once_committed() {
        let t0 = Instant::now();
        let timeout = Duration::from_secs(1);
        let mut beats = Beats::default();
        let (a, b) = (beats.send(t0), beats.send(t0 + timeout / 4));
        assert_eq!(beats.due(timeout), None, "nothing committed, nothing due");
        beats.acked(b, t0 + timeout / 2);
        assert_eq!(beats.due(timeout), Some(t0 + timeout / 2 + timeout));
        beats.acked(a, t0 + timeout / 3);
        assert_eq!(beats.due(timeout), Some(t0 + timeout / 3 + timeout));
        assert_eq!(beats.arrived(b), Some(t0 + timeout / 4), "b settles a too");
        assert_eq!(beats.due(timeout), None);
        assert_eq!(beats.arrived(a), None, "already settled");
        assert_eq!(beats.arrived(99), None, "not ours");

        let c = beats.send(t0);
        beats.failed(c);
        assert_eq!(beats.arrived(c), None);
        assert!(beats.pending.is_empty());
    }
}
