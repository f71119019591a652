//! The shared-memory ring of slow queries: a fixed number of slots (tenantguard.slow_query_max,
//! set at server start); entries are numbered, and the number only grows.
//!
//! Nobody takes a lock to write or read an entry. A writer numbers its entry with an atomic
//! counter and claims the entry's slot by making the slot's change count odd (compare and swap),
//! fills it, and makes the count even again. A reader keeps its copy of a slot only when the count
//! was even and the same before and after the copy (the protocol of PostgreSQL's backend status
//! array, `st_changecount`). A reader of the whole ring (up to about 86 MB at the maximum size)
//! therefore never holds writers up, and a writer descheduled while it fills its slot holds up no
//! other writer (with a lock, every capturing backend queued behind it).
//!
//! Writers finish out of order: entry N + 1 may be in its slot while N is still being written. A
//! copy of the ring (`snapshot`) therefore ends before the first entry that is numbered but not
//! yet in its slot, so that flush_slow_queries(), which copies the entries numbered after the last
//! one it stored, never passes one over. The ring's LWLock serialises resets only.

use crate::errors::Error;
use crate::gucs;
use crate::pg::raw;
use pgrx::prelude::*;
use std::ffi::CStr;
use std::ptr;
use std::sync::atomic::{fence, AtomicU64, Ordering};

pub(crate) const TEXT_MAX: usize = 4096;
pub(crate) const NAME_MAX: usize = 64;

pub(crate) const STATUS_OK: u8 = 0;
pub(crate) const STATUS_ERROR: u8 = 1;
pub(crate) const STATUS_CANCELLED: u8 = 2;

/// One ring slot: the fixed fields, then the statement's text. `seq` 0 means empty.
#[repr(C)]
pub(crate) struct Entry {
    pub(crate) head: Head,
    pub(crate) query: [u8; TEXT_MAX],
}

/// A copy of a slot: the fixed fields and only the text's `query_len` bytes, so that a reader
/// copies a few hundred bytes per entry, not 4 kB.
pub(crate) struct Copied {
    pub(crate) head: Head,
    pub(crate) query: Vec<u8>,
}

impl std::ops::Deref for Entry {
    type Target = Head;
    fn deref(&self) -> &Head {
        &self.head
    }
}

impl std::ops::DerefMut for Entry {
    fn deref_mut(&mut self) -> &mut Head {
        &mut self.head
    }
}

impl std::ops::Deref for Copied {
    type Target = Head;
    fn deref(&self) -> &Head {
        &self.head
    }
}

impl std::ops::DerefMut for Copied {
    fn deref_mut(&mut self) -> &mut Head {
        &mut self.head
    }
}

/// A slot's fixed fields.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct Head {
    /// Odd while a writer fills the slot (see the module).
    pub(crate) changecount: u64,
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
}

#[repr(C)]
pub(crate) struct Ring {
    /// Taken by resets only.
    pub(crate) lock: *mut pg_sys::LWLock,
    pub(crate) capacity: u64,
    /// The next entry's sequence number; only grows, across resets.
    pub(crate) next: u64,
    /// Entries numbered below this were emptied by a reset.
    pub(crate) reset_below: u64,
}

pub(crate) static mut RING: *mut Ring = ptr::null_mut();

pub(crate) static mut PRELOADED: bool = false;

pub(crate) const SEGMENT: &CStr = c"tenantguard slow query ring";

pub(crate) fn entry_size() -> usize {
    std::mem::size_of::<Entry>()
}

pub(crate) fn ring_size() -> usize {
    std::mem::size_of::<Ring>() + entry_size() * gucs::slow_query_max() as usize
}

/// The ring's first slot.
///
/// # Safety
/// RING must be attached.
unsafe fn slots() -> *mut Entry {
    (RING as *mut u8).add(std::mem::size_of::<Ring>()) as *mut Entry
}

/// The ring's next entry number.
///
/// # Safety
/// `ring` is the attached ring.
unsafe fn next<'a>(ring: *mut Ring) -> &'a AtomicU64 {
    // SAFETY: an aligned u64 in shared memory, accessed atomically once the ring is set up.
    AtomicU64::from_ptr(ptr::addr_of_mut!((*ring).next))
}

/// The first entry number a reset has not emptied.
///
/// # Safety
/// `ring` is the attached ring.
unsafe fn reset_below<'a>(ring: *mut Ring) -> &'a AtomicU64 {
    // SAFETY: an aligned u64 in shared memory, accessed atomically once the ring is set up.
    AtomicU64::from_ptr(ptr::addr_of_mut!((*ring).reset_below))
}

/// A slot's change count.
///
/// # Safety
/// `slot` points into the attached ring.
unsafe fn changecount<'a>(slot: *mut Entry) -> &'a AtomicU64 {
    // SAFETY: an aligned u64 in shared memory that is only ever accessed atomically.
    AtomicU64::from_ptr(ptr::addr_of_mut!((*slot).head.changecount))
}

/// Changes a slot as a writer: claims it (its count made odd; another writer holds it only when
/// the ring came round to the same slot while that one was writing, so waiting is rare and
/// short), lets `change` run, and makes the count even again.
///
/// # Safety
/// `slot` points into the attached ring; `change` cannot fail.
unsafe fn write_slot(slot: *mut Entry, change: impl FnOnce(&mut Entry)) {
    let count = changecount(slot);
    loop {
        let c = count.load(Ordering::Relaxed);
        if c % 2 == 0
            && count
                .compare_exchange_weak(c, c + 1, Ordering::SeqCst, Ordering::Relaxed)
                .is_ok()
        {
            break;
        }
        std::hint::spin_loop();
    }
    // The odd count is visible before any of the slot's new bytes.
    fence(Ordering::SeqCst);
    change(&mut *slot);
    // Every new byte is visible before the count is even again.
    fence(Ordering::SeqCst);
    count.fetch_add(1, Ordering::Release);
}

/// What a reader found in a slot. (A copy holds one per slot, as a Vec<Option<Copied>> would: the
/// variants without data save nothing by being small.)
#[allow(clippy::large_enum_variant)]
enum Read {
    Empty,
    /// A writer was filling it every time the reader looked.
    Busy,
    Entry(Copied),
}

/// A consistent copy of a slot without any lock, after a few tries.
///
/// # Safety
/// `slot` points into the attached ring.
unsafe fn read_slot(slot: *mut Entry) -> Read {
    let count = changecount(slot);
    let mut query = Vec::new();
    for _ in 0..100 {
        let before = count.load(Ordering::Acquire);
        if before % 2 == 0 {
            // SAFETY: racy copies of plain bytes (no references, no Drop), the length clamped to
            // the buffer, kept only if no writer touched the slot meanwhile, which the count
            // checked after them shows.
            let head = ptr::read_volatile(ptr::addr_of!((*slot).head));
            let len = (head.query_len as usize).min(TEXT_MAX);
            query.clear();
            query.reserve(len);
            ptr::copy_nonoverlapping(
                ptr::addr_of!((*slot).query) as *const u8,
                query.as_mut_ptr(),
                len,
            );
            query.set_len(len);
            fence(Ordering::Acquire);
            if count.load(Ordering::Relaxed) == before {
                return if head.seq == 0 {
                    Read::Empty
                } else {
                    Read::Entry(Copied { head, query })
                };
            }
        }
        std::hint::spin_loop();
    }
    Read::Busy
}

pub(crate) fn preloaded() -> bool {
    // SAFETY: written once in _PG_init.
    unsafe { PRELOADED && !RING.is_null() }
}

/// Creates or attaches the ring, with `lock` as its reset lock. Called from shmem_startup, with
/// AddinShmemInitLock held.
///
/// # Safety
/// Only from shmem_startup_hook.
pub(crate) unsafe fn attach(lock: *mut pg_sys::LWLock) {
    let mut found = false;
    let ring = pg_sys::ShmemInitStruct(SEGMENT.as_ptr(), ring_size(), &mut found) as *mut Ring;
    if !found {
        ptr::write_bytes(ring as *mut u8, 0, ring_size());
        (*ring).lock = lock;
        (*ring).capacity = gucs::slow_query_max() as u64;
        (*ring).next = 1;
    }
    RING = ring;
}

/// What ends a tenant or user name that was cut to fit NAME_MAX bytes.
pub(crate) const CUT_MARK: &[u8] = b"...";

/// A tenant or user name as entries keep it: whole when it fits in NAME_MAX bytes, else its first
/// bytes (on a character boundary) followed by CUT_MARK.
pub(crate) fn copy_name(src: *const std::ffi::c_char) -> ([u8; NAME_MAX], u16) {
    let mut out = [0u8; NAME_MAX];
    if src.is_null() {
        return (out, 0);
    }
    // SAFETY: a NUL-terminated string from the server.
    let bytes = unsafe { CStr::from_ptr(src) }.to_bytes();
    if bytes.len() <= NAME_MAX {
        out[..bytes.len()].copy_from_slice(bytes);
        return (out, bytes.len() as u16);
    }
    let n = clip(bytes, NAME_MAX - CUT_MARK.len());
    out[..n].copy_from_slice(&bytes[..n]);
    out[n..n + CUT_MARK.len()].copy_from_slice(CUT_MARK);
    (out, (n + CUT_MARK.len()) as u16)
}

/// Whether an entry's tenant, as kept, is the session's tenant `mine`. A kept name that ends with
/// CUT_MARK may be the cut of a longer one, which another tenant's id could equal (a parent's
/// path-like id that is the child's first bytes): it matches nobody, and only those who read all
/// statistics see such entries.
pub(crate) fn same_tenant(kept: &[u8], mine: &str) -> bool {
    !kept.ends_with(CUT_MARK) && kept == mine.as_bytes()
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

/// Writes the next entry: numbers it, and lets `fill` write its slot (without any lock, see the
/// module).
///
/// # Safety
/// The ring must be attached (`preloaded()`); `fill` cannot fail.
pub(crate) unsafe fn push(fill: impl FnOnce(&mut Entry)) {
    let ring = RING;
    let seq = next(ring).fetch_add(1, Ordering::SeqCst);
    let slot = slots().add((seq % (*ring).capacity) as usize);
    write_slot(slot, |e| {
        // A writer a whole ring ahead (descheduled as this one was) wrote here already: this
        // entry is overwritten anyway.
        if e.seq < seq {
            e.seq = seq;
            fill(e);
        }
    });
}

/// Empties the ring and returns how many entries it held. `next` keeps growing, so that flushed
/// entries keep unique numbers.
///
/// # Safety
/// The ring must be attached (`preloaded()`).
pub(crate) unsafe fn clear() -> i64 {
    let ring = RING;
    pg_sys::LWLockAcquire((*ring).lock, pg_sys::LWLockMode::LW_EXCLUSIVE);
    // Entries numbered from here on are not the reset's: a writer that took a number before it
    // may still write its slot afterwards, and readers leave such an entry out.
    let below = next(ring).load(Ordering::SeqCst);
    reset_below(ring).fetch_max(below, Ordering::SeqCst);
    let mut n = 0;
    for i in 0..(*ring).capacity as usize {
        write_slot(slots().add(i), |e| {
            if e.seq != 0 && e.seq < below {
                n += 1;
                e.seq = 0;
            }
        });
    }
    pg_sys::LWLockRelease((*ring).lock);
    n
}

/// A copy of the ring's entries, oldest first, read slot by slot without any lock (see the
/// module): writers are never held up. The copy ends before the first entry that was numbered
/// before the copy began but is not in its slot yet (its writer still at work, or the slot busy
/// whenever the reader looked), and leaves out everything numbered after the copy began: a copy
/// holding N + 1 but not N would let flush_slow_queries(), which copies the entries numbered after
/// the last one it stored, pass over N for good. What is left out comes with the next copy.
pub(crate) fn snapshot() -> Vec<Copied> {
    // SAFETY: the ring is attached (checked by the callers); each slot is read by read_slot.
    unsafe {
        let ring = RING;
        let capacity = (*ring).capacity;
        let limit = next(ring).load(Ordering::SeqCst);
        let below = reset_below(ring).load(Ordering::SeqCst);
        let mut read: Vec<Read> = (0..capacity as usize)
            .map(|i| read_slot(slots().add(i)))
            .collect();
        // Entries numbered from `lowest` may still be in the ring: each is in its slot, or was
        // overwritten by a later one, or is still to be written - where the copy ends.
        let lowest = limit.saturating_sub(capacity).max(below).max(1);
        let end = (lowest..limit)
            .find(|&seq| match &read[(seq % capacity) as usize] {
                Read::Entry(e) => e.seq < seq,
                Read::Empty | Read::Busy => true,
            })
            .unwrap_or(limit);
        let mut out: Vec<Copied> = read
            .drain(..)
            .filter_map(|r| match r {
                Read::Entry(e) if e.seq >= below && e.seq < end => Some(e),
                _ => None,
            })
            .collect();
        out.sort_by_key(|e| e.seq);
        out
    }
}

pub(crate) fn require_preload(what: &str) {
    if !preloaded() {
        Error::NeedsPreload { what }.raise();
    }
}
