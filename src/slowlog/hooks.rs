//! The executor and utility hooks: every statement is timed (its ExecutorRun and ExecutorFinish
//! time, as pg_stat_statements counts it), with the tenant and application user as they were when
//! it started; one at or over tenantguard.slow_query_ms goes into the ring. The hooks catch
//! nothing: statements still running when a (sub)transaction aborts are the failed ones, recorded
//! by the abort callbacks with the SQLSTATE emit_log_hook saw.
//!
//! The common path (a statement that is timed and turns out fast, or is not timed) runs outside
//! pgrx's error boundary, whose `sigsetjmp` per call cost more than the rest of the hook. It calls
//! only server functions that cannot raise an ERROR (declared in `pg::raw`) and Rust code that
//! cannot panic (no RefCell is borrowed while anything else runs). What can fail - recording an
//! entry, the SPI lookup for nested statements - runs in #[pg_guard] functions, and the frames an
//! ERROR from there passes through own nothing that needs dropping.

use crate::gucs;
use crate::pg::executor;
use crate::pg::raw;
use crate::pg::settings::named_setting;
use crate::session;
use crate::slowlog::own::nested_from_tenantguard;
use crate::slowlog::ring::{
    self, clip, copy_name, preloaded, NAME_MAX, STATUS_CANCELLED, STATUS_ERROR, STATUS_OK, TEXT_MAX,
};
use crate::slowlog::stats;
use pgrx::prelude::*;
use std::cell::{Cell, RefCell};
use std::ffi::CStr;
use std::ptr;

pub(crate) static mut PREV_EXECUTOR_START: pg_sys::ExecutorStart_hook_type = None;
pub(crate) static mut PREV_EXECUTOR_RUN: pg_sys::ExecutorRun_hook_type = None;
pub(crate) static mut PREV_EXECUTOR_FINISH: pg_sys::ExecutorFinish_hook_type = None;
pub(crate) static mut PREV_EXECUTOR_END: pg_sys::ExecutorEnd_hook_type = None;
pub(crate) static mut PREV_PROCESS_UTILITY: pg_sys::ProcessUtility_hook_type = None;

pub(crate) static mut PREV_EMIT_LOG: pg_sys::emit_log_hook_type = None;

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
    /// Counted in the tenant stats (a top-level statement with tenantguard.tenant_stats on), as
    /// the role it started as, from the buffer counters it started at.
    counted: bool,
    userid: pg_sys::Oid,
    blocks: [i64; 3],
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

/// Whether a statement at nesting `level` is timed for the slow-query log, and whether it is
/// counted in the tenant stats (top-level statements only).
fn tracked(level: u32) -> (bool, bool) {
    // A parallel worker runs part of a statement its leader times already.
    // SAFETY: a plain global of the backend.
    if session::internal() || unsafe { pg_sys::ParallelWorkerNumber } >= 0 {
        return (false, false);
    }
    let slow = gucs::slow_query_ms() >= 0 && (level == 0 || gucs::slow_query_track_all());
    let counted = level == 0 && gucs::tenant_stats() && stats::attached();
    (slow, counted)
}

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
    counted: bool,
) -> Running {
    let (location, length, queryid) = if stmt.is_null() {
        (-1, 0, 0)
    } else {
        // queryId is uint64 up to PostgreSQL 17 and int64 from 18: the same bits.
        #[allow(clippy::unnecessary_cast)]
        let queryid = (*stmt).queryId as u64;
        ((*stmt).stmt_location, (*stmt).stmt_len, queryid)
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
        tenant: copy_name(crate::tenant::values::tenant_for_log()),
        app_user: copy_name(named_setting(1)),
        source,
        location,
        length,
        copied,
        queryid,
        procedure: false,
        counted,
        userid: raw::GetUserId(),
        blocks: if counted { stats::blocks_now() } else { [0; 3] },
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

/// Stops the clock; counts a top-level statement in the tenant stats, and records the statement
/// when it ran at least the threshold.
fn finish(run: &Running, rows: u64, status: u8, sqlstate: [u8; 5]) {
    let duration_us = run.busy_us
        + if run.active_since != 0 {
            // SAFETY: a clock read.
            (unsafe { raw::GetCurrentTimestamp() }) - run.active_since
        } else {
            0
        };
    if run.counted {
        let now = stats::blocks_now();
        let blocks = [
            now[0] - run.blocks[0],
            now[1] - run.blocks[1],
            now[2] - run.blocks[2],
        ];
        stats::count(
            run.userid,
            &run.tenant,
            run.started_at,
            duration_us,
            rows,
            blocks,
            status,
        );
    }
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
    // SAFETY: the ring is attached (checked by `finish`).
    unsafe {
        ring::push(|slot| {
            slot.started_at = run.started_at;
            slot.duration_us = duration_us;
            slot.rows = rows;
            slot.queryid = run.queryid as i64;
            slot.dbid = pg_sys::MyDatabaseId;
            slot.userid = raw::GetUserId();
            slot.status = status;
            slot.sqlstate = sqlstate;
            slot.tenant = run.tenant.0;
            slot.tenant_len = run.tenant.1;
            slot.app_user = run.app_user.0;
            slot.app_user_len = run.app_user.1;
            slot.query[..qlen].copy_from_slice(&text[..qlen]);
            slot.query_len = qlen as u16;
        })
    };
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
/// Returns whether any statement was running.
fn fail_from(from: usize) -> bool {
    let (status, sqlstate) = status_of(LAST_ERROR.with(|e| e.take()));
    let mut any = false;
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
        any = true;
        finish(&run, 0, status, sqlstate);
    }
    any
}

/// A transaction aborted by an error when no statement was running: the statement failed
/// before the executor or ProcessUtility saw it (a syntax error, an error while planning, a
/// bad parameter). The tenant stats count it as a failed statement of the tenant set now.
fn count_unseen_failure(code: i32) {
    // SAFETY: plain globals of the backend.
    if !gucs::tenant_stats() || !stats::attached() || unsafe { pg_sys::ParallelWorkerNumber } >= 0 {
        return;
    }
    let (status, _) = status_of(Some(code));
    // SAFETY: reads of the clock and the settings, as at a statement's start.
    unsafe {
        stats::count(
            raw::GetUserId(),
            &copy_name(crate::tenant::values::tenant_for_log()),
            raw::GetCurrentStatementStartTimestamp(),
            0,
            0,
            [0; 3],
            status,
        );
    }
}

fn add_nesting(delta: i32) {
    NESTING.with(|n| n.set(n.get().saturating_add_signed(delta)));
}

#[pg_guard]
pub(crate) unsafe extern "C-unwind" fn emit_log(edata: *mut pg_sys::ErrorData) {
    if !edata.is_null() && (*edata).elevel >= PgLogLevel::ERROR as i32 {
        LAST_ERROR.with(|e| e.set(Some((*edata).sqlerrcode)));
    }
    if let Some(prev) = PREV_EMIT_LOG {
        prev(edata);
    }
}

/// Runs at every transaction end, so outside the error boundary like the hooks.
pub(crate) unsafe extern "C-unwind" fn xact_event(
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
            let code = LAST_ERROR.with(|e| e.get());
            let nesting = NESTING.with(|n| n.replace(0));
            if !fail_from(0) && nesting == 0 {
                if let Some(code) = code {
                    count_unseen_failure(code);
                }
            }
            clear_subxacts();
            publish_stats();
        }
        pg_sys::XactEvent::XACT_EVENT_COMMIT
        | pg_sys::XactEvent::XACT_EVENT_PARALLEL_COMMIT
        | pg_sys::XactEvent::XACT_EVENT_PREPARE => {
            clear_subxacts();
            LAST_ERROR.with(|e| e.set(None));
            publish_stats();
        }
        _ => {}
    }
}

/// The tenant stats this backend holds go to shared memory when enough has gathered, and always
/// when the backend is exiting (a transaction it aborts on the way out comes after the exit
/// callback's publish).
fn publish_stats() {
    // SAFETY: a plain global of the backend.
    if unsafe { pg_sys::proc_exit_inprogress } {
        stats::publish();
    } else {
        stats::maybe_publish();
    }
}

fn clear_subxacts() {
    SUBXACTS.with(|s| {
        if let Ok(mut s) = s.try_borrow_mut() {
            s.clear();
        }
    });
}

pub(crate) unsafe extern "C-unwind" fn subxact_event(
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
                let code = LAST_ERROR.with(|e| e.get());
                if !fail_from(running) && nesting == 0 && NESTING.with(|n| n.get()) == 0 {
                    // A client's statement failed before it ran, inside a SAVEPOINT.
                    if let Some(code) = code {
                        count_unseen_failure(code);
                    }
                }
                NESTING.with(|n| n.set(nesting));
            }
        }
        _ => {}
    }
}

/// ExecutorStart, tenantguard's part: decide whether to time the statement, and start the clock.
unsafe fn start_statement(query_desc: *mut pg_sys::QueryDesc, eflags: i32) {
    let level = NESTING.with(|n| n.get());
    let (slow, counted) = tracked(level);
    if (slow || counted)
        && eflags & pg_sys::EXEC_FLAG_EXPLAIN_ONLY as i32 == 0
        && (level == 0 || !nested_from_tenantguard((*query_desc).sourceText))
    {
        push_running(begin(
            query_desc as usize,
            (*query_desc).sourceText,
            (*query_desc).plannedstmt,
            false,
            level > 0,
            counted,
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

pub(crate) unsafe extern "C-unwind" fn executor_start(
    query_desc: *mut pg_sys::QueryDesc,
    eflags: i32,
) {
    start_statement(query_desc, eflags);
    if crate::citus::propagate::wants_context((*query_desc).plannedstmt)
        && eflags & pg_sys::EXEC_FLAG_EXPLAIN_ONLY as i32 == 0
    {
        crate::citus::propagate::hand_over();
    }
    match PREV_EXECUTOR_START {
        Some(prev) => prev(query_desc, eflags),
        None => executor::raw_standard_executor_start(query_desc, eflags),
    }
}

/// ExecutorRun: the clock runs while it does. PostgreSQL 18 dropped the `execute_once` argument.
#[cfg(not(feature = "pg18"))]
pub(crate) unsafe extern "C-unwind" fn executor_run(
    query_desc: *mut pg_sys::QueryDesc,
    direction: pg_sys::ScanDirection::Type,
    count: u64,
    execute_once: bool,
) {
    set_active(query_desc as usize, true);
    add_nesting(1);
    match PREV_EXECUTOR_RUN {
        Some(prev) => prev(query_desc, direction, count, execute_once),
        None => executor::raw_standard_executor_run(query_desc, direction, count, execute_once),
    }
    add_nesting(-1);
    set_active(query_desc as usize, false);
}

#[cfg(feature = "pg18")]
pub(crate) unsafe extern "C-unwind" fn executor_run(
    query_desc: *mut pg_sys::QueryDesc,
    direction: pg_sys::ScanDirection::Type,
    count: u64,
) {
    set_active(query_desc as usize, true);
    add_nesting(1);
    match PREV_EXECUTOR_RUN {
        Some(prev) => prev(query_desc, direction, count),
        None => executor::raw_standard_executor_run(query_desc, direction, count),
    }
    add_nesting(-1);
    set_active(query_desc as usize, false);
}

pub(crate) unsafe extern "C-unwind" fn executor_finish(query_desc: *mut pg_sys::QueryDesc) {
    set_active(query_desc as usize, true);
    add_nesting(1);
    match PREV_EXECUTOR_FINISH {
        Some(prev) => prev(query_desc),
        None => executor::raw_standard_executor_finish(query_desc),
    }
    add_nesting(-1);
    set_active(query_desc as usize, false);
}

pub(crate) unsafe extern "C-unwind" fn executor_end(query_desc: *mut pg_sys::QueryDesc) {
    end_statement(query_desc);
    match PREV_EXECUTOR_END {
        Some(prev) => prev(query_desc),
        None => executor::raw_standard_executor_end(query_desc),
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
    let (slow, counted) = tracked(level);
    if !transaction_control
        && (slow || counted)
        && (level == 0 || !nested_from_tenantguard(query_string))
    {
        let mut run = begin(
            pstmt as usize,
            query_string,
            pstmt,
            true,
            level > 0,
            counted,
        );
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
pub(crate) unsafe extern "C-unwind" fn process_utility(
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
    if crate::citus::propagate::wants_context(pstmt) {
        crate::citus::propagate::hand_over();
    }
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
        None => executor::raw_standard_process_utility(
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
