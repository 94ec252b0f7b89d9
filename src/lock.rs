//! The one way the daemon takes a `std::sync::Mutex`.
//!
//! Every critical section in the daemon replaces whole values or appends to a
//! collection, so a panic that cuts one short leaves consistent state behind. A
//! poisoned lock is therefore still usable, and taking it never fails: one panic
//! (a bug in a collector, say) must not turn every later request into another.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `mutex`, recovering the guard of a poisoned lock.
pub fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
