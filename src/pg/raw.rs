//! Server functions declared by their C symbols, so a call skips pgrx's per-call error boundary
//! (a `sigsetjmp`, and a Rust panic and back for an ERROR). They are called on hot paths: every
//! statement (slow-query hooks), every audited row, every policy evaluation.
//!
//! Most cannot raise an ERROR. Those marked "may raise" are called only from frames that own
//! nothing needing drop, so an ERROR passes through to PostgreSQL as it is, like a cast in SQL.

use pgrx::pg_sys::{
    config_generic, varlena, Datum, FunctionCallInfo, Oid, PGFunction, TimestampTz,
};
use std::ffi::{c_char, c_int, c_void};

/// The backend's local transaction id (`MyProc->lxid`; `MyProc->vxid.lxid` from PostgreSQL 17).
///
/// # Safety
/// MyProc must be set (any backend that runs SQL).
pub unsafe fn my_local_xid() -> u32 {
    #[cfg(any(feature = "pg14", feature = "pg15", feature = "pg16"))]
    {
        (*pgrx::pg_sys::MyProc).lxid
    }
    #[cfg(not(any(feature = "pg14", feature = "pg15", feature = "pg16")))]
    {
        (*pgrx::pg_sys::MyProc).vxid.lxid
    }
}

// The settings array: PostgreSQL 14 and 15 (16 replaced it with a hash table, and changed
// get_guc_variables() to build a sorted copy per call).
#[cfg(any(feature = "pg14", feature = "pg15"))]
extern "C-unwind" {
    pub fn get_guc_variables() -> *mut *mut config_generic;
    pub fn GetNumConfigOptions() -> c_int;
}

// The settings hash table's lookup, exported from PostgreSQL 16 (utils/guc_tables.h). Cannot fail
// with create_placeholders = false and skip_errors = true.
#[cfg(not(any(feature = "pg14", feature = "pg15")))]
extern "C-unwind" {
    pub fn find_option(
        name: *const c_char,
        create_placeholders: bool,
        skip_errors: bool,
        elevel: c_int,
    ) -> *mut config_generic;
}

extern "C-unwind" {
    pub fn GetCurrentTimestamp() -> TimestampTz;
    pub fn GetCurrentStatementStartTimestamp() -> TimestampTz;
    pub fn GetUserId() -> Oid;
    /// Cannot fail for a backend holding fewer than 200 LWLocks (tenantguard holds one at most).
    pub fn LWLockAcquire(
        lock: *mut pgrx::pg_sys::LWLock,
        mode: pgrx::pg_sys::LWLockMode::Type,
    ) -> bool;
    pub fn LWLockRelease(lock: *mut pgrx::pg_sys::LWLock);
    pub fn GetSessionUserId() -> Oid;
    pub fn pg_mbcliplen(mbstr: *const c_char, len: c_int, limit: c_int) -> c_int;
    /// Cannot fail with missing_ok = true and restrict_privileged = false; may raise with
    /// restrict_privileged = true (a superuser-only setting the role may not read).
    pub fn GetConfigOption(
        name: *const c_char,
        missing_ok: bool,
        restrict_privileged: bool,
    ) -> *const c_char;
    /// May raise (bad input).
    pub fn uuid_in(fcinfo: FunctionCallInfo) -> Datum;
    /// May raise (bad input, out of range).
    pub fn int8in(fcinfo: FunctionCallInfo) -> Datum;
    /// May raise (bad input, out of range).
    pub fn int4in(fcinfo: FunctionCallInfo) -> Datum;
    /// May raise (bad input, out of range).
    pub fn int2in(fcinfo: FunctionCallInfo) -> Datum;
    /// May raise whatever `func` raises.
    pub fn DirectFunctionCall1Coll(func: PGFunction, collation: Oid, arg1: Datum) -> Datum;
    /// May raise (out of memory).
    pub fn pg_detoast_datum_packed(datum: *mut varlena) -> *mut varlena;
    /// May raise (out of memory).
    pub fn palloc(size: usize) -> *mut c_void;
    /// May raise (out of memory), like palloc.
    pub fn MemoryContextAlloc(context: pgrx::pg_sys::MemoryContext, size: usize) -> *mut c_void;
    /// May raise (out of memory).
    pub fn cstring_to_text_with_len(s: *const c_char, len: c_int) -> *mut varlena;
}

/// Runs `f` with `row_security = on`, as a function's `SET row_security = on` clause would, when
/// the session has turned it off. tenantguard's own queries read its registry, which has row
/// level security; with `row_security = off` PostgreSQL refuses such a query outright (42501) for
/// a role that does not bypass row level security, so the guard and the API would fail for the
/// wrong reason. Turning it on for tenantguard's own work is always safe: `on` is the setting
/// under which policies apply.
pub fn with_row_security<R>(f: impl FnOnce() -> R) -> R {
    // SAFETY: a plain GUC variable of the server.
    if unsafe { pgrx::pg_sys::row_security } {
        return f();
    }
    with_setting(c"row_security", c"on", f)
}

/// Runs `f` with a setting changed for its duration, as a function's SET clause does.
pub fn with_setting<R>(name: &std::ffi::CStr, value: &std::ffi::CStr, f: impl FnOnce() -> R) -> R {
    // SAFETY: the same calls a function's SET clause makes (fmgr_security_definer). On an ERROR
    // inside `f`, the (sub)transaction abort pops this nesting level and restores the setting.
    let level = unsafe {
        let level = pgrx::pg_sys::NewGUCNestLevel();
        pgrx::pg_sys::set_config_option(
            name.as_ptr(),
            value.as_ptr(),
            pgrx::pg_sys::GucContext::PGC_USERSET,
            pgrx::pg_sys::GucSource::PGC_S_SESSION,
            pgrx::pg_sys::GucAction::GUC_ACTION_SAVE,
            true,
            pgrx::PgLogLevel::ERROR as i32,
            false,
        );
        level
    };
    let out = f();
    // SAFETY: pops the nesting level opened above, restoring the setting.
    unsafe { pgrx::pg_sys::AtEOXact_GUC(true, level) };
    out
}
