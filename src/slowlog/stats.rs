//! Per-tenant usage: every top-level statement counted per (database, role, tenant) in a
//! shared-memory table of at most tenantguard.tenant_stats_max entries.
//!
//! The hooks count into a small table of this backend's own (`count`, no lock, no allocation once
//! the key is known); the backend adds it to the shared table at the end of a transaction once it
//! holds 16 keys or statements begun a second or more after the last publish, after every 64th
//! statement (inside a long transaction too), and when it exits (`maybe_publish`, `publish`).
//! Publishing takes the table's LWLock shared and adds with atomic instructions; only a key the
//! table lacks takes it exclusively, and when the table is full that evicts the least-called
//! twentieth first, as pg_stat_statements evicts its least used.
//!
//! The postmaster writes the table to `pg_stat/tenantguard_tenant_stats.stat` when it exits, and
//! the next start reads and deletes the file; a crash (the server reinitialising shared memory)
//! loses the counts, as it loses pg_stat_statements'.
//!
//! Publishing runs in the hooks and transaction callbacks, outside pgrx's error boundary, and
//! raises nothing: the LWLock calls cannot fail here (a backend holds at most this one), and the
//! table is fixed-size memory.

use crate::gucs;
use crate::pg::raw;
use crate::slowlog::ring::{NAME_MAX, STATUS_CANCELLED, STATUS_OK};
use pgrx::pg_sys;
use std::cell::{Cell, RefCell};
use std::ffi::CStr;
use std::io::{Read, Write};
use std::ptr;
use std::sync::atomic::{AtomicU64, Ordering};

/// The counters, by index into `counts`.
pub(crate) const CALLS: usize = 0;
pub(crate) const TOTAL_US: usize = 1;
pub(crate) const MAX_US: usize = 2;
pub(crate) const ROWS: usize = 3;
pub(crate) const BLKS_HIT: usize = 4;
pub(crate) const BLKS_READ: usize = 5;
pub(crate) const TEMP_WRITTEN: usize = 6;
pub(crate) const ERRORS: usize = 7;
pub(crate) const TIMEOUTS: usize = 8;
/// Start times (microseconds since 2000) of the first and the last statement.
pub(crate) const FIRST_SEEN: usize = 9;
pub(crate) const LAST_SEEN: usize = 10;
pub(crate) const COUNTERS: usize = 11;
/// The counters that add up (the others are a maximum and two times).
pub(crate) const SUMMED: [usize; 8] = [
    CALLS,
    TOTAL_US,
    ROWS,
    BLKS_HIT,
    BLKS_READ,
    TEMP_WRITTEN,
    ERRORS,
    TIMEOUTS,
];

/// Publish at transaction end once this many statements are held...
const PUBLISH_STATEMENTS: u32 = 64;
/// ... or this many distinct keys...
const PUBLISH_KEYS: usize = 16;
/// ... or a statement began this long after the last publish.
const PUBLISH_US: i64 = 1_000_000;

const SEGMENT: &CStr = c"tenantguard tenant stats";
const FILE: &str = "pg_stat/tenantguard_tenant_stats.stat";
const FILE_TMP: &str = "pg_stat/tenantguard_tenant_stats.stat.tmp";
const FILE_MAGIC: u32 = 0x5447_5331; // "TGS1"

/// What a row counts for.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct Key {
    pub(crate) dbid: pg_sys::Oid,
    pub(crate) userid: pg_sys::Oid,
    pub(crate) tenant_len: u16,
    /// Always 0: a Key has no padding, so the file holds only written bytes.
    pad: u16,
    pub(crate) tenant: [u8; NAME_MAX],
}

impl Key {
    fn same(&self, other: &Key) -> bool {
        self.dbid == other.dbid
            && self.userid == other.userid
            && self.tenant_len == other.tenant_len
            && self.tenant[..self.tenant_len as usize] == other.tenant[..other.tenant_len as usize]
    }

    /// FNV-1a over the key's meaningful bytes.
    fn hash(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |bytes: &[u8]| {
            for b in bytes {
                h ^= *b as u64;
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        };
        eat(&u32::from(self.dbid).to_le_bytes());
        eat(&u32::from(self.userid).to_le_bytes());
        eat(&self.tenant[..self.tenant_len as usize]);
        h
    }
}

/// One entry: shared (`used` != 0 in the table) or this backend's own.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct Row {
    used: u32,
    pub(crate) key: Key,
    pub(crate) counts: [u64; COUNTERS],
}

// The file holds Rows as bytes: no padding (168 = 4 + 76 + 11 * 8), and the layout docs quote.
const _: () = assert!(std::mem::size_of::<Row>() == 168);

#[repr(C)]
struct Table {
    lock: *mut pg_sys::LWLock,
    /// Slots in the open-addressing table: a power of two, at least twice `max`.
    slots: u64,
    max: u64,
    used: u64,
    /// Entries evicted since the server started.
    evicted: u64,
    /// When the counts were last reset (0: never).
    reset_at: i64,
}

static mut TABLE: *mut Table = ptr::null_mut();

thread_local! {
    static PENDING: RefCell<Vec<Row>> = const { RefCell::new(Vec::new()) };
    static PENDING_STATEMENTS: Cell<u32> = const { Cell::new(0) };
    /// The start time of the last statement counted, and of the last publish.
    static LAST_COUNTED: Cell<i64> = const { Cell::new(0) };
    static LAST_PUBLISHED: Cell<i64> = const { Cell::new(0) };
    static EXIT_HOOKED: Cell<bool> = const { Cell::new(false) };
}

fn slot_count(max: u64) -> u64 {
    (max * 2).next_power_of_two()
}

/// The shared memory the table needs.
pub(crate) fn table_size() -> usize {
    let max = gucs::tenant_stats_max() as u64;
    std::mem::size_of::<Table>() + std::mem::size_of::<Row>() * slot_count(max) as usize
}

/// # Safety
/// TABLE must be attached.
unsafe fn slot(i: u64) -> *mut Row {
    (TABLE as *mut u8)
        .add(std::mem::size_of::<Table>())
        .cast::<Row>()
        .add(i as usize)
}

/// # Safety
/// `p` points to a u64 in the attached table.
unsafe fn atomic<'a>(p: *mut u64) -> &'a AtomicU64 {
    // SAFETY: an aligned u64 in shared memory; while the table's lock is held shared, every
    // access to a counter is atomic.
    AtomicU64::from_ptr(p)
}

pub(crate) fn attached() -> bool {
    // SAFETY: written once per process by shmem_startup.
    unsafe { !TABLE.is_null() }
}

/// Creates or attaches the table; the postmaster also loads the file a clean shutdown left and
/// arranges to write it at exit. Called from shmem_startup, with AddinShmemInitLock held.
///
/// # Safety
/// Only from shmem_startup_hook.
pub(crate) unsafe fn attach(lock: *mut pg_sys::LWLock) {
    let mut found = false;
    let table = pg_sys::ShmemInitStruct(SEGMENT.as_ptr(), table_size(), &mut found) as *mut Table;
    if !found {
        ptr::write_bytes(table as *mut u8, 0, table_size());
        let max = gucs::tenant_stats_max() as u64;
        (*table).lock = lock;
        (*table).max = max;
        (*table).slots = slot_count(max);
    }
    TABLE = table;
    if !pg_sys::IsUnderPostmaster {
        if !found {
            load();
        }
        pg_sys::on_shmem_exit(Some(shutdown), pg_sys::Datum::from(0));
    }
}

/// Finds `key`'s slot, or the empty slot where it would go.
///
/// # Safety
/// TABLE attached and its lock held.
unsafe fn probe(key: &Key) -> (*mut Row, bool) {
    let mask = (*TABLE).slots - 1;
    let mut i = key.hash() & mask;
    loop {
        let row = slot(i);
        if (*row).used == 0 {
            return (row, false);
        }
        if (*row).key.same(key) {
            return (row, true);
        }
        i = (i + 1) & mask;
    }
}

/// Adds `from` into a shared row.
///
/// # Safety
/// `row` is a used slot of the attached table and its lock is held (shared or exclusive).
unsafe fn add(row: *mut Row, from: &[u64; COUNTERS]) {
    let c = ptr::addr_of_mut!((*row).counts) as *mut u64;
    for i in SUMMED {
        if from[i] != 0 {
            atomic(c.add(i)).fetch_add(from[i], Ordering::Relaxed);
        }
    }
    atomic(c.add(MAX_US)).fetch_max(from[MAX_US], Ordering::Relaxed);
    atomic(c.add(FIRST_SEEN)).fetch_min(from[FIRST_SEEN], Ordering::Relaxed);
    atomic(c.add(LAST_SEEN)).fetch_max(from[LAST_SEEN], Ordering::Relaxed);
}

/// Inserts `row`'s key (evicting first when the table is full) and adds its counts.
///
/// # Safety
/// TABLE attached and its lock held exclusively.
unsafe fn insert(row: &Row) {
    let (mut at, found) = probe(&row.key);
    if !found {
        if (*TABLE).used >= (*TABLE).max {
            evict();
            at = probe(&row.key).0;
        }
        *at = Row {
            used: 1,
            key: row.key,
            counts: [0; COUNTERS],
        };
        (*at).counts[FIRST_SEEN] = u64::MAX;
        (*TABLE).used += 1;
    }
    add(at, &row.counts);
}

/// Drops the least-called twentieth of the entries (the least recently seen first among equals)
/// and re-packs the rest.
///
/// # Safety
/// TABLE attached and its lock held exclusively.
unsafe fn evict() {
    let mut rows: Vec<Row> = (0..(*TABLE).slots)
        .map(|i| *slot(i))
        .filter(|r| r.used != 0)
        .collect();
    rows.sort_unstable_by_key(|r| std::cmp::Reverse((r.counts[CALLS], r.counts[LAST_SEEN])));
    let drop = (rows.len() / 20).max(1);
    rows.truncate(rows.len() - drop);
    ptr::write_bytes(
        slot(0) as *mut u8,
        0,
        std::mem::size_of::<Row>() * (*TABLE).slots as usize,
    );
    (*TABLE).used = rows.len() as u64;
    (*TABLE).evicted += drop as u64;
    for r in rows {
        *probe(&r.key).0 = r;
    }
}

/// Counts one finished top-level statement in this backend's own table. No lock, no allocation
/// once the key has been seen; nothing here can raise.
#[allow(clippy::too_many_arguments)]
pub(crate) fn count(
    userid: pg_sys::Oid,
    tenant: &([u8; NAME_MAX], u16),
    started_at: i64,
    duration_us: i64,
    rows: u64,
    blocks: [i64; 3],
    status: u8,
) {
    // SAFETY: a global of the backend.
    let dbid = unsafe { pg_sys::MyDatabaseId };
    let duration = duration_us.max(0) as u64;
    let counted = PENDING.with(|p| {
        let Ok(mut p) = p.try_borrow_mut() else {
            return false;
        };
        let key = Key {
            dbid,
            userid,
            tenant_len: tenant.1,
            pad: 0,
            tenant: tenant.0,
        };
        let i = match p.iter().rposition(|r| r.key.same(&key)) {
            Some(i) => i,
            None => {
                let mut counts = [0; COUNTERS];
                counts[FIRST_SEEN] = started_at as u64;
                p.push(Row {
                    used: 1,
                    key,
                    counts,
                });
                p.len() - 1
            }
        };
        let c = &mut p[i].counts;
        c[CALLS] += 1;
        c[TOTAL_US] += duration;
        c[MAX_US] = c[MAX_US].max(duration);
        c[ROWS] += rows;
        c[BLKS_HIT] += blocks[0].max(0) as u64;
        c[BLKS_READ] += blocks[1].max(0) as u64;
        c[TEMP_WRITTEN] += blocks[2].max(0) as u64;
        match status {
            STATUS_OK => {}
            STATUS_CANCELLED => c[TIMEOUTS] += 1,
            _ => c[ERRORS] += 1,
        }
        c[LAST_SEEN] = c[LAST_SEEN].max(started_at as u64);
        true
    });
    if counted {
        let held = PENDING_STATEMENTS.with(|n| {
            n.set(n.get() + 1);
            n.get()
        });
        LAST_COUNTED.with(|t| t.set(started_at));
        if !EXIT_HOOKED.with(|h| h.replace(true)) {
            // SAFETY: registers a callback for this backend's exit; called once.
            unsafe { hook_exit() };
        }
        // A long transaction (a batch of statements, a procedure) publishes as it goes.
        if held >= PUBLISH_STATEMENTS {
            publish();
        }
    }
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn hook_exit() {
    pg_sys::before_shmem_exit(Some(at_exit), pg_sys::Datum::from(0));
}

unsafe extern "C-unwind" fn at_exit(_code: i32, _arg: pg_sys::Datum) {
    publish();
}

/// The blocks counters a statement's difference is taken from: shared blocks hit and read, temp
/// blocks written.
pub(crate) fn blocks_now() -> [i64; 3] {
    // SAFETY: a plain global of the backend.
    unsafe {
        let b = ptr::addr_of!(pg_sys::pgBufferUsage);
        [
            (*b).shared_blks_hit,
            (*b).shared_blks_read,
            (*b).temp_blks_written,
        ]
    }
}

/// At transaction end: publishes when enough is held (see the module).
pub(crate) fn maybe_publish() {
    let statements = PENDING_STATEMENTS.with(|n| n.get());
    if statements == 0 {
        return;
    }
    let keys = PENDING.with(|p| p.try_borrow().map_or(0, |p| p.len()));
    let waited = LAST_COUNTED.with(|t| t.get()) - LAST_PUBLISHED.with(|t| t.get());
    if statements >= PUBLISH_STATEMENTS || keys >= PUBLISH_KEYS || waited >= PUBLISH_US {
        publish();
    }
}

/// Adds this backend's own counts to the shared table and empties them.
pub(crate) fn publish() {
    if !attached() {
        return;
    }
    let rows: Vec<Row> = PENDING.with(|p| match p.try_borrow_mut() {
        Ok(mut p) => std::mem::take(&mut *p),
        Err(_) => Vec::new(),
    });
    PENDING_STATEMENTS.with(|n| n.set(0));
    LAST_PUBLISHED.with(|t| t.set(LAST_COUNTED.with(|c| c.get())));
    if rows.is_empty() {
        return;
    }
    // SAFETY: the table is attached; LWLockAcquire cannot fail for a backend holding no other
    // tenantguard lock (the server's limit is 200 held at once).
    unsafe {
        let lock = (*TABLE).lock;
        let mut missing = Vec::new();
        raw::LWLockAcquire(lock, pg_sys::LWLockMode::LW_SHARED);
        for r in &rows {
            match probe(&r.key) {
                (at, true) => add(at, &r.counts),
                _ => missing.push(*r),
            }
        }
        raw::LWLockRelease(lock);
        if !missing.is_empty() {
            raw::LWLockAcquire(lock, pg_sys::LWLockMode::LW_EXCLUSIVE);
            for r in &missing {
                insert(r);
            }
            raw::LWLockRelease(lock);
        }
    }
    // Keep the buffer for the next statements.
    PENDING.with(|p| {
        if let Ok(mut p) = p.try_borrow_mut() {
            if p.is_empty() && p.capacity() == 0 {
                *p = Vec::with_capacity(PUBLISH_KEYS);
            }
        }
    });
}

/// A copy of every shared row, after publishing this backend's own counts.
pub(crate) fn snapshot() -> Vec<Row> {
    publish();
    // SAFETY: the table is attached (checked by the callers); counters read atomically.
    unsafe {
        let lock = (*TABLE).lock;
        raw::LWLockAcquire(lock, pg_sys::LWLockMode::LW_SHARED);
        let mut out = Vec::with_capacity((*TABLE).used as usize);
        for i in 0..(*TABLE).slots {
            let row = slot(i);
            if (*row).used == 0 {
                continue;
            }
            let c = ptr::addr_of_mut!((*row).counts) as *mut u64;
            let mut counts = [0; COUNTERS];
            for (j, v) in counts.iter_mut().enumerate() {
                *v = atomic(c.add(j)).load(Ordering::Relaxed);
            }
            out.push(Row {
                used: 1,
                key: (*row).key,
                counts,
            });
        }
        raw::LWLockRelease(lock);
        out
    }
}

/// The table's bound, entries, evictions and last reset.
pub(crate) fn info() -> (u64, u64, u64, i64) {
    // SAFETY: the table is attached (checked by the callers).
    unsafe {
        let lock = (*TABLE).lock;
        raw::LWLockAcquire(lock, pg_sys::LWLockMode::LW_SHARED);
        let t = &*TABLE;
        let out = (t.max, t.used, t.evicted, t.reset_at);
        raw::LWLockRelease(lock);
        out
    }
}

/// Empties the table; returns how many entries it held.
pub(crate) fn reset() -> i64 {
    PENDING.with(|p| {
        if let Ok(mut p) = p.try_borrow_mut() {
            p.clear();
        }
    });
    PENDING_STATEMENTS.with(|n| n.set(0));
    // SAFETY: the table is attached (checked by the callers); exclusive lock.
    unsafe {
        let lock = (*TABLE).lock;
        raw::LWLockAcquire(lock, pg_sys::LWLockMode::LW_EXCLUSIVE);
        let n = (*TABLE).used as i64;
        ptr::write_bytes(
            slot(0) as *mut u8,
            0,
            std::mem::size_of::<Row>() * (*TABLE).slots as usize,
        );
        (*TABLE).used = 0;
        (*TABLE).evicted = 0;
        (*TABLE).reset_at = raw::GetCurrentTimestamp();
        raw::LWLockRelease(lock);
        n
    }
}

fn header() -> [u32; 4] {
    [
        FILE_MAGIC,
        std::mem::size_of::<Row>() as u32,
        COUNTERS as u32,
        NAME_MAX as u32,
    ]
}

/// Reads the file a clean shutdown wrote, then deletes it: counts are never read twice, and a
/// crash after this start leaves nothing stale behind. A file of another layout is ignored.
///
/// # Safety
/// The postmaster, while the table is set up.
unsafe fn load() {
    let Ok(mut file) = std::fs::File::open(FILE) else {
        return;
    };
    let mut bytes = Vec::new();
    let read = file.read_to_end(&mut bytes).is_ok();
    let _ = std::fs::remove_file(FILE);
    let head: Vec<u8> = header().iter().flat_map(|v| v.to_le_bytes()).collect();
    if !read || !bytes.starts_with(&head) {
        pgrx::warning!("tenantguard: ignoring {FILE}: not written by this version");
        return;
    }
    let size = std::mem::size_of::<Row>();
    let body = &bytes[head.len()..];
    for chunk in body.chunks_exact(size) {
        // SAFETY: a Row's bytes as `shutdown` wrote them (plain integers); read unaligned.
        let row: Row = ptr::read_unaligned(chunk.as_ptr() as *const Row);
        if row.used == 0 || row.key.tenant_len as usize > NAME_MAX {
            continue;
        }
        insert(&row);
    }
}

/// Writes the table at the postmaster's exit, unless it exits because of a crash.
unsafe extern "C-unwind" fn shutdown(code: i32, _arg: pg_sys::Datum) {
    if code != 0 || TABLE.is_null() {
        return;
    }
    let write = || -> std::io::Result<()> {
        let mut out = std::io::BufWriter::new(std::fs::File::create(FILE_TMP)?);
        for v in header() {
            out.write_all(&v.to_le_bytes())?;
        }
        for i in 0..(*TABLE).slots {
            let row = slot(i);
            if (*row).used != 0 {
                // SAFETY: a Row is plain integers; every backend has exited.
                let bytes =
                    std::slice::from_raw_parts(row as *const u8, std::mem::size_of::<Row>());
                out.write_all(bytes)?;
            }
        }
        out.into_inner()?.sync_all()?;
        std::fs::rename(FILE_TMP, FILE)
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(FILE_TMP);
        // The server is exiting: report on stderr, which goes to its log.
        eprintln!("tenantguard: could not write {FILE}: {e}");
    }
}
