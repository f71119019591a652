//! Cache invalidation callbacks: the backend-local caches (audit metadata, the audit log kept open,
//! what a role may read) register theirs once per backend.

use pgrx::pg_sys;
use std::cell::Cell;
use std::thread::LocalKey;

pub type RelcacheCallback = unsafe extern "C-unwind" fn(pg_sys::Datum, pg_sys::Oid);
pub type SyscacheCallback = unsafe extern "C-unwind" fn(pg_sys::Datum, i32, u32);

/// Registers `relcache` (if any) and each syscache callback, once per backend: `done` remembers
/// that it was. The callbacks must only clear their module's caches (they run inside the
/// server's invalidation processing).
pub fn register_once(
    done: &'static LocalKey<Cell<bool>>,
    relcache: Option<RelcacheCallback>,
    syscaches: &[(pg_sys::SysCacheIdentifier::Type, SyscacheCallback)],
) {
    if done.with(|d| d.replace(true)) {
        return;
    }
    // SAFETY: the server keeps a fixed number of callback slots per backend; each caller
    // registers once, so tenantguard uses a handful of them.
    unsafe {
        if let Some(cb) = relcache {
            pg_sys::CacheRegisterRelcacheCallback(Some(cb), pg_sys::Datum::from(0));
        }
        for (cache, cb) in syscaches {
            pg_sys::CacheRegisterSyscacheCallback(*cache as i32, Some(*cb), pg_sys::Datum::from(0));
        }
    }
}
