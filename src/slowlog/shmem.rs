//! Shared memory: asks for, and creates or attaches, the slow-query ring (`ring`) and the tenant
//! stats table (`stats`), and their LWLocks (one tranche: the ring's reset lock, then the table's
//! lock).

use crate::slowlog::{ring, stats};
use pgrx::prelude::*;
use std::ffi::CStr;
use std::ptr;

#[cfg(not(feature = "pg14"))]
pub(crate) static mut PREV_SHMEM_REQUEST: pg_sys::shmem_request_hook_type = None;

pub(crate) static mut PREV_SHMEM_STARTUP: pg_sys::shmem_startup_hook_type = None;

pub(crate) const TRANCHE: &CStr = c"tenantguard";

#[cfg(not(feature = "pg14"))]
#[pg_guard]
pub(crate) unsafe extern "C-unwind" fn shmem_request() {
    if let Some(prev) = PREV_SHMEM_REQUEST {
        prev();
    }
    request();
}

/// Asks for the shared memory and the locks of the ring and of the tenant stats table: from
/// shmem_request_hook (PostgreSQL 15 and later), or from _PG_init while shared_preload_libraries
/// is processed (14, which has no hook).
///
/// # Safety
/// Only while the postmaster processes shared_preload_libraries.
pub(crate) unsafe fn request() {
    pg_sys::RequestAddinShmemSpace(ring::ring_size());
    pg_sys::RequestAddinShmemSpace(stats::table_size());
    pg_sys::RequestNamedLWLockTranche(TRANCHE.as_ptr(), 2);
}

#[pg_guard]
pub(crate) unsafe extern "C-unwind" fn shmem_startup() {
    if let Some(prev) = PREV_SHMEM_STARTUP {
        prev();
    }
    let init_lock = ptr::addr_of_mut!((*pg_sys::MainLWLockArray.add(21)).lock); // AddinShmemInitLock
    pg_sys::LWLockAcquire(init_lock, pg_sys::LWLockMode::LW_EXCLUSIVE);
    let locks = pg_sys::GetNamedLWLockTranche(TRANCHE.as_ptr());
    ring::attach(ptr::addr_of_mut!((*locks).lock));
    stats::attach(ptr::addr_of_mut!((*locks.add(1)).lock));
    pg_sys::LWLockRelease(init_lock);
}
