//! The flush worker: every tenantguard.slow_query_flush_ms (when > 0) flushes the database named
//! by tenantguard.slow_query_flush_database, if tenantguard is installed there.

use crate::gucs;
use crate::session;
use pgrx::bgworkers::{BackgroundWorker, SignalWakeFlags};
use pgrx::prelude::*;
use std::time::Duration;

/// The flush worker: every tenantguard.slow_query_flush_ms (when > 0) flushes the database named
/// by tenantguard.slow_query_flush_database, if this version of tenantguard is installed there.
#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn tenantguard_flush_worker(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    // Not connected to any database until flushing is turned on: a connected worker keeps its
    // database from being dropped (DROP DATABASE, and pg_upgrade, which recreates each one).
    loop {
        if BackgroundWorker::sighup_received() {
            // SAFETY: re-reads postgresql.conf in this process, as every worker does on SIGHUP.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
        if gucs::slow_query_flush_ms() > 0 {
            break;
        }
        if !BackgroundWorker::wait_latch(Some(Duration::from_millis(1000))) {
            return;
        }
    }
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
                // Only the version this library belongs to: until ALTER EXTENSION tenantguard
                // UPDATE runs, the objects it flushes into may not exist yet.
                let installed = Spi::get_one_with_args::<bool>(
                    "SELECT true FROM pg_catalog.pg_extension
                      WHERE extname = 'tenantguard' AND extversion = $1",
                    &[env!("CARGO_PKG_VERSION").into()],
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
