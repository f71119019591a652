//! Cache invalidation callbacks: the backend-local caches (audit metadata, the audit log kept open,
//! what a role may read, the setting names Citus needs) register theirs once per backend.
//!
//! PostgreSQL has ten relcache callback slots per backend, shared by every library (Citus takes
//! several). tenantguard takes one: its modules' relcache callbacks hang off a single dispatcher.

use pgrx::pg_sys;
use std::cell::{Cell, RefCell};
use std::thread::LocalKey;

pub type RelcacheCallback = unsafe extern "C-unwind" fn(pg_sys::Datum, pg_sys::Oid);
pub type SyscacheCallback = unsafe extern "C-unwind" fn(pg_sys::Datum, i32, u32);

thread_local! {
    static RELCACHE: RefCell<Vec<RelcacheCallback>> = const { RefCell::new(Vec::new()) };
    static DISPATCHER: Cell<bool> = const { Cell::new(false) };
}

/// The one relcache callback tenantguard registers: calls each module's in turn.
unsafe extern "C-unwind" fn dispatch_relcache(arg: pg_sys::Datum, relid: pg_sys::Oid) {
    let callbacks = RELCACHE.with(|r| r.borrow().clone());
    for cb in callbacks {
        cb(arg, relid);
    }
}

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
    if let Some(cb) = relcache {
        RELCACHE.with(|r| r.borrow_mut().push(cb));
        if !DISPATCHER.with(|d| d.replace(true)) {
            // SAFETY: one slot of the server's ten, for the whole extension.
            unsafe {
                pg_sys::CacheRegisterRelcacheCallback(
                    Some(dispatch_relcache),
                    pg_sys::Datum::from(0),
                )
            };
        }
    }
    // SAFETY: the server keeps 64 syscache callback slots per backend; each caller registers
    // once, so tenantguard uses a handful of them.
    unsafe {
        for (cache, cb) in syscaches {
            pg_sys::CacheRegisterSyscacheCallback(*cache as i32, Some(*cb), pg_sys::Datum::from(0));
        }
    }
}
