//! Slow-query capture: executor and utility hooks time every statement (`hooks`); those at or
//! over `tenantguard.slow_query_ms` go into a fixed-size ring in shared memory (`ring`), with the
//! tenant and application user as they were when the statement started. Errors and cancellations
//! are recorded too. Nothing is inserted from inside a hook; `flush_slow_queries()` (or the
//! background worker, `worker`) copies the ring into `tenantguard._slow_query_log`, read through
//! the view `slow_query_log` (`api`). tenantguard's own statements are never recorded (`own`).
//!
//! Needs `shared_preload_libraries = 'tenantguard'`; without it the hooks are not installed and the
//! reading functions raise a clear error.

pub mod api;
pub mod hooks;
pub mod own;
pub mod ring;
pub mod shmem;
pub mod stats;
pub mod stats_api;
pub mod worker;

use hooks::*;
use pgrx::bgworkers::BackgroundWorkerBuilder;
use pgrx::prelude::*;
use ring::PRELOADED;
#[cfg(not(feature = "pg14"))]
use shmem::{shmem_request, PREV_SHMEM_REQUEST};
use shmem::{shmem_startup, PREV_SHMEM_STARTUP};
use std::ptr;
use std::time::Duration;

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
        #[cfg(not(feature = "pg14"))]
        {
            PREV_SHMEM_REQUEST = pg_sys::shmem_request_hook;
            pg_sys::shmem_request_hook = Some(shmem_request);
        }
        #[cfg(feature = "pg14")]
        shmem::request();
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
    // pg_upgrade starts the new server in binary-upgrade mode to restore the schemas: no worker.
    // SAFETY: a plain global of the postmaster.
    if unsafe { pg_sys::IsBinaryUpgrade } {
        return;
    }
    BackgroundWorkerBuilder::new("tenantguard slow query flush")
        .set_type("tenantguard slow query flush")
        .set_library("tenantguard")
        .set_function("tenantguard_flush_worker")
        .enable_spi_access()
        .set_restart_time(Some(Duration::from_secs(10)))
        .load();
}
