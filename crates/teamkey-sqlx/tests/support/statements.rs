//! Counts the SQL statements sqlx runs, from its `sqlx::query` events.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt};

/// Counts statements process-wide, through a global tracing subscriber.
#[derive(Clone, Default)]
pub(crate) struct StatementCounter(Arc<AtomicUsize>);

struct CountingLayer(Arc<AtomicUsize>);

impl<S: tracing::Subscriber> Layer<S> for CountingLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        if event.metadata().target() == "sqlx::query" {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl StatementCounter {
    /// Installs the counter as the global subscriber. Once per process.
    pub(crate) fn install() -> Self {
        let counter = Self::default();
        let subscriber = tracing_subscriber::registry().with(
            CountingLayer(Arc::clone(&counter.0)).with_filter(tracing_subscriber::filter::LevelFilter::DEBUG),
        );
        tracing::subscriber::set_global_default(subscriber).expect("one global subscriber");
        counter
    }

    /// Statements so far.
    pub(crate) fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}
