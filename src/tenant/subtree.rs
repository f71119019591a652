//! Tenant hierarchies: `tenant_subtree_<type>(spec, tenants, key, parent, list)` gives the
//! session's tenant (or list of tenants) and every descendant in the tenants table, at most
//! `tenantguard.hierarchy_max_depth` levels down; a cycle ends there too. C functions, STABLE:
//! an index scan evaluates one once; every other call of the same call site (a sequential scan's
//! rows) returns the array it kept, while the session's tenants and the kept subtrees stay the
//! same.
//!
//! The tenants table is read as the extension's owner when a protected table names it (the
//! hierarchy is configuration, and the tenants table is often protected itself); called with any
//! other table, the function reads as the caller, with the caller's privileges and policies.
//!
//! Each backend keeps the subtrees it computed. protect() attaches a statement trigger to the
//! tenants table (`tenantguard_tenants_changed`) that sends a relcache invalidation of it to every
//! backend on any change; they then compute again. Where that trigger is missing (the table's
//! owner did not protect), a subtree is kept only for the transaction that computed it.

use crate::catalog::RelInfo;
use crate::errors::spi;
use pgrx::datum::{FromDatum, IntoDatum};
use pgrx::prelude::*;
use pgrx::spi::quote_identifier;
use std::any::Any;
use std::cell::{Cell, RefCell};
use std::rc::Rc;

/// The trigger protect() attaches to a hierarchy's tenants table.
pub const TENANTS_TRIGGER: &str = "tenantguard_tenants_changed";

/// (tenants table, key, parent, list, roots, depth, reading role) -> the subtree, as a `Vec<T>`.
type Key = (
    pg_sys::Oid,
    String,
    String,
    bool,
    Vec<String>,
    i32,
    pg_sys::Oid,
);

struct Kept {
    subtree: Rc<dyn Any>,
    /// 0 when the tenants table has the invalidation trigger; else the transaction it holds for.
    only_in: u32,
}

thread_local! {
    static KEPT: RefCell<Vec<(Key, Kept)>> = const { RefCell::new(Vec::new()) };
    static CALLBACK: Cell<bool> = const { Cell::new(false) };
}

/// Keeps at most this many subtrees; then starts over.
const MAX_KEPT: usize = 256;

/// A relcache invalidation of a tenants table (or of everything) drops what was kept for it.
#[pg_guard]
unsafe extern "C-unwind" fn invalidated(_arg: pg_sys::Datum, relid: pg_sys::Oid) {
    KEPT.with(|k| {
        if let Ok(mut k) = k.try_borrow_mut() {
            k.retain(|(key, _)| relid != pg_sys::InvalidOid && key.0 != relid);
        }
    });
    EPOCH.with(|e| e.set(e.get() + 1));
    LAST.with(|l| {
        if let Ok(mut l) = l.try_borrow_mut() {
            *l = None;
        }
    });
}

fn has_trigger(tbl: pg_sys::Oid) -> bool {
    spi(Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger
                         WHERE tgrelid = $1 AND tgname = $2 AND tgenabled <> 'D')",
        &[tbl.into(), TENANTS_TRIGGER.into()],
    ))
    .unwrap_or(false)
}

/// The session's tenants from `spec` (one, or a list), as text; empty when none.
fn roots(spec: &str, many: bool) -> Vec<String> {
    crate::tenant::values::tenant_texts(spec, many)
}

/// Does a protected table's hierarchy name this tenants table, key and parent column?
fn configured(tbl: pg_sys::Oid, key: &str, parent: &str) -> bool {
    spi(Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (SELECT 1 FROM tenantguard.registry r
                         WHERE pg_catalog.to_regclass(r.options -> 'hierarchy' ->> 'table') = $1
                           AND r.options -> 'hierarchy' ->> 'key' = $2
                           AND r.options -> 'hierarchy' ->> 'parent' = $3)",
        &[tbl.into(), key.into(), parent.into()],
    ))
    .unwrap_or(false)
}

/// The subtree, and the transaction it holds for (0: until the tenants table changes).
fn subtree<T>(
    spec: &str,
    tbl: pg_sys::Oid,
    key: &str,
    parent: &str,
    many: bool,
) -> Option<(Vec<T>, u32)>
where
    T: FromDatum + IntoDatum + for<'a> pgrx::datum::UnboxDatum<As<'a> = T> + Clone + 'static,
{
    let roots = roots(spec, many);
    if roots.is_empty() {
        return None;
    }
    crate::pg::callbacks::register_once(&CALLBACK, Some(invalidated), &[]);
    let depth = crate::gucs::hierarchy_max_depth();
    // SAFETY: the backend's own PGPROC.
    let xid = unsafe { crate::pg::raw::my_local_xid() };
    // SAFETY: the current user's oid: a subtree read with one role's privileges is not another's.
    let user = unsafe { crate::pg::raw::GetUserId() };
    let key: Key = (
        tbl,
        key.to_string(),
        parent.to_string(),
        many,
        roots.clone(),
        depth,
        user,
    );
    let found = KEPT.with(|k| {
        k.borrow()
            .iter()
            .find(|(kk, kept)| *kk == key && (kept.only_in == 0 || kept.only_in == xid))
            .and_then(|(_, kept)| {
                let only_in = kept.only_in;
                kept.subtree
                    .clone()
                    .downcast::<Vec<T>>()
                    .ok()
                    .map(|v| (v, only_in))
            })
    });
    if let Some((v, only_in)) = found {
        return Some(((*v).clone(), only_in));
    }
    let (tbl, key_col, parent_col) = (key.0, key.1.as_str(), key.2.as_str());
    let rel = RelInfo::load(tbl);
    let key_type = spi(Spi::get_one_with_args::<String>(
        "SELECT (SELECT pg_catalog.format_type(a.atttypid, a.atttypmod)
                   FROM pg_catalog.pg_attribute a
                  WHERE a.attrelid = $1 AND a.attname = $2 AND a.attnum > 0
                    AND NOT a.attisdropped)",
        &[tbl.into(), key_col.into()],
    ))?;
    let sql = format!(
        "WITH RECURSIVE t(id, depth) AS (
             SELECT r::{key_type}, 0 FROM pg_catalog.unnest($1::text[]) AS r
             UNION
             SELECT c.{k}, t.depth + 1 FROM {table} c JOIN t ON c.{p} = t.id
              WHERE t.depth < $2)
         SELECT pg_catalog.array_agg(DISTINCT id) FROM t",
        k = quote_identifier(key_col),
        p = quote_identifier(parent_col),
        table = rel.qualified(),
    );
    let run = || {
        spi(Spi::get_one_with_args::<Vec<T>>(
            &sql,
            &[roots.clone().into(), depth.into()],
        ))
    };
    let subtree = if configured(tbl, key_col, parent_col) {
        crate::audit::write::as_audit_owner(|| crate::pg::raw::with_row_security(run))
    } else {
        run()
    }?;
    let only_in = if has_trigger(tbl) { 0 } else { xid };
    KEPT.with(|k| {
        let mut k = k.borrow_mut();
        if k.len() >= MAX_KEPT {
            k.clear();
        }
        k.retain(|(kk, _)| *kk != key);
        k.push((
            key,
            Kept {
                subtree: Rc::new(subtree.clone()),
                only_in,
            },
        ));
    });
    Some((subtree, only_in))
}

thread_local! {
    /// Bumped whenever kept subtrees are dropped (an invalidation), so call sites look again.
    static EPOCH: Cell<u64> = const { Cell::new(0) };
}

/// What one call site keeps: the roots' text it computed for, the epoch, the array datum (in the
/// call site's memory context). A policy evaluated for every row of a scan returns it as it is.
/// Everything in it lives in the call site's memory context, which PostgreSQL frees with the query:
/// no Rust-owned memory (that would leak, its Drop never running).
struct CallSite {
    roots: *mut u8,
    roots_len: usize,
    signed: bool,
    epoch: u64,
    datum: pg_sys::Datum,
}

/// What a call asked for, besides its text arguments and roots (see `Last`).
#[derive(Clone, Copy)]
struct LastAsk {
    kind: u8,
    tbl: pg_sys::Oid,
    many: bool,
    signed: bool,
    epoch: u64,
    depth: i32,
    user: pg_sys::Oid,
    /// In `Last`: 0, or the only transaction the subtree holds for (no invalidation trigger).
    xid: u32,
}

impl LastAsk {
    fn same_as(&self, now: &LastAsk) -> bool {
        self.kind == now.kind
            && self.tbl == now.tbl
            && self.many == now.many
            && self.signed == now.signed
            && self.epoch == now.epoch
            && self.depth == now.depth
            && self.user == now.user
            && (self.xid == 0 || self.xid == now.xid)
    }
}

/// The last subtree computed or found, as the array's bytes: each statement's policy is a new call
/// site, and most ask what the one before asked. Copying the array skips building the key, the
/// search of the kept subtrees and the array's construction (about 17,000 instructions a statement
/// for 43 tenants, where the copy is a palloc and a memcpy).
struct Last {
    ask: LastAsk,
    spec: Vec<u8>,
    key: Vec<u8>,
    parent: Vec<u8>,
    roots: Vec<u8>,
    array: Vec<u8>,
}

thread_local! {
    static LAST: RefCell<Option<Last>> = const { RefCell::new(None) };
}

/// The subtree as an array datum in `cxt`, computed (or found kept) inside pgrx's error boundary.
#[pg_guard]
#[allow(clippy::too_many_arguments)]
unsafe extern "C-unwind" fn compute(
    kind: u8,
    spec: *const pg_sys::varlena,
    tbl: pg_sys::Oid,
    key: *const pg_sys::varlena,
    parent: *const pg_sys::varlena,
    many: bool,
    cxt: pg_sys::MemoryContext,
    isnull: *mut bool,
    only_in: *mut u32,
) -> pg_sys::Datum {
    let text = |v: *const pg_sys::varlena| {
        String::from_utf8_lossy(pgrx::varlena::varlena_to_byte_slice(v)).into_owned()
    };
    let (spec, key, parent) = (text(spec), text(key), text(parent));
    let old = pg_sys::MemoryContextSwitchTo(cxt);
    fn split<T>(found: Option<(Vec<T>, u32)>, only_in: *mut u32) -> Option<Vec<T>> {
        found.map(|(v, x)| {
            // SAFETY: the caller's out parameter.
            unsafe { *only_in = x };
            v
        })
    }
    let datum = match kind {
        b'u' => split(
            subtree::<pgrx::Uuid>(&spec, tbl, &key, &parent, many),
            only_in,
        )
        .into_datum(),
        b'8' => split(subtree::<i64>(&spec, tbl, &key, &parent, many), only_in).into_datum(),
        b'4' => split(subtree::<i32>(&spec, tbl, &key, &parent, many), only_in).into_datum(),
        b'2' => split(subtree::<i16>(&spec, tbl, &key, &parent, many), only_in).into_datum(),
        _ => split(subtree::<String>(&spec, tbl, &key, &parent, many), only_in).into_datum(),
    };
    pg_sys::MemoryContextSwitchTo(old);
    *isnull = datum.is_none();
    datum.unwrap_or(pg_sys::Datum::from(0))
}

/// `tenant_subtree_<type>(spec, tenants, key, parent, list)`: STABLE; the array is kept per call
/// site while the roots and the kept subtrees stay the same.
///
/// # Safety
/// `fcinfo` is a call with five non-null arguments (text, oid, text, text, bool).
unsafe fn subtree_datum(fcinfo: pg_sys::FunctionCallInfo, kind: u8) -> pg_sys::Datum {
    let arg = |i| pgrx::fcinfo::pg_getarg_datum_raw(fcinfo, i);
    let detoast = |d: pg_sys::Datum| {
        crate::pg::raw::pg_detoast_datum_packed(d.cast_mut_ptr()) as *const pg_sys::varlena
    };
    let spec = detoast(arg(0));
    let tbl = pg_sys::Oid::from(arg(1).value() as u32);
    let many = arg(4).value() != 0;
    let roots = crate::tenant::values::roots_text(pgrx::varlena::varlena_to_byte_slice(spec));
    let flinfo = (*fcinfo).flinfo;
    let epoch = EPOCH.with(|e| e.get());
    let site = if flinfo.is_null() {
        std::ptr::null_mut()
    } else {
        (*flinfo).fn_extra as *mut CallSite
    };
    if let (false, Some((r, signed))) = (site.is_null(), &roots) {
        let kept = std::slice::from_raw_parts((*site).roots, (*site).roots_len);
        if (*site).epoch == epoch && (*site).signed == *signed && kept == r.as_slice() {
            return (*site).datum;
        }
    }
    let Some((roots, signed)) = roots else {
        return pgrx::fcinfo::pg_return_null(fcinfo);
    };
    let cxt = if flinfo.is_null() {
        pg_sys::CurrentMemoryContext
    } else {
        (*flinfo).fn_mcxt
    };
    let (key, parent) = (detoast(arg(2)), detoast(arg(3)));
    let bytes = |v: *const pg_sys::varlena| pgrx::varlena::varlena_to_byte_slice(v);
    let now = LastAsk {
        kind,
        tbl,
        many,
        signed,
        epoch,
        depth: crate::gucs::hierarchy_max_depth(),
        user: crate::pg::raw::GetUserId(),
        xid: crate::pg::raw::my_local_xid(),
    };
    // A new call site (each statement's) asking what the last one asked: a copy of its array.
    let again = LAST.with(|l| {
        let l = l.borrow();
        let last = l.as_ref()?;
        (last.ask.same_as(&now)
            && last.spec == bytes(spec)
            && last.key == bytes(key)
            && last.parent == bytes(parent)
            && last.roots == roots)
            .then(|| {
                let copy = pg_sys::MemoryContextAlloc(cxt, last.array.len()) as *mut u8;
                std::ptr::copy_nonoverlapping(last.array.as_ptr(), copy, last.array.len());
                pg_sys::Datum::from(copy)
            })
    });
    let datum = match again {
        Some(d) => d,
        None => {
            let mut isnull = false;
            let mut only_in = 0u32;
            let datum = compute(
                kind,
                spec,
                tbl,
                key,
                parent,
                many,
                cxt,
                &mut isnull,
                &mut only_in,
            );
            if isnull {
                return pgrx::fcinfo::pg_return_null(fcinfo);
            }
            let array = datum.cast_mut_ptr::<pg_sys::varlena>();
            let len = pgrx::varlena::varsize_any(array);
            LAST.with(|l| {
                *l.borrow_mut() = Some(Last {
                    ask: LastAsk {
                        xid: only_in,
                        ..now
                    },
                    spec: bytes(spec).to_vec(),
                    key: bytes(key).to_vec(),
                    parent: bytes(parent).to_vec(),
                    roots: roots.clone(),
                    array: std::slice::from_raw_parts(array as *const u8, len).to_vec(),
                })
            });
            datum
        }
    };
    if !flinfo.is_null() {
        let kept = pg_sys::MemoryContextAlloc(cxt, roots.len().max(1)) as *mut u8;
        std::ptr::copy_nonoverlapping(roots.as_ptr(), kept, roots.len());
        let site = if site.is_null() {
            let s =
                pg_sys::MemoryContextAlloc(cxt, std::mem::size_of::<CallSite>()) as *mut CallSite;
            (*flinfo).fn_extra = s as *mut std::ffi::c_void;
            s
        } else {
            site
        };
        site.write(CallSite {
            roots: kept,
            roots_len: roots.len(),
            signed,
            epoch: EPOCH.with(|e| e.get()),
            datum,
        });
    }
    datum
}

macro_rules! subtree_fn {
    ($finfo:ident, $name:ident, $kind:expr) => {
        crate::pg_finfo_v1!($finfo);
        /// The session's tenants and their descendants in the tenants table (see the module).
        #[no_mangle]
        pub extern "C-unwind" fn $name(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
            // SAFETY: declared in SQL as STRICT with (text, oid, text, text, boolean).
            unsafe { subtree_datum(fcinfo, $kind) }
        }
    };
}

subtree_fn!(
    pg_finfo_tenantguard_subtree_uuid,
    tenantguard_subtree_uuid,
    b'u'
);
subtree_fn!(
    pg_finfo_tenantguard_subtree_bigint,
    tenantguard_subtree_bigint,
    b'8'
);
subtree_fn!(
    pg_finfo_tenantguard_subtree_integer,
    tenantguard_subtree_integer,
    b'4'
);
subtree_fn!(
    pg_finfo_tenantguard_subtree_smallint,
    tenantguard_subtree_smallint,
    b'2'
);
subtree_fn!(
    pg_finfo_tenantguard_subtree_text,
    tenantguard_subtree_text,
    b't'
);
