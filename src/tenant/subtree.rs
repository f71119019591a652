//! Tenant hierarchies: `tenant_subtree_<type>(spec, tenants, key, parent, list)` gives the
//! session's tenant (or list of tenants) and every descendant in the tenants table, at most
//! `tenantguard.hierarchy_max_depth` levels down; a cycle ends there too. The policies call it
//! in an InitPlan, once per statement.
//!
//! The tenants table is read as the extension's owner when a protected table names it (the
//! hierarchy is configuration, and the tenants table is often protected itself); called with any
//! other table, the function reads as the caller, with the caller's privileges and policies.

use crate::catalog::RelInfo;
use crate::errors::spi;
use pgrx::datum::{FromDatum, IntoDatum};
use pgrx::prelude::*;
use pgrx::spi::quote_identifier;

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
    T: FromDatum + IntoDatum + for<'a> pgrx::datum::UnboxDatum<As<'a> = T> + 'static,
{
    let roots = roots(spec, many);
    if roots.is_empty() {
        return None;
    }
    let rel = RelInfo::load(tbl);
    let key_type = spi(Spi::get_one_with_args::<String>(
        "SELECT (SELECT pg_catalog.format_type(a.atttypid, a.atttypmod)
                   FROM pg_catalog.pg_attribute a
                  WHERE a.attrelid = $1 AND a.attname = $2 AND a.attnum > 0
                    AND NOT a.attisdropped)",
        &[tbl.into(), key.into()],
    ))?;
    let sql = format!(
        "WITH RECURSIVE t(id, depth) AS (
             SELECT r::{key_type}, 0 FROM pg_catalog.unnest($1::text[]) AS r
             UNION
             SELECT c.{k}, t.depth + 1 FROM {table} c JOIN t ON c.{p} = t.id
              WHERE t.depth < $2)
         SELECT pg_catalog.array_agg(DISTINCT id) FROM t",
        k = quote_identifier(key),
        p = quote_identifier(parent),
        table = rel.qualified(),
    );
    let depth = crate::gucs::hierarchy_max_depth();
    let run = || {
        spi(Spi::get_one_with_args::<Vec<T>>(
            &sql,
            &[roots.clone().into(), depth.into()],
        ))
    };
    if configured(tbl, key, parent) {
        crate::audit::write::as_audit_owner(|| crate::pg::raw::with_row_security(run))
    } else {
        run()
    }
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
