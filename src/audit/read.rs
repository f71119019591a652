//! Reading the audit trail: the view `tenantguard.audit_log` shows a role no more than it could
//! read from the audited tables themselves.
//!
//! - A row is visible to a tenant's role only while the role may SELECT the table the row came
//!   from (or a partitioned or inheritance parent of it, through which its rows are read), and
//!   only if the row is the role's tenant's: equal as values for uuid and integer tenant columns
//!   (the view's index condition matches every spelling), byte-equal for text tenant columns
//!   ('007' and '7' are different tenants there).
//! - Columns the role may not SELECT are removed from `old_values`, `new_values` and
//!   `changed_columns`; `record_key` is NULL unless the role may read every key column
//!   (`_audit_hidden()` names them; the view removes them with jsonb's own operators).
//!
//! What a role may read of a table is looked up once and kept per (role, table), until any
//! relation's or role's catalog entry changes (a GRANT or REVOKE on a table or column changes its
//! pg_class or pg_attribute row, which invalidates it; role membership changes invalidate the
//! role caches). Superusers and members of tenantguard_admin see every row whole.
//!
//! The functions are PARALLEL RESTRICTED: a parallel worker would start with an empty cache and
//! look everything up again, which cost a tenant's period query 50 ms instead of 1.

use crate::catalog::{kept_select, OID};
use crate::privileges;
use pgrx::prelude::*;
use pgrx::spi::OwnedPreparedStatement;
use std::cell::{Cell, OnceCell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

/// What the current role may read of one audited table.
struct Access {
    /// It may SELECT at least one column of the table or of a parent it is read through.
    readable: bool,
    /// The table's tenant column holds text: tenants compare byte by byte.
    text_key: bool,
    /// None when every column is readable; otherwise the names of the columns that are not, as
    /// the bytes of a text[] value.
    hidden: Option<Vec<u8>>,
}

/// Entries kept at most; the cache starts over beyond this (one per role and audited table).
const MAX_ENTRIES: usize = 4096;

thread_local! {
    static CACHE: RefCell<HashMap<(pg_sys::Oid, pg_sys::Oid), Rc<Access>>> = RefCell::new(HashMap::new());
    static CALLBACKS: Cell<bool> = const { Cell::new(false) };
}

#[pg_guard]
unsafe extern "C-unwind" fn relation_changed(_arg: pg_sys::Datum, _relid: pg_sys::Oid) {
    clear();
}

#[pg_guard]
unsafe extern "C-unwind" fn roles_changed(_arg: pg_sys::Datum, _cacheid: i32, _hash: u32) {
    clear();
}

fn clear() {
    let dropped = CACHE.with(|c| c.try_borrow_mut().map(|mut c| std::mem::take(&mut *c)));
    drop(dropped);
}

fn register_callbacks() {
    // A GRANT on a parent changes the parent's relcache entry, not the child's: any relation
    // change empties the whole (small) cache.
    crate::pg::callbacks::register_once(
        &CALLBACKS,
        Some(relation_changed),
        &[
            (pg_sys::SysCacheIdentifier::AUTHOID, roles_changed),
            (pg_sys::SysCacheIdentifier::AUTHMEMROLEMEM, roles_changed),
        ],
    );
}

fn load(reader: pg_sys::Oid, table: pg_sys::Oid) -> Access {
    thread_local! {
        static READ_THROUGH: OnceCell<OwnedPreparedStatement> = const { OnceCell::new() };
        static COLUMNS: OnceCell<OwnedPreparedStatement> = const { OnceCell::new() };
        static KEY_KIND: OnceCell<OwnedPreparedStatement> = const { OnceCell::new() };
    }
    // The nearest of the table and its ancestors (partitions and inheritance) that the role may
    // read any column of: rows of a partition are read through its parent.
    let through: Option<(pg_sys::Oid, bool)> = crate::catalog::probe_select(
        &READ_THROUGH,
        "WITH RECURSIVE up(oid, depth) AS (
             SELECT $1, 0
             UNION ALL
             SELECT i.inhparent, u.depth + 1 FROM pg_catalog.pg_inherits i JOIN up u ON i.inhrelid = u.oid
              WHERE u.depth < 64)
         SELECT u.oid, pg_catalog.has_table_privilege($2, u.oid, 'SELECT')
           FROM up u
          WHERE EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid = u.oid)
            AND pg_catalog.has_any_column_privilege($2, u.oid, 'SELECT')
          ORDER BY u.depth LIMIT 1",
        &[OID, OID],
        &[table.into(), reader.into()],
        |rows| {
            let mut out = None;
            for row in rows {
                out = Some((
                    row.get::<pg_sys::Oid>(1)?.unwrap_or_default(),
                    row.get::<bool>(2)?.unwrap_or(false),
                ));
            }
            Ok(out)
        },
    );
    let Some((relation, whole)) = through else {
        return Access {
            readable: false,
            text_key: true,
            hidden: None,
        };
    };
    let hidden: Option<Vec<String>> = if whole {
        None
    } else {
        // The table's columns that the relation read through has no readable column of that name
        // for (an inheritance child's own columns are not read through its parent).
        Some(kept_select(
            &COLUMNS,
            "SELECT a.attname::text
               FROM pg_catalog.pg_attribute a
               LEFT JOIN pg_catalog.pg_attribute r
                 ON r.attrelid = $2 AND r.attname = a.attname AND r.attnum > 0 AND NOT r.attisdropped
              WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
                AND NOT COALESCE(pg_catalog.has_column_privilege($3, $2, r.attnum, 'SELECT'), false)",
            &[OID, OID, OID],
            &[table.into(), relation.into(), reader.into()],
            |rows| {
                rows.map(|r| r.get::<String>(1).map(Option::unwrap_or_default))
                    .collect()
            },
        ))
    };
    // A table no longer registered, or whose tenant column is gone, compares as text: exact.
    let text_key = crate::catalog::probe_first::<bool>(
        &KEY_KIND,
        "SELECT bt.typcategory = 'S'
           FROM tenantguard.registry r
           JOIN pg_catalog.pg_attribute a
             ON a.attrelid = r.relid AND a.attname = r.tenant_column AND NOT a.attisdropped
           JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
           JOIN pg_catalog.pg_type bt ON bt.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
          WHERE r.relid = $1",
        &[OID],
        &[table.into()],
    )
    .unwrap_or(true);
    Access {
        readable: true,
        text_key,
        hidden: hidden.map(|names| text_array_bytes(&names)),
    }
}

/// The bytes of a text[] value holding `names`, to hand out copies of per call.
fn text_array_bytes(names: &[String]) -> Vec<u8> {
    let datum = names.to_vec().into_datum().expect("an array is never NULL");
    // SAFETY: a freshly built, untoasted array varlena in the current memory context.
    unsafe {
        let p = datum.cast_mut_ptr::<pg_sys::varlena>();
        std::slice::from_raw_parts(p as *const u8, pgrx::varsize_any(p)).to_vec()
    }
}

/// The cached entry for (reader, table), if there is one. Never raises.
fn cached(reader: pg_sys::Oid, table: pg_sys::Oid) -> Option<Rc<Access>> {
    CACHE.with(|c| c.try_borrow().ok()?.get(&(reader, table)).cloned())
}

/// Looks up what `reader` may read of `table` and caches it (SPI, so behind pgrx's error
/// boundary).
#[pg_guard]
extern "C-unwind" fn fill(reader: pg_sys::Oid, table: pg_sys::Oid) {
    register_callbacks();
    let a = Rc::new(crate::pg::raw::with_row_security(|| load(reader, table)));
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() >= MAX_ENTRIES {
            c.clear();
        }
        c.insert((reader, table), a);
    });
}

fn access(reader: pg_sys::Oid, table: pg_sys::Oid) -> Rc<Access> {
    if let Some(a) = cached(reader, table) {
        return a;
    }
    fill(reader, table);
    cached(reader, table).unwrap_or_else(|| {
        Rc::new(Access {
            readable: false,
            text_key: true,
            hidden: None,
        })
    })
}

/// The role reading: the view and audit_history() pass it to the checks below, so that the
/// SECURITY DEFINER lookup by record key checks the caller, not itself.
#[pg_extern(stable, parallel_restricted)]
fn _reader() -> pg_sys::Oid {
    // SAFETY: the current user's OID.
    unsafe { pg_sys::GetUserId() }
}

/// True when `reader` is a superuser or has the privileges of tenantguard_admin: it sees every
/// audit row whole.
#[pg_extern(stable, parallel_restricted)]
fn _audit_sees_all(reader: pg_sys::Oid) -> bool {
    privileges::is_admin_role(reader)
}

// The two per-row functions are C-ABI functions called directly by the executor, like the
// policies' tenant functions: a cached answer is read without pgrx's per-call error boundary
// (about 1 us a call, and the view calls them up to seven times per row). Only a cache miss goes
// through it, in `fill`.

crate::pg_finfo_v1!(pg_finfo_tenantguard_audit_visible);
/// `_audit_visible(reader oid, table oid, tenant_id text, current text) RETURNS boolean`, STRICT:
/// whether `reader` may see an audit row of `table` whose tenant is `tenant_id`, given the session's
/// tenant setting `current` (the view's index condition has matched every spelling of it; for a
/// text tenant column only the exact bytes count).
#[no_mangle]
pub extern "C-unwind" fn tenantguard_audit_visible(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    // SAFETY: declared in SQL as STRICT (oid, oid, text, text); text arguments are detoasted as
    // the server's own functions do (may raise out of memory, passing through like a cast's).
    unsafe {
        let oid =
            |i| pg_sys::Oid::from(pgrx::fcinfo::pg_getarg_datum_raw(fcinfo, i).value() as u32);
        let a = access(oid(0), oid(1));
        if !a.readable {
            return pg_sys::Datum::from(false);
        }
        if !a.text_key {
            return pg_sys::Datum::from(true);
        }
        let text = |i| {
            let t = crate::pg::raw::pg_detoast_datum_packed(
                pgrx::fcinfo::pg_getarg_datum_raw(fcinfo, i).cast_mut_ptr(),
            );
            pgrx::varlena::varlena_to_byte_slice(t)
        };
        pg_sys::Datum::from(text(2) == text(3))
    }
}

crate::pg_finfo_v1!(pg_finfo_tenantguard_audit_hidden);
/// `_audit_hidden(reader oid, table oid) RETURNS text[]`, STRICT: the columns of `table` that
/// `reader` may not SELECT, or NULL when it may read them all (the common case, which the view passes through
/// untouched). The view removes them from `old_values`, `new_values` and `changed_columns` with
/// PostgreSQL's own jsonb and array operators, and blanks `record_key` when it names one.
#[no_mangle]
pub extern "C-unwind" fn tenantguard_audit_hidden(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    // SAFETY: declared in SQL as STRICT (oid, oid). The cached array is a complete varlena copied
    // into a new palloc'd value (palloc may raise out of memory, passing through).
    unsafe {
        let oid =
            |i| pg_sys::Oid::from(pgrx::fcinfo::pg_getarg_datum_raw(fcinfo, i).value() as u32);
        match &access(oid(0), oid(1)).hidden {
            None => pgrx::fcinfo::pg_return_null(fcinfo),
            Some(bytes) => {
                let p = crate::pg::raw::palloc(bytes.len()) as *mut u8;
                std::ptr::copy_nonoverlapping(bytes.as_ptr(), p, bytes.len());
                pg_sys::Datum::from(p)
            }
        }
    }
}
