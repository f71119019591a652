//! Session state that changes what tenantguard does, shared by its features:
//!
//! - `busy`: tenantguard's own DDL (protect/unprotect) is running; the event triggers stand aside.
//! - `internal`: tenantguard's own statements (its functions' SPI, the flush, the worker) are
//!   running; slow-query capture does not record them.
//! - the allowance: tables the current transaction may change outside protect()/unprotect() (the
//!   dry-run and unprotect_sql() scripts start with `_allow_change`).
//!
//! Each is raised for as long as a guard value lives. An ERROR normally unwinds through the guard
//! and lowers it again, but a longjmp past Rust frames would not; so every (sub)transaction abort
//! also puts them back to what they were when that (sub)transaction began. A failed protect()
//! can then never leave the guard standing aside, or capture switched off, for the rest of the
//! session.

use pgrx::pg_sys;
use std::cell::{Cell, RefCell};

thread_local! {
    static BUSY: Cell<u32> = const { Cell::new(0) };
    static INTERNAL: Cell<u32> = const { Cell::new(0) };
    /// What `internal` returns to at a top-level abort: 1 in the flush worker, 0 elsewhere.
    static INTERNAL_BASE: Cell<u32> = const { Cell::new(0) };
    /// (local transaction id, tables) the current transaction may change.
    static ALLOWED: RefCell<(u32, Vec<pg_sys::Oid>)> = const { RefCell::new((0, Vec::new())) };
    /// At each open subtransaction: (busy, internal, number of allowed tables) when it began.
    static SAVED: RefCell<Vec<(u32, u32, usize)>> = const { RefCell::new(Vec::new()) };
    static REGISTERED: Cell<bool> = const { Cell::new(false) };
}

/// Registers the (sub)transaction callbacks that restore the state at aborts. Called from
/// `_PG_init`, so once per backend that loads the library.
pub fn init() {
    if REGISTERED.with(|r| r.replace(true)) {
        return;
    }
    // SAFETY: registers callbacks that only touch this module's thread-locals and never raise.
    unsafe {
        pg_sys::RegisterXactCallback(Some(xact_event), std::ptr::null_mut());
        pg_sys::RegisterSubXactCallback(Some(subxact_event), std::ptr::null_mut());
    }
}

/// Runs at every transaction end, outside pgrx's error boundary: it only sets thread-locals.
unsafe extern "C-unwind" fn xact_event(
    event: pg_sys::XactEvent::Type,
    _arg: *mut std::ffi::c_void,
) {
    use pg_sys::XactEvent::*;
    match event {
        XACT_EVENT_ABORT | XACT_EVENT_PARALLEL_ABORT => {
            BUSY.with(|b| b.set(0));
            INTERNAL.with(|i| i.set(INTERNAL_BASE.with(|b| b.get())));
            // The allowance is keyed by the transaction, so an aborted one's can never apply
            // again; it stays only to explain a later refusal (`was_allowed_earlier`).
            clear_saved();
        }
        XACT_EVENT_COMMIT | XACT_EVENT_PARALLEL_COMMIT | XACT_EVENT_PREPARE => clear_saved(),
        _ => {}
    }
}

fn clear_saved() {
    SAVED.with(|s| {
        if let Ok(mut s) = s.try_borrow_mut() {
            s.clear();
        }
    });
}

/// Runs at every subtransaction start and end, outside pgrx's error boundary.
unsafe extern "C-unwind" fn subxact_event(
    event: pg_sys::SubXactEvent::Type,
    _my: pg_sys::SubTransactionId,
    _parent: pg_sys::SubTransactionId,
    _arg: *mut std::ffi::c_void,
) {
    use pg_sys::SubXactEvent::*;
    let Ok(mut saved) = SAVED.with(|s| s.try_borrow_mut().map(|mut s| std::mem::take(&mut *s)))
    else {
        return;
    };
    match event {
        SUBXACT_EVENT_START_SUB => saved.push((
            BUSY.with(|b| b.get()),
            INTERNAL.with(|i| i.get()),
            allowed_now(),
        )),
        SUBXACT_EVENT_COMMIT_SUB => {
            saved.pop();
        }
        SUBXACT_EVENT_ABORT_SUB => {
            if let Some((busy, internal, allowed)) = saved.pop() {
                BUSY.with(|b| b.set(busy));
                INTERNAL.with(|i| i.set(internal));
                let lxid = local_xid();
                ALLOWED.with(|a| {
                    if let Ok(mut a) = a.try_borrow_mut() {
                        if a.0 == lxid {
                            a.1.truncate(allowed);
                        }
                    }
                });
            }
        }
        _ => {}
    }
    SAVED.with(|s| {
        if let Ok(mut s) = s.try_borrow_mut() {
            *s = saved;
        }
    });
}

/// How many tables the current transaction has been allowed to change so far.
fn allowed_now() -> usize {
    let lxid = local_xid();
    ALLOWED.with(|a| {
        a.try_borrow()
            .map_or(0, |a| if a.0 == lxid { a.1.len() } else { 0 })
    })
}

/// Marks tenantguard's own DDL for as long as it lives: the event triggers stand aside.
pub struct Busy;

impl Busy {
    pub fn enter() -> Busy {
        BUSY.with(|b| b.set(b.get() + 1));
        Busy
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        BUSY.with(|b| b.set(b.get().saturating_sub(1)));
    }
}

pub fn busy() -> bool {
    BUSY.with(|b| b.get() > 0)
}

/// Marks tenantguard's own work for as long as it lives: statements run meanwhile are not
/// recorded by slow-query capture.
pub struct Internal;

impl Internal {
    pub fn enter() -> Internal {
        INTERNAL.with(|i| i.set(i.get() + 1));
        Internal
    }
}

impl Drop for Internal {
    fn drop(&mut self) {
        INTERNAL.with(|i| i.set(i.get().saturating_sub(1)));
    }
}

pub fn internal() -> bool {
    INTERNAL.with(|i| i.get() > 0)
}

/// For a process whose every statement is tenantguard's own (the flush worker).
pub fn internal_for_good() {
    INTERNAL_BASE.with(|b| b.set(1));
    INTERNAL.with(|i| i.set(i.get().max(1)));
}

/// The backend's current local transaction id.
pub fn local_xid() -> u32 {
    // SAFETY: MyProc is set for every backend that runs SQL; the field is the backend's own.
    unsafe { crate::pg::raw::my_local_xid() }
}

/// Lets the current transaction change the table's protection (see `_allow_change`).
pub fn allow(oid: pg_sys::Oid) {
    let lxid = local_xid();
    ALLOWED.with(|a| {
        let mut a = a.borrow_mut();
        if a.0 != lxid {
            *a = (lxid, Vec::new());
        }
        if !a.1.contains(&oid) {
            a.1.push(oid);
        }
    });
}

/// True when the current transaction called `_allow_change` for the table.
pub fn is_allowed(oid: pg_sys::Oid) -> bool {
    let lxid = local_xid();
    ALLOWED.with(|a| {
        let a = a.borrow();
        a.0 == lxid && a.1.contains(&oid)
    })
}

/// True when an earlier transaction of this session called `_allow_change` for the table (a
/// script run statement by statement in autocommit).
pub fn was_allowed_earlier(oid: pg_sys::Oid) -> bool {
    let lxid = local_xid();
    ALLOWED.with(|a| {
        let a = a.borrow();
        a.0 != lxid && a.1.contains(&oid)
    })
}
