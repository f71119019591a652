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

extern "C-unwind" {
    pub fn GetCurrentTimestamp() -> TimestampTz;
    pub fn GetCurrentStatementStartTimestamp() -> TimestampTz;
    pub fn GetUserId() -> Oid;
    pub fn GetSessionUserId() -> Oid;
    pub fn get_guc_variables() -> *mut *mut config_generic;
    pub fn GetNumConfigOptions() -> c_int;
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
    /// May raise (out of memory).
    pub fn cstring_to_text_with_len(s: *const c_char, len: c_int) -> *mut varlena;
}
