//! Tenant hierarchies: `tenant_subtree_<type>(spec, tenants, key, parent, list)` gives the
//! session's tenant (or list of tenants) and every descendant in the tenants table, at most
//! `tenantguard.hierarchy_max_depth` levels down; a cycle ends there too. The policies call it
//! in an InitPlan, once per statement.
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

fn subtree<T>(spec: &str, tbl: pg_sys::Oid, key: &str, parent: &str, many: bool) -> Option<Vec<T>>
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
            .and_then(|(_, kept)| kept.subtree.clone().downcast::<Vec<T>>().ok())
    });
    if let Some(v) = found {
        return Some((*v).clone());
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
    Some(subtree)
}

macro_rules! subtree_fn {
    ($name:ident, $t:ty) => {
        /// The session's tenants and their descendants in the tenants table (see the module).
        #[pg_extern(stable, parallel_restricted)]
        fn $name(
            spec: &str,
            tenants: pg_sys::Oid,
            key: &str,
            parent: &str,
            list: bool,
        ) -> Option<Vec<$t>> {
            subtree::<$t>(spec, tenants, key, parent, list)
        }
    };
}

subtree_fn!(tenant_subtree_uuid, pgrx::Uuid);
subtree_fn!(tenant_subtree_bigint, i64);
subtree_fn!(tenant_subtree_integer, i32);
subtree_fn!(tenant_subtree_smallint, i16);
subtree_fn!(tenant_subtree_text, String);
