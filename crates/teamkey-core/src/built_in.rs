//! Seeing through a user-given store or limiter to this crate's own
//! `MemoryStore` and `LocalRateLimiter`, which answer without waiting: the
//! manager then asks them directly, without their trait's boxed future (a
//! store or limiter that never waits should not cost an allocation per
//! request).

use std::any::Any;
use std::sync::Arc;

/// `given` itself when it is a `T`.
pub(crate) fn as_built_in<T, G>(given: &Arc<G>) -> Option<Arc<T>>
where
    T: Any + Send + Sync,
    G: Any + Send + Sync,
{
    let given: Arc<dyn Any + Send + Sync> = Arc::clone(given) as _;
    given.downcast().ok()
}
