//! The shared-memory ring of slow queries: a fixed number of slots (tenantguard.slow_query_max,
//! set at server start) under one LWLock; entries are numbered, and the number only grows.

use crate::errors::Error;
use crate::gucs;
use crate::pg::raw;
use pgrx::prelude::*;
use std::ffi::CStr;
use std::ptr;

pub(crate) const TEXT_MAX: usize = 4096;
pub(crate) const NAME_MAX: usize = 64;

pub(crate) const STATUS_OK: u8 = 0;
pub(crate) const STATUS_ERROR: u8 = 1;
pub(crate) const STATUS_CANCELLED: u8 = 2;

/// One ring slot. `seq` 0 means empty.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct Entry {
    pub(crate) seq: u64,
    pub(crate) started_at: i64,
    pub(crate) duration_us: i64,
    pub(crate) rows: u64,
    pub(crate) queryid: i64,
    pub(crate) dbid: pg_sys::Oid,
    pub(crate) userid: pg_sys::Oid,
    pub(crate) status: u8,
    pub(crate) sqlstate: [u8; 5],
    pub(crate) tenant_len: u16,
    pub(crate) app_user_len: u16,
    pub(crate) query_len: u16,
    pub(crate) tenant: [u8; NAME_MAX],
    pub(crate) app_user: [u8; NAME_MAX],
    pub(crate) query: [u8; TEXT_MAX],
}

#[repr(C)]
pub(crate) struct Ring {
    pub(crate) lock: *mut pg_sys::LWLock,
    pub(crate) capacity: u64,
    /// The next entry's sequence number; only grows, across resets.
    pub(crate) next: u64,
}

pub(crate) static mut RING: *mut Ring = ptr::null_mut();

pub(crate) static mut PRELOADED: bool = false;

#[cfg(not(feature = "pg14"))]
pub(crate) static mut PREV_SHMEM_REQUEST: pg_sys::shmem_request_hook_type = None;

pub(crate) static mut PREV_SHMEM_STARTUP: pg_sys::shmem_startup_hook_type = None;

pub(crate) const TRANCHE: &CStr = c"tenantguard";

pub(crate) const SEGMENT: &CStr = c"tenantguard slow query ring";

pub(crate) fn entry_size() -> usize {
    std::mem::size_of::<Entry>()
}

pub(crate) fn ring_size() -> usize {
    std::mem::size_of::<Ring>() + entry_size() * gucs::slow_query_max() as usize
}

/// The ring's entries.
///
/// # Safety
/// RING must be attached.
pub(crate) unsafe fn entries<'a>() -> &'a mut [Entry] {
    let base = (RING as *mut u8).add(std::mem::size_of::<Ring>()) as *mut Entry;
    std::slice::from_raw_parts_mut(base, (*RING).capacity as usize)
}

pub(crate) fn preloaded() -> bool {
    // SAFETY: written once in _PG_init.
    unsafe { PRELOADED && !RING.is_null() }
}

#[cfg(not(feature = "pg14"))]
#[pg_guard]
pub(crate) unsafe extern "C-unwind" fn shmem_request() {
    if let Some(prev) = PREV_SHMEM_REQUEST {
        prev();
    }
    request();
}

/// Asks for the ring's shared memory and its lock: from shmem_request_hook (PostgreSQL 15 and
/// later), or from _PG_init while shared_preload_libraries is processed (14, which has no hook).
///
/// # Safety
/// Only while the postmaster processes shared_preload_libraries.
pub(crate) unsafe fn request() {
    pg_sys::RequestAddinShmemSpace(ring_size());
    pg_sys::RequestNamedLWLockTranche(TRANCHE.as_ptr(), 1);
}

#[pg_guard]
pub(crate) unsafe extern "C-unwind" fn shmem_startup() {
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

pub(crate) fn copy_name(src: *const std::ffi::c_char) -> ([u8; NAME_MAX], u16) {
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
pub(crate) fn clip(bytes: &[u8], limit: usize) -> usize {
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

/// Writes the next entry: takes the lock, numbers the entry, and lets `fill` write the slot.
///
/// # Safety
/// The ring must be attached (`preloaded()`).
pub(crate) unsafe fn push(fill: impl FnOnce(&mut Entry)) {
    let ring = RING;
    pg_sys::LWLockAcquire((*ring).lock, pg_sys::LWLockMode::LW_EXCLUSIVE);
    let seq = (*ring).next;
    (*ring).next += 1;
    let slot = &mut entries()[(seq % (*ring).capacity) as usize];
    slot.seq = seq;
    fill(slot);
    pg_sys::LWLockRelease((*ring).lock);
}

/// Empties the ring and returns how many entries it held. `next` keeps growing, so that flushed
/// entries keep unique numbers.
///
/// # Safety
/// The ring must be attached (`preloaded()`).
pub(crate) unsafe fn clear() -> i64 {
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

/// A copy of the ring's entries, oldest first.
pub(crate) fn snapshot() -> Vec<Entry> {
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

pub(crate) fn require_preload(what: &str) {
    if !preloaded() {
        Error::NeedsPreload { what }.raise();
    }
}
