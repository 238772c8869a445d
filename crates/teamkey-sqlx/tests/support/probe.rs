//! Which SQL statements one piece of a test ran, and how many rows each
//! returned, from sqlx's `sqlx::query` events.
//!
//! A global subscriber (SQLite runs statements on a worker thread of its
//! own, which a thread-local one would miss) files each statement under the
//! `probe` span it ran in: sqlx's SQLite worker enters the caller's span,
//! so tests running side by side never see each other's statements.

#![allow(dead_code)] // each test crate uses a part

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use tracing::Instrument as _;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// One statement as sqlx reported it.
#[derive(Debug, Clone)]
pub(crate) struct Statement {
    /// The full SQL text.
    pub(crate) sql: String,
    /// Rows the database sent back.
    pub(crate) rows_returned: u64,
}

type Shared = Arc<Mutex<Vec<(u64, Statement)>>>;

/// The statements of every probe so far, until collected.
#[derive(Clone)]
pub(crate) struct StatementLog {
    recorded: Shared,
    next_probe: Arc<AtomicU64>,
}

/// The probe id a span carries, kept in its extensions.
struct ProbeId(u64);

#[derive(Default)]
struct Fields {
    probe: Option<u64>,
    summary: String,
    statement: String,
    rows_returned: u64,
}

impl Visit for Fields {
    fn record_u64(&mut self, field: &Field, value: u64) {
        match field.name() {
            "probe" => self.probe = Some(value),
            "rows_returned" => self.rows_returned = value,
            _ => {}
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "summary" => self.summary = value.to_owned(),
            "db.statement" => self.statement = value.to_owned(),
            _ => {}
        }
    }

    fn record_debug(&mut self, _: &Field, _: &dyn std::fmt::Debug) {}
}

struct ProbeLayer(Shared);

impl<S> Layer<S> for ProbeLayer
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if attrs.metadata().name() != "probe" {
            return;
        }
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        if let (Some(probe), Some(span)) = (fields.probe, ctx.span(id)) {
            span.extensions_mut().insert(ProbeId(probe));
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        if event.metadata().target() != "sqlx::query" {
            return;
        }
        let Some(probe) = ctx.event_scope(event).and_then(|scope| {
            scope
                .from_root()
                .find_map(|span| span.extensions().get::<ProbeId>().map(|p| p.0))
        }) else {
            return;
        };
        let mut fields = Fields::default();
        event.record(&mut fields);
        // sqlx sends the full text only when its summary shortened it.
        let sql = if fields.statement.trim().is_empty() {
            fields.summary
        } else {
            fields.statement.trim().to_owned()
        };
        self.0.lock().unwrap().push((
            probe,
            Statement {
                sql,
                rows_returned: fields.rows_returned,
            },
        ));
    }
}

impl StatementLog {
    /// The process-wide log, installed as the global subscriber on first use.
    pub(crate) fn global() -> Self {
        static LOG: OnceLock<StatementLog> = OnceLock::new();
        LOG.get_or_init(|| {
            let log = Self {
                recorded: Shared::default(),
                next_probe: Arc::new(AtomicU64::new(1)),
            };
            let subscriber = tracing_subscriber::registry()
                .with(ProbeLayer(Arc::clone(&log.recorded)).with_filter(LevelFilter::DEBUG));
            tracing::subscriber::set_global_default(subscriber).expect("one global subscriber");
            log
        })
        .clone()
    }

    /// Runs `work` and returns its output with the statements it ran,
    /// leaving out those of a connection the pool opened on the way
    /// (SQLite's `PRAGMA`s, MySQL's `SET sql_mode=…`): the driver's, not
    /// the store's, and only when the pool happens to need one.
    pub(crate) async fn probe<F: Future>(&self, work: F) -> (F::Output, Vec<Statement>) {
        let probe = self.next_probe.fetch_add(1, Ordering::SeqCst);
        let output = work.instrument(tracing::info_span!("probe", probe)).await;
        let mut recorded = self.recorded.lock().unwrap();
        let (mine, others) = recorded.drain(..).partition(|(p, _)| *p == probe);
        *recorded = others;
        let mine: Vec<(u64, Statement)> = mine;
        let connecting = |s: &Statement| s.sql.starts_with("PRAGMA ") || s.sql.starts_with("SET sql_mode=");
        (
            output,
            mine.into_iter()
                .map(|(_, s)| s)
                .filter(|s| !connecting(s))
                .collect(),
        )
    }
}
