//! Slow-query capture: executor and utility hooks time every statement; those at or over
//! `tenantguard.slow_query_ms` go into a fixed-size ring in shared memory, with the tenant and
//! application user as they were when the statement started. Errors and cancellations
//! (statement_timeout) are recorded too: the statements still running when a transaction or
//! subtransaction aborts are the failed ones (the hooks catch nothing; the abort callbacks record
//! them, with the SQLSTATE emit_log_hook saw). Nothing is inserted from inside a hook;
//! `flush_slow_queries()` (or the background worker) copies the ring into
//! `tenantguard.slow_query_log`.
//!
//! Needs `shared_preload_libraries = 'tenantguard'`; without it the hooks are not installed and the
//! reading functions raise a clear error.

use crate::catalog::kept_first;
use crate::errors::{raise, spi};
use crate::gucs;
use crate::privileges;
use crate::raw;
use crate::session;
use crate::settings::named_setting;
use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, SignalWakeFlags};
use pgrx::prelude::*;
use pgrx::spi::OwnedPreparedStatement;
use pgrx::{PgBuiltInOids, PgOid};
use std::cell::{Cell, OnceCell, RefCell};
use std::ffi::CStr;
use std::ptr;
use std::time::Duration;

const TEXT_MAX: usize = 4096;
const NAME_MAX: usize = 64;

const STATUS_OK: u8 = 0;
const STATUS_ERROR: u8 = 1;
const STATUS_CANCELLED: u8 = 2;

/// One ring slot. `seq` 0 means empty.
#[repr(C)]
#[derive(Clone, Copy)]
struct Entry {
    seq: u64,
    started_at: i64,
    duration_us: i64,
    rows: u64,
    queryid: i64,
    dbid: pg_sys::Oid,
    userid: pg_sys::Oid,
    status: u8,
    sqlstate: [u8; 5],
    tenant_len: u16,
    app_user_len: u16,
    query_len: u16,
    tenant: [u8; NAME_MAX],
    app_user: [u8; NAME_MAX],
    query: [u8; TEXT_MAX],
}

#[repr(C)]
struct Ring {
    lock: *mut pg_sys::LWLock,
    capacity: u64,
    /// The next entry's sequence number; only grows, across resets.
    next: u64,
}

static mut RING: *mut Ring = ptr::null_mut();
static mut PRELOADED: bool = false;
static mut PREV_SHMEM_REQUEST: pg_sys::shmem_request_hook_type = None;
static mut PREV_SHMEM_STARTUP: pg_sys::shmem_startup_hook_type = None;
static mut PREV_EXECUTOR_START: pg_sys::ExecutorStart_hook_type = None;
static mut PREV_EXECUTOR_RUN: pg_sys::ExecutorRun_hook_type = None;
static mut PREV_EXECUTOR_FINISH: pg_sys::ExecutorFinish_hook_type = None;
static mut PREV_EXECUTOR_END: pg_sys::ExecutorEnd_hook_type = None;
static mut PREV_PROCESS_UTILITY: pg_sys::ProcessUtility_hook_type = None;
static mut PREV_EMIT_LOG: pg_sys::emit_log_hook_type = None;

// The standard executor and utility entry points, called directly rather than through pgrx's
// error boundary: an ERROR raised inside the statement then travels to PostgreSQL's own handler
// untouched (message, detail, context, position), and the hooks learn about it from the
// (sub)transaction abort callbacks instead of catching it.
extern "C-unwind" {
    #[link_name = "standard_ExecutorStart"]
    fn raw_standard_executor_start(query_desc: *mut pg_sys::QueryDesc, eflags: i32);
    #[link_name = "standard_ExecutorRun"]
    fn raw_standard_executor_run(
        query_desc: *mut pg_sys::QueryDesc,
        direction: pg_sys::ScanDirection::Type,
        count: u64,
        execute_once: bool,
    );
    #[link_name = "standard_ExecutorFinish"]
    fn raw_standard_executor_finish(query_desc: *mut pg_sys::QueryDesc);
    #[link_name = "standard_ExecutorEnd"]
    fn raw_standard_executor_end(query_desc: *mut pg_sys::QueryDesc);
    #[link_name = "standard_ProcessUtility"]
    fn raw_standard_process_utility(
        pstmt: *mut pg_sys::PlannedStmt,
        query_string: *const std::ffi::c_char,
        read_only_tree: bool,
        context: pg_sys::ProcessUtilityContext::Type,
        params: pg_sys::ParamListInfo,
        query_env: *mut pg_sys::QueryEnvironment,
        dest: *mut pg_sys::DestReceiver,
        qc: *mut pg_sys::QueryCompletion,
    );
}

const TRANCHE: &CStr = c"tenantguard";
const SEGMENT: &CStr = c"tenantguard slow query ring";

/// What a running statement needs to become an entry.
struct Running {
    /// The QueryDesc (executor) or PlannedStmt (utility) the entry belongs to.
    key: usize,
    started_at: i64,
    /// Time spent so far in ExecutorRun and ExecutorFinish (executor statements), and when the
    /// current Run/Finish (or the utility statement) began, 0 when none is under way. A portal
    /// that waits for its client's next fetch, or to be closed at the next Bind, is not running:
    /// like pg_stat_statements, the duration counts only Run and Finish.
    busy_us: i64,
    active_since: i64,
    tenant: ([u8; NAME_MAX], u16),
    app_user: ([u8; NAME_MAX], u16),
    /// The statement's source text, its location and length in it. For a top-level statement the
    /// text belongs to the client's message (or the portal's own copy of it) and outlives the
    /// statement and its abort; a nested statement's text belongs to its caller (a PL/pgSQL
    /// EXECUTE string, say), which may free it before the abort callbacks run, so it is copied
    /// into `copied` when the statement starts and `source` is null.
    source: *const std::ffi::c_char,
    location: i32,
    length: i32,
    copied: Option<Box<[u8]>>,
    queryid: u64,
    /// CALL or DO: a procedure that may COMMIT or ROLLBACK while it runs.
    procedure: bool,
}

thread_local! {
    /// Executor/utility nesting depth, as pg_stat_statements counts it.
    static NESTING: Cell<u32> = const { Cell::new(0) };
    static RUNNING: RefCell<Vec<Running>> = const { RefCell::new(Vec::new()) };
    /// At each open subtransaction: (nesting, number of running statements) when it started.
    static SUBXACTS: RefCell<Vec<(u32, usize)>> = const { RefCell::new(Vec::new()) };
    /// SQLSTATE of the last ERROR reported (emit_log_hook), for the abort that follows it.
    static LAST_ERROR: Cell<Option<i32>> = const { Cell::new(None) };
}

fn entry_size() -> usize {
    std::mem::size_of::<Entry>()
}

fn ring_size() -> usize {
    std::mem::size_of::<Ring>() + entry_size() * gucs::slow_query_max() as usize
}

/// The ring's entries.
///
/// # Safety
/// RING must be attached.
unsafe fn entries<'a>() -> &'a mut [Entry] {
    let base = (RING as *mut u8).add(std::mem::size_of::<Ring>()) as *mut Entry;
    std::slice::from_raw_parts_mut(base, (*RING).capacity as usize)
}

fn preloaded() -> bool {
    // SAFETY: written once in _PG_init.
    unsafe { PRELOADED && !RING.is_null() }
}

/// Installs the hooks, asks for shared memory and registers the flush worker. Only while
/// shared_preload_libraries is being processed.
pub fn init() {
    // SAFETY: plain globals of the postmaster during preload.
    unsafe {
        if !pg_sys::process_shared_preload_libraries_in_progress {
            return;
        }
        PRELOADED = true;
        // No EnableQueryId(): like auto_explain, tenantguard records the query id when the server
        // computes one (compute_query_id = on, or auto with pg_stat_statements loaded) and does not
        // turn it on by itself. Computing it costs about 2,800 instructions for a `pgbench -S`
        // statement, three times what the hooks cost (bench/slowlog_instructions.sh).
        PREV_SHMEM_REQUEST = pg_sys::shmem_request_hook;
        pg_sys::shmem_request_hook = Some(shmem_request);
        PREV_SHMEM_STARTUP = pg_sys::shmem_startup_hook;
        pg_sys::shmem_startup_hook = Some(shmem_startup);
        PREV_EXECUTOR_START = pg_sys::ExecutorStart_hook;
        pg_sys::ExecutorStart_hook = Some(executor_start);
        PREV_EXECUTOR_RUN = pg_sys::ExecutorRun_hook;
        pg_sys::ExecutorRun_hook = Some(executor_run);
        PREV_EXECUTOR_FINISH = pg_sys::ExecutorFinish_hook;
        pg_sys::ExecutorFinish_hook = Some(executor_finish);
        PREV_EXECUTOR_END = pg_sys::ExecutorEnd_hook;
        pg_sys::ExecutorEnd_hook = Some(executor_end);
        PREV_PROCESS_UTILITY = pg_sys::ProcessUtility_hook;
        pg_sys::ProcessUtility_hook = Some(process_utility);
        PREV_EMIT_LOG = pg_sys::emit_log_hook;
        pg_sys::emit_log_hook = Some(emit_log);
        pg_sys::RegisterXactCallback(Some(xact_event), ptr::null_mut());
        pg_sys::RegisterSubXactCallback(Some(subxact_event), ptr::null_mut());
    }
    BackgroundWorkerBuilder::new("tenantguard slow query flush")
        .set_type("tenantguard slow query flush")
        .set_library("tenantguard")
        .set_function("tenantguard_flush_worker")
        .enable_spi_access()
        .set_restart_time(Some(Duration::from_secs(10)))
        .load();
}

#[pg_guard]
unsafe extern "C-unwind" fn shmem_request() {
    if let Some(prev) = PREV_SHMEM_REQUEST {
        prev();
    }
    pg_sys::RequestAddinShmemSpace(ring_size());
    pg_sys::RequestNamedLWLockTranche(TRANCHE.as_ptr(), 1);
}

#[pg_guard]
unsafe extern "C-unwind" fn shmem_startup() {
    if let Some(prev) = PREV_SHMEM_STARTUP {
        prev();
    }
    let init_lock = ptr::addr_of_mut!((*pg_sys::MainLWLockArray.add(21)).lock); // AddinShmemInitLock
    pg_sys::LWLockAcquire(init_lock, pg_sys::LWLockMode::LW_EXCLUSIVE);
    let mut found = false;
    let ring = pg_sys::ShmemInitStruct(SEGMENT.as_ptr(), ring_size(), &mut found) as *mut Ring;
    if !found {
        ptr::write_bytes(ring as *mut u8, 0, ring_size());
        (*ring).lock = ptr::addr_of_mut!((*pg_sys::GetNamedLWLockTranche(TRANCHE.as_ptr())).lock);
        (*ring).capacity = gucs::slow_query_max() as u64;
        (*ring).next = 1;
    }
    RING = ring;
    pg_sys::LWLockRelease(init_lock);
}

fn copy_name(src: *const std::ffi::c_char) -> ([u8; NAME_MAX], u16) {
    let mut out = [0u8; NAME_MAX];
    if src.is_null() {
        return (out, 0);
    }
    // SAFETY: a NUL-terminated string from the server.
    let bytes = unsafe { CStr::from_ptr(src) }.to_bytes();
    let n = clip(bytes, NAME_MAX);
    out[..n].copy_from_slice(&bytes[..n]);
    (out, n as u16)
}

/// The longest prefix of `bytes` of at most `limit` bytes that ends on a character boundary.
fn clip(bytes: &[u8], limit: usize) -> usize {
    if bytes.len() <= limit {
        return bytes.len();
    }
    // SAFETY: pg_mbcliplen reads at most `len` bytes of a valid string in the server encoding.
    unsafe {
        raw::pg_mbcliplen(
            bytes.as_ptr() as *const std::ffi::c_char,
            bytes.len() as i32,
            limit as i32,
        ) as usize
    }
}

fn tracked(level: u32) -> bool {
    let threshold = gucs::slow_query_ms();
    // A parallel worker runs part of a statement its leader times already.
    // SAFETY: a plain global of the backend.
    threshold >= 0
        && (level == 0 || gucs::slow_query_track_all())
        && !session::internal()
        && unsafe { pg_sys::ParallelWorkerNumber } < 0
}

/// Bodies of tenantguard's SQL and PL/pgSQL functions, and the verdicts already reached for
/// statement texts (a loop runs the same statement text again and again; searching every body for
/// it each time cost about 14 us per nested statement).
struct Bodies {
    texts: Vec<String>,
    verdicts: std::collections::HashMap<Vec<u8>, bool>,
}

/// Statement texts remembered at most; the map starts over beyond this.
const MAX_VERDICTS: usize = 4096;

thread_local! {
    /// Bodies of tenantguard's SQL and PL/pgSQL functions in this database, loaded when first
    /// needed and dropped when pg_proc changes.
    static BODIES: RefCell<Option<Bodies>> = const { RefCell::new(None) };
    static BODIES_CALLBACK: Cell<bool> = const { Cell::new(false) };
}

#[pg_guard]
unsafe extern "C-unwind" fn bodies_invalidated(_arg: pg_sys::Datum, _cacheid: i32, _hash: u32) {
    BODIES.with(|b| {
        if let Ok(mut b) = b.try_borrow_mut() {
            *b = None;
        }
    });
}

/// True for a nested statement that comes from one of tenantguard's own SQL or PL/pgSQL
/// functions (coverage(), lint(), the protect() wrapper, ...). Only asked for nested statements
/// with slow_query_track = all.
fn from_tenantguard_function(source: *const std::ffi::c_char) -> bool {
    if source.is_null() {
        return false;
    }
    if BODIES.with(|b| b.borrow().is_none()) {
        BODIES_CALLBACK.with(|r| {
            if !r.get() {
                // SAFETY: registers a callback that only clears this cache.
                unsafe {
                    pg_sys::CacheRegisterSyscacheCallback(
                        pg_sys::SysCacheIdentifier::PROCOID as i32,
                        Some(bodies_invalidated),
                        pg_sys::Datum::from(0),
                    )
                };
                r.set(true);
            }
        });
        let _internal = session::Internal::enter();
        let bodies: Vec<String> = Spi::connect(|client| {
            client
                .select(
                    "SELECT p.prosrc FROM pg_catalog.pg_proc p
                       JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
                       JOIN pg_catalog.pg_language l ON l.oid = p.prolang
                      WHERE n.nspname = 'tenantguard' AND l.lanname IN ('sql', 'plpgsql')",
                    None,
                    &[],
                )?
                .map(|row| row.get::<String>(1).map(|s| s.unwrap_or_default()))
                .collect::<Result<Vec<_>, _>>()
        })
        .unwrap_or_default();
        BODIES.with(|b| {
            *b.borrow_mut() = Some(Bodies {
                texts: bodies,
                verdicts: Default::default(),
            })
        });
    }
    // SAFETY: the statement's NUL-terminated source text.
    let raw = unsafe { CStr::from_ptr(source) }.to_bytes();
    BODIES.with(|b| {
        let mut b = b.borrow_mut();
        let Some(bodies) = b.as_mut() else {
            return false;
        };
        if let Some(&verdict) = bodies.verdicts.get(raw) {
            return verdict;
        }
        let text = String::from_utf8_lossy(raw);
        let text = text.trim();
        let verdict = !text.is_empty() && bodies.texts.iter().any(|body| body.contains(text));
        if bodies.verdicts.len() >= MAX_VERDICTS {
            bodies.verdicts.clear();
        }
        bodies.verdicts.insert(raw.to_vec(), verdict);
        verdict
    })
}

// The hooks run for every statement, so their common path (a statement that is timed and turns
// out fast, or is not timed) stays outside pgrx's error boundary, whose `sigsetjmp` per call cost
// more than the rest of the hook. That path calls only server functions that cannot raise an
// ERROR (declared in `settings::raw`) and Rust code that cannot panic (no RefCell is borrowed while
// anything else runs). What can fail - recording an entry, the SPI lookup for nested statements -
// runs in #[pg_guard] functions, and the frames an ERROR from there passes through own nothing that
// needs dropping.

/// The statement's own text within its source string (a string may hold several statements).
///
/// # Safety
/// `source` must be null or a NUL-terminated string that stays valid while the result is used.
unsafe fn statement_text<'a>(
    source: *const std::ffi::c_char,
    location: i32,
    length: i32,
) -> &'a [u8] {
    if source.is_null() {
        return b"";
    }
    let all = CStr::from_ptr(source).to_bytes();
    let start = (location.max(0) as usize).min(all.len());
    let end = if location >= 0 && length > 0 {
        (start + length as usize).min(all.len())
    } else {
        all.len()
    };
    all[start..end].trim_ascii()
}

/// # Safety
/// `source` must be null or the statement's NUL-terminated source text, valid during the call;
/// `stmt` null or its plan.
unsafe fn begin(
    key: usize,
    source: *const std::ffi::c_char,
    stmt: *const pg_sys::PlannedStmt,
    active: bool,
    nested: bool,
) -> Running {
    let (location, length, queryid) = if stmt.is_null() {
        (-1, 0, 0)
    } else {
        ((*stmt).stmt_location, (*stmt).stmt_len, (*stmt).queryId)
    };
    let started_at = raw::GetCurrentTimestamp();
    // A nested statement's text is copied now, while it is valid (see Running::source), cut to
    // what an entry keeps.
    let (source, copied) = if nested {
        let text = statement_text(source, location, length);
        let keep = clip(text, TEXT_MAX);
        (ptr::null(), Some(Box::from(&text[..keep])))
    } else {
        (source, None)
    };
    Running {
        key,
        started_at,
        busy_us: 0,
        active_since: if active { started_at } else { 0 },
        tenant: copy_name(named_setting(0)),
        app_user: copy_name(named_setting(1)),
        source,
        location,
        length,
        copied,
        queryid,
        procedure: false,
    }
}

fn status_of(code: Option<i32>) -> (u8, [u8; 5]) {
    let Some(code) = code else {
        return (STATUS_ERROR, [0; 5]);
    };
    let mut out = [b'0'; 5];
    for (i, c) in out.iter_mut().enumerate() {
        *c = (((code >> (6 * i)) & 0x3F) as u8) + b'0';
    }
    let status = if &out == b"57014" {
        STATUS_CANCELLED
    } else {
        STATUS_ERROR
    };
    (status, out)
}

/// Stops the clock; records the statement when it ran at least the threshold.
fn finish(run: &Running, rows: u64, status: u8, sqlstate: [u8; 5]) {
    let duration_us = run.busy_us
        + if run.active_since != 0 {
            // SAFETY: a clock read.
            (unsafe { raw::GetCurrentTimestamp() }) - run.active_since
        } else {
            0
        };
    let threshold = gucs::slow_query_ms();
    if threshold < 0 || duration_us < threshold as i64 * 1000 || !preloaded() {
        return;
    }
    // SAFETY: `run` outlives the call.
    unsafe { record(run, duration_us, rows, status, &sqlstate) };
}

/// Writes a ring entry for a statement that ran `duration_us`.
#[pg_guard]
unsafe extern "C-unwind" fn record(
    run: *const Running,
    duration_us: i64,
    rows: u64,
    status: u8,
    sqlstate: *const [u8; 5],
) {
    let run = &*run;
    let sqlstate = *sqlstate;
    let text: &[u8] = match &run.copied {
        Some(copy) => copy,
        // SAFETY: a top-level statement's source text outlives the statement (see Running).
        None => statement_text(run.source, run.location, run.length),
    };
    let limit = (gucs::slow_query_text_limit() as usize).min(TEXT_MAX);
    let qlen = clip(text, limit);
    // SAFETY: the ring is attached; the lock guards every slot and `next`.
    unsafe {
        let ring = RING;
        pg_sys::LWLockAcquire((*ring).lock, pg_sys::LWLockMode::LW_EXCLUSIVE);
        let seq = (*ring).next;
        (*ring).next += 1;
        let slot = &mut entries()[(seq % (*ring).capacity) as usize];
        slot.seq = seq;
        slot.started_at = run.started_at;
        slot.duration_us = duration_us;
        slot.rows = rows;
        slot.queryid = run.queryid as i64;
        slot.dbid = pg_sys::MyDatabaseId;
        slot.userid = pg_sys::GetUserId();
        slot.status = status;
        slot.sqlstate = sqlstate;
        slot.tenant = run.tenant.0;
        slot.tenant_len = run.tenant.1;
        slot.app_user = run.app_user.0;
        slot.app_user_len = run.app_user.1;
        slot.query[..qlen].copy_from_slice(&text[..qlen]);
        slot.query_len = qlen as u16;
        pg_sys::LWLockRelease((*ring).lock);
    }
}

fn take_running(key: usize) -> Option<Running> {
    RUNNING.with(|r| {
        let mut r = r.try_borrow_mut().ok()?;
        let i = r.iter().rposition(|x| x.key == key)?;
        Some(r.remove(i))
    })
}

/// ExecutorRun/ExecutorFinish of statement `key` begins (`true`) or ends: its clock runs only
/// meanwhile. Nothing to do (no clock read) for a statement that is not timed.
fn set_active(key: usize, active: bool) {
    RUNNING.with(|r| {
        let Ok(mut r) = r.try_borrow_mut() else {
            return;
        };
        let Some(run) = r.iter_mut().rev().find(|x| x.key == key) else {
            return;
        };
        // SAFETY: a clock read.
        let now = unsafe { raw::GetCurrentTimestamp() };
        if active {
            run.active_since = now;
        } else if run.active_since != 0 {
            run.busy_us += now - run.active_since;
            run.active_since = 0;
        }
    });
}

fn push_running(run: Running) {
    RUNNING.with(|r| {
        if let Ok(mut r) = r.try_borrow_mut() {
            r.push(run);
        }
    });
}

/// Statements from index `from` on failed: record them, innermost first (with the SQLSTATE of
/// the error that was reported, if any), and forget them.
fn fail_from(from: usize) {
    let (status, sqlstate) = status_of(LAST_ERROR.with(|e| e.take()));
    loop {
        let run = RUNNING.with(|r| {
            let mut r = r.try_borrow_mut().ok()?;
            if r.len() > from {
                r.pop()
            } else {
                None
            }
        });
        let Some(run) = run else { break };
        finish(&run, 0, status, sqlstate);
    }
}

fn add_nesting(delta: i32) {
    NESTING.with(|n| n.set(n.get().saturating_add_signed(delta)));
}

#[pg_guard]
unsafe extern "C-unwind" fn emit_log(edata: *mut pg_sys::ErrorData) {
    if !edata.is_null() && (*edata).elevel >= PgLogLevel::ERROR as i32 {
        LAST_ERROR.with(|e| e.set(Some((*edata).sqlerrcode)));
    }
    if let Some(prev) = PREV_EMIT_LOG {
        prev(edata);
    }
}

/// Runs at every transaction end, so outside the error boundary like the hooks.
unsafe extern "C-unwind" fn xact_event(
    event: pg_sys::XactEvent::Type,
    _arg: *mut std::ffi::c_void,
) {
    match event {
        pg_sys::XactEvent::XACT_EVENT_ABORT | pg_sys::XactEvent::XACT_EVENT_PARALLEL_ABORT => {
            // A ROLLBACK inside a procedure (CALL, DO) aborts the transaction with no error and
            // the procedure goes on running: leave its statements be.
            let in_procedure = RUNNING.with(|r| {
                r.try_borrow()
                    .is_ok_and(|r| r.first().is_some_and(|x| x.procedure))
            });
            if in_procedure && LAST_ERROR.with(|e| e.get()).is_none() {
                clear_subxacts();
                return;
            }
            fail_from(0);
            NESTING.with(|n| n.set(0));
            clear_subxacts();
        }
        pg_sys::XactEvent::XACT_EVENT_COMMIT
        | pg_sys::XactEvent::XACT_EVENT_PARALLEL_COMMIT
        | pg_sys::XactEvent::XACT_EVENT_PREPARE => {
            clear_subxacts();
            LAST_ERROR.with(|e| e.set(None));
        }
        _ => {}
    }
}

fn clear_subxacts() {
    SUBXACTS.with(|s| {
        if let Ok(mut s) = s.try_borrow_mut() {
            s.clear();
        }
    });
}

unsafe extern "C-unwind" fn subxact_event(
    event: pg_sys::SubXactEvent::Type,
    _my: pg_sys::SubTransactionId,
    _parent: pg_sys::SubTransactionId,
    _arg: *mut std::ffi::c_void,
) {
    let popped = || SUBXACTS.with(|s| s.try_borrow_mut().ok().and_then(|mut s| s.pop()));
    match event {
        pg_sys::SubXactEvent::SUBXACT_EVENT_START_SUB => {
            let state = (
                NESTING.with(|n| n.get()),
                RUNNING.with(|r| r.try_borrow().map_or(0, |r| r.len())),
            );
            SUBXACTS.with(|s| {
                if let Ok(mut s) = s.try_borrow_mut() {
                    s.push(state);
                }
            });
        }
        pg_sys::SubXactEvent::SUBXACT_EVENT_COMMIT_SUB => {
            popped();
        }
        pg_sys::SubXactEvent::SUBXACT_EVENT_ABORT_SUB => {
            if let Some((nesting, running)) = popped() {
                fail_from(running);
                NESTING.with(|n| n.set(nesting));
            }
        }
        _ => {}
    }
}

/// from_tenantguard_function behind the error boundary: it may run SPI.
#[pg_guard]
unsafe extern "C-unwind" fn nested_from_tenantguard(source: *const std::ffi::c_char) -> bool {
    from_tenantguard_function(source)
}

/// ExecutorStart, tenantguard's part: decide whether to time the statement, and start the clock.
unsafe fn start_statement(query_desc: *mut pg_sys::QueryDesc, eflags: i32) {
    let level = NESTING.with(|n| n.get());
    if tracked(level)
        && eflags & pg_sys::EXEC_FLAG_EXPLAIN_ONLY as i32 == 0
        && (level == 0 || !nested_from_tenantguard((*query_desc).sourceText))
    {
        push_running(begin(
            query_desc as usize,
            (*query_desc).sourceText,
            (*query_desc).plannedstmt,
            false,
            level > 0,
        ));
    }
}

/// ExecutorEnd, tenantguard's part: stop the clock and record a slow statement.
unsafe fn end_statement(query_desc: *mut pg_sys::QueryDesc) {
    if let Some(run) = take_running(query_desc as usize) {
        let rows = if (*query_desc).estate.is_null() {
            0
        } else {
            (*(*query_desc).estate).es_processed
        };
        finish(&run, rows, STATUS_OK, [0; 5]);
    }
}

unsafe extern "C-unwind" fn executor_start(query_desc: *mut pg_sys::QueryDesc, eflags: i32) {
    start_statement(query_desc, eflags);
    match PREV_EXECUTOR_START {
        Some(prev) => prev(query_desc, eflags),
        None => raw_standard_executor_start(query_desc, eflags),
    }
}

unsafe extern "C-unwind" fn executor_run(
    query_desc: *mut pg_sys::QueryDesc,
    direction: pg_sys::ScanDirection::Type,
    count: u64,
    execute_once: bool,
) {
    set_active(query_desc as usize, true);
    add_nesting(1);
    match PREV_EXECUTOR_RUN {
        Some(prev) => prev(query_desc, direction, count, execute_once),
        None => raw_standard_executor_run(query_desc, direction, count, execute_once),
    }
    add_nesting(-1);
    set_active(query_desc as usize, false);
}

unsafe extern "C-unwind" fn executor_finish(query_desc: *mut pg_sys::QueryDesc) {
    set_active(query_desc as usize, true);
    add_nesting(1);
    match PREV_EXECUTOR_FINISH {
        Some(prev) => prev(query_desc),
        None => raw_standard_executor_finish(query_desc),
    }
    add_nesting(-1);
    set_active(query_desc as usize, false);
}

unsafe extern "C-unwind" fn executor_end(query_desc: *mut pg_sys::QueryDesc) {
    end_statement(query_desc);
    match PREV_EXECUTOR_END {
        Some(prev) => prev(query_desc),
        None => raw_standard_executor_end(query_desc),
    }
}

/// ProcessUtility, tenantguard's part before the statement: time it unless it is transaction
/// control (COMMIT, ROLLBACK, SAVEPOINT ... end or unwind the (sub)transactions the abort
/// callbacks watch).
unsafe fn start_utility(pstmt: *mut pg_sys::PlannedStmt, query_string: *const std::ffi::c_char) {
    let level = NESTING.with(|n| n.get());
    let utility = (*pstmt).utilityStmt;
    let transaction_control =
        !utility.is_null() && (*utility).type_ == pg_sys::NodeTag::T_TransactionStmt;
    if !transaction_control
        && tracked(level)
        && (level == 0 || !nested_from_tenantguard(query_string))
    {
        let mut run = begin(pstmt as usize, query_string, pstmt, true, level > 0);
        run.procedure = !utility.is_null()
            && matches!(
                (*utility).type_,
                pg_sys::NodeTag::T_CallStmt | pg_sys::NodeTag::T_DoStmt
            );
        push_running(run);
    }
}

unsafe fn end_utility(pstmt: *mut pg_sys::PlannedStmt, qc: *mut pg_sys::QueryCompletion) {
    if let Some(run) = take_running(pstmt as usize) {
        let rows = if qc.is_null() { 0 } else { (*qc).nprocessed };
        finish(&run, rows, STATUS_OK, [0; 5]);
    }
}

#[allow(clippy::too_many_arguments)]
unsafe extern "C-unwind" fn process_utility(
    pstmt: *mut pg_sys::PlannedStmt,
    query_string: *const std::ffi::c_char,
    read_only_tree: bool,
    context: pg_sys::ProcessUtilityContext::Type,
    params: pg_sys::ParamListInfo,
    query_env: *mut pg_sys::QueryEnvironment,
    dest: *mut pg_sys::DestReceiver,
    qc: *mut pg_sys::QueryCompletion,
) {
    start_utility(pstmt, query_string);
    add_nesting(1);
    match PREV_PROCESS_UTILITY {
        Some(prev) => prev(
            pstmt,
            query_string,
            read_only_tree,
            context,
            params,
            query_env,
            dest,
            qc,
        ),
        None => raw_standard_process_utility(
            pstmt,
            query_string,
            read_only_tree,
            context,
            params,
            query_env,
            dest,
            qc,
        ),
    }
    add_nesting(-1);
    end_utility(pstmt, qc);
}

fn require_preload(what: &str) {
    if !preloaded() {
        raise(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!("{what} needs tenantguard in shared_preload_libraries"),
            "Add tenantguard to shared_preload_libraries in postgresql.conf (e.g. \
             shared_preload_libraries = 'tenantguard') and restart the server.",
        );
    }
}

/// True for superusers, members of tenantguard_admin and of pg_read_all_stats: they see every
/// slow query, every role's statement text included.
#[pg_extern(stable, parallel_safe)]
fn _reads_all_stats() -> bool {
    privileges::reads_all_stats()
}

/// A copy of the ring's entries, oldest first.
fn snapshot() -> Vec<Entry> {
    // SAFETY: the ring is attached (checked by the callers); read under the shared lock.
    unsafe {
        let ring = RING;
        pg_sys::LWLockAcquire((*ring).lock, pg_sys::LWLockMode::LW_SHARED);
        let mut out: Vec<Entry> = entries().iter().filter(|e| e.seq != 0).copied().collect();
        pg_sys::LWLockRelease((*ring).lock);
        out.sort_by_key(|e| e.seq);
        out
    }
}

fn text_of(bytes: &[u8], len: u16) -> String {
    String::from_utf8_lossy(&bytes[..len as usize]).into_owned()
}

type SlowRow = (
    Option<TimestampWithTimeZone>,
    f64,
    i64,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
    Option<String>,
    i64,
);

fn to_row(e: &Entry) -> SlowRow {
    // SAFETY: catalog lookups by OID; NULL when the database or role is gone.
    let (database, user) = unsafe {
        let d = pg_sys::get_database_name(e.dbid);
        let u = pg_sys::GetUserNameFromId(e.userid, true);
        (
            (!d.is_null()).then(|| CStr::from_ptr(d).to_string_lossy().into_owned()),
            (!u.is_null()).then(|| CStr::from_ptr(u).to_string_lossy().into_owned()),
        )
    };
    let nonempty = |s: String| (!s.is_empty()).then_some(s);
    let hidden = e.queryid == TEXT_HIDDEN;
    (
        TimestampWithTimeZone::try_from(e.started_at).ok(),
        e.duration_us as f64 / 1000.0,
        e.rows as i64,
        // 0: the server computed no query id (compute_query_id off, or auto with nothing asking).
        (e.queryid != 0 && !hidden).then_some(e.queryid),
        (!hidden).then(|| text_of(&e.query, e.query_len)),
        database,
        user,
        nonempty(text_of(&e.app_user, e.app_user_len)),
        nonempty(text_of(&e.tenant, e.tenant_len)),
        match e.status {
            STATUS_OK => "ok",
            STATUS_CANCELLED => "cancelled",
            _ => "error",
        }
        .to_string(),
        // An error whose code was never seen (swallowed by an EXCEPTION block) has none: NULL.
        (e.status != STATUS_OK && e.sqlstate != [0; 5])
            .then(|| String::from_utf8_lossy(&e.sqlstate).into_owned()),
        e.seq as i64,
    )
}

/// The entries the caller may see: every one for superusers, members of tenantguard_admin and of
/// pg_read_all_stats; otherwise this database's entries of the caller's tenant. Another role's
/// statement text and query id are blanked unless the caller is one of the first three, as
/// pg_stat_statements shows them.
fn visible() -> Vec<Entry> {
    let all = privileges::reads_all_stats();
    let tenant = crate::context::tenant_value();
    // SAFETY: globals of the backend.
    let (db, me) = unsafe { (pg_sys::MyDatabaseId, pg_sys::GetUserId()) };
    snapshot()
        .into_iter()
        .filter(|e| {
            all || (e.dbid == db
                && tenant
                    .as_deref()
                    .is_some_and(|t| t.as_bytes() == &e.tenant[..e.tenant_len as usize]))
        })
        .map(|mut e| {
            if !all && e.userid != me {
                e.query_len = 0;
                e.queryid = TEXT_HIDDEN;
            }
            e
        })
        .collect()
}

/// An entry's query id when its text is hidden: `to_row` shows NULL text and NULL query id.
const TEXT_HIDDEN: i64 = i64::MIN;

#[pg_extern(volatile, parallel_restricted)]
#[allow(clippy::type_complexity)]
fn slow_queries() -> TableIterator<
    'static,
    (
        name!(started_at, Option<TimestampWithTimeZone>),
        name!(duration_ms, f64),
        name!(rows, i64),
        name!(queryid, Option<i64>),
        name!(query, Option<String>),
        name!(database, Option<String>),
        name!(db_user, Option<String>),
        name!(app_user, Option<String>),
        name!(tenant_id, Option<String>),
        name!(status, String),
        name!(sqlstate, Option<String>),
    ),
> {
    require_preload("tenantguard.slow_queries()");
    let rows: Vec<_> = visible()
        .iter()
        .map(|e| {
            let r = to_row(e);
            (r.0, r.1, r.2, r.3, r.4, r.5, r.6, r.7, r.8, r.9, r.10)
        })
        .collect();
    TableIterator::new(rows)
}

#[pg_extern(volatile, parallel_unsafe)]
fn reset_slow_queries() -> i64 {
    require_preload("tenantguard.reset_slow_queries()");
    if !privileges::is_admin() {
        raise(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            "permission denied to reset the slow query ring",
            "Only superusers and members of tenantguard_admin may reset it.",
        );
    }
    // SAFETY: the ring is attached; cleared under the exclusive lock. `next` keeps growing so that
    // flushed entries keep unique numbers.
    unsafe {
        let ring = RING;
        pg_sys::LWLockAcquire((*ring).lock, pg_sys::LWLockMode::LW_EXCLUSIVE);
        let mut n = 0;
        for e in entries().iter_mut() {
            if e.seq != 0 {
                n += 1;
                e.seq = 0;
            }
        }
        pg_sys::LWLockRelease((*ring).lock);
        n
    }
}

/// Copies this database's ring entries not yet in tenantguard.slow_query_log into it, each once:
/// the table is keyed by (server start time, entry number) and the insert skips existing keys,
/// so concurrent or repeated flushes, and flushes that roll back, neither lose nor double rows.
#[pg_extern(volatile, parallel_unsafe)]
fn _flush_slow_queries() -> i64 {
    require_preload("tenantguard.flush_slow_queries()");
    let _internal = session::Internal::enter();
    // SAFETY: a global set by the postmaster.
    let epoch = unsafe { pg_sys::PgStartTime };
    let epoch = TimestampWithTimeZone::try_from(epoch).ok();
    thread_local! {
        static LAST: OnceCell<OwnedPreparedStatement> = const { OnceCell::new() };
    }
    let tstz = PgOid::BuiltIn(PgBuiltInOids::TIMESTAMPTZOID);
    let last = kept_first::<i64>(
        &LAST,
        "SELECT max(seq) FROM tenantguard._slow_query_log WHERE epoch = $1",
        &[tstz],
        &[epoch.into()],
    )
    .unwrap_or(0);
    // SAFETY: a global of the backend.
    let db = unsafe { pg_sys::MyDatabaseId };
    let mut inserted = 0i64;
    let rows: Vec<SlowRow> = snapshot()
        .iter()
        .filter(|e| e.dbid == db && e.seq as i64 > last)
        .map(to_row)
        .collect();
    if rows.is_empty() {
        return 0;
    }
    let oid = |o| PgOid::BuiltIn(o);
    let text = oid(PgBuiltInOids::TEXTOID);
    let int8 = oid(PgBuiltInOids::INT8OID);
    let types = [
        tstz,
        oid(PgBuiltInOids::FLOAT8OID),
        int8,
        int8,
        text,
        text,
        text,
        text,
        text,
        text,
        text,
        tstz,
        int8,
    ];
    spi(Spi::connect_mut(|client| {
        // Planned once per flush, run once per entry.
        let insert = client.prepare_mut(
            "INSERT INTO tenantguard._slow_query_log
                (started_at, duration_ms, rows, queryid, query, database, db_user, app_user,
                 tenant_id, status, sqlstate, epoch, seq)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
             ON CONFLICT (epoch, seq) DO NOTHING",
            &types,
        )?;
        for r in rows {
            let done = client.update(
                &insert,
                None,
                &[
                    r.0.into(),
                    r.1.into(),
                    r.2.into(),
                    r.3.into(),
                    r.4.into(),
                    r.5.into(),
                    r.6.into(),
                    r.7.into(),
                    r.8.into(),
                    r.9.into(),
                    r.10.into(),
                    epoch.into(),
                    r.11.into(),
                ],
            )?;
            inserted += done.len() as i64;
        }
        Ok::<_, pgrx::spi::Error>(())
    }));
    inserted
}

/// The flush worker: every tenantguard.slow_query_flush_ms (when > 0) flushes the database named
/// by tenantguard.slow_query_flush_database, if tenantguard is installed there.
#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn tenantguard_flush_worker(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let db = gucs::slow_query_flush_database();
    BackgroundWorker::connect_worker_to_spi(Some(&db), None);
    session::internal_for_good();
    loop {
        let every = gucs::slow_query_flush_ms();
        let wait = if every > 0 { every as u64 } else { 1000 };
        if !BackgroundWorker::wait_latch(Some(Duration::from_millis(wait))) {
            break;
        }
        if BackgroundWorker::sighup_received() {
            // SAFETY: re-reads postgresql.conf in this process, as every worker does on SIGHUP.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
        if gucs::slow_query_flush_ms() > 0 {
            BackgroundWorker::transaction(|| {
                let installed = Spi::get_one::<bool>(
                    "SELECT true FROM pg_catalog.pg_extension WHERE extname = 'tenantguard'",
                )
                .ok()
                .flatten()
                .unwrap_or(false);
                if installed {
                    let _ = Spi::get_one::<i64>("SELECT tenantguard._flush_slow_queries()");
                }
            });
        }
    }
}

extension_sql!(
    r#"
CREATE TABLE tenantguard._slow_query_log (
    started_at  timestamptz,
    duration_ms float8      NOT NULL,
    rows        bigint,
    queryid     bigint,
    query       text,
    database    text,
    db_user     text,
    app_user    text,
    tenant_id   text COLLATE "C",
    status      text        NOT NULL CHECK (status IN ('ok', 'error', 'cancelled')),
    sqlstate    text,
    epoch       timestamptz NOT NULL,
    seq         bigint      NOT NULL,
    PRIMARY KEY (epoch, seq)
);
COMMENT ON TABLE tenantguard._slow_query_log IS
  'The rows behind tenantguard.slow_query_log; read them through that view.';
CREATE INDEX slow_query_log_tenant_time ON tenantguard._slow_query_log (tenant_id, started_at);
SELECT pg_catalog.pg_extension_config_dump('tenantguard._slow_query_log', '');
-- Defence in depth: should anyone grant SELECT on the table itself, only admins see rows.
ALTER TABLE tenantguard._slow_query_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenantguard._slow_query_log FORCE ROW LEVEL SECURITY;
CREATE POLICY slow_query_admin_read ON tenantguard._slow_query_log FOR SELECT TO tenantguard_admin
  USING (true);
REVOKE ALL ON tenantguard._slow_query_log FROM PUBLIC;

-- What every role reads, by the rules of slow_queries(): superusers, members of tenantguard_admin
-- and of pg_read_all_stats see every row; anyone else its tenant's rows. Another role's statement
-- text and query id are NULL unless the reader is one of the first three (as pg_stat_statements
-- shows them). One-time filters switch a branch off whole, so a tenant's read stays an index scan
-- on (tenant_id, started_at); each branch is a security_barrier view of its own (see audit_log).
CREATE VIEW tenantguard._slow_query_log_all WITH (security_barrier = true) AS
SELECT l.started_at, l.duration_ms, l.rows, l.queryid, l.query, l.database, l.db_user,
       l.app_user, l.tenant_id, l.status, l.sqlstate, l.epoch, l.seq
  FROM tenantguard._slow_query_log l
 WHERE tenantguard._reads_all_stats();
CREATE VIEW tenantguard._slow_query_log_tenant WITH (security_barrier = true) AS
SELECT l.started_at, l.duration_ms, l.rows,
       CASE WHEN l.db_user = CURRENT_USER THEN l.queryid END AS queryid,
       CASE WHEN l.db_user = CURRENT_USER THEN l.query END AS query,
       l.database, l.db_user, l.app_user, l.tenant_id, l.status, l.sqlstate, l.epoch, l.seq
  FROM tenantguard._slow_query_log l
 WHERE NOT tenantguard._reads_all_stats()
   AND l.tenant_id = (SELECT tenantguard.current_tenant());
REVOKE ALL ON tenantguard._slow_query_log_all, tenantguard._slow_query_log_tenant FROM PUBLIC;
CREATE VIEW tenantguard.slow_query_log WITH (security_barrier = true) AS
SELECT * FROM tenantguard._slow_query_log_all
UNION ALL
SELECT * FROM tenantguard._slow_query_log_tenant;
COMMENT ON VIEW tenantguard.slow_query_log IS
  'Slow queries copied from the ring by flush_slow_queries() or the flush worker (epoch: server start time, seq: entry number). Seen like slow_queries().';
GRANT SELECT ON tenantguard.slow_query_log TO PUBLIC;

CREATE VIEW tenantguard.slow_queries AS SELECT * FROM tenantguard.slow_queries();
GRANT SELECT ON tenantguard.slow_queries TO PUBLIC;
COMMENT ON VIEW tenantguard.slow_queries IS
  'The shared-memory ring of slow queries: all of them for superusers, admins and pg_read_all_stats, the session tenant''s otherwise; other roles'' statement text only for those three.';

CREATE FUNCTION tenantguard.flush_slow_queries() RETURNS bigint
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT tenantguard._flush_slow_queries() $$;
REVOKE ALL ON FUNCTION tenantguard.flush_slow_queries() FROM PUBLIC;
REVOKE ALL ON FUNCTION tenantguard._flush_slow_queries() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenantguard.flush_slow_queries() TO tenantguard_admin;
COMMENT ON FUNCTION tenantguard.flush_slow_queries() IS
  'Copy new slow-query ring entries of this database into tenantguard.slow_query_log, each exactly once; returns how many.';
"#,
    name = "slow_query_objects",
    requires = [
        slow_queries,
        reset_slow_queries,
        _flush_slow_queries,
        _reads_all_stats,
        current_tenant,
        "bootstrap"
    ]
);

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    // The #[pg_test] cluster does not preload tenantguard: the reading functions say how to.
    #[pg_test(error = "tenantguard.slow_queries() needs tenantguard in shared_preload_libraries")]
    fn slow_queries_without_preload() {
        Spi::run("SELECT * FROM tenantguard.slow_queries()").unwrap();
    }

    #[pg_test(
        error = "tenantguard.flush_slow_queries() needs tenantguard in shared_preload_libraries"
    )]
    fn flush_without_preload() {
        Spi::run("SELECT tenantguard._flush_slow_queries()").unwrap();
    }

    #[pg_test]
    fn without_preload_everything_else_works() {
        Spi::run("CREATE TABLE np (id int, tenant_id text)").unwrap();
        Spi::run("SELECT tenantguard.protect('np')").unwrap();
        Spi::run("INSERT INTO np VALUES (1, 'a')").unwrap();
        assert_eq!(
            Spi::get_one::<String>(
                "SELECT status FROM tenantguard.coverage() WHERE table_name = 'np'"
            )
            .unwrap()
            .as_deref(),
            Some("protected")
        );
        assert_eq!(
            Spi::get_one::<i64>(
                "SELECT count(*) FROM tenantguard.audit_log WHERE table_oid = 'np'::regclass"
            )
            .unwrap(),
            Some(1)
        );
    }
}
