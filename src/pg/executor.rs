//! The standard executor and utility entry points, called by the slow-query hooks to chain to
//! them (src/slowlog/hooks.rs).

use pgrx::pg_sys;

// The standard executor and utility entry points, called directly rather than through pgrx's
// error boundary: an ERROR raised inside the statement then travels to PostgreSQL's own handler
// untouched (message, detail, context, position), and the hooks learn about it from the
// (sub)transaction abort callbacks instead of catching it.
extern "C-unwind" {
    #[link_name = "standard_ExecutorStart"]
    pub fn raw_standard_executor_start(query_desc: *mut pg_sys::QueryDesc, eflags: i32);
    #[cfg(not(feature = "pg18"))]
    #[link_name = "standard_ExecutorRun"]
    pub fn raw_standard_executor_run(
        query_desc: *mut pg_sys::QueryDesc,
        direction: pg_sys::ScanDirection::Type,
        count: u64,
        execute_once: bool,
    );
    /// PostgreSQL 18 dropped `execute_once` (executor/executor.h).
    #[cfg(feature = "pg18")]
    #[link_name = "standard_ExecutorRun"]
    pub fn raw_standard_executor_run(
        query_desc: *mut pg_sys::QueryDesc,
        direction: pg_sys::ScanDirection::Type,
        count: u64,
    );
    #[link_name = "standard_ExecutorFinish"]
    pub fn raw_standard_executor_finish(query_desc: *mut pg_sys::QueryDesc);
    #[link_name = "standard_ExecutorEnd"]
    pub fn raw_standard_executor_end(query_desc: *mut pg_sys::QueryDesc);
    #[link_name = "standard_ProcessUtility"]
    pub fn raw_standard_process_utility(
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
