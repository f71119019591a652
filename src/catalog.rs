//! Catalog lookups shared by protect/unprotect: what a relation is, who owns it, its tenant column.

use crate::errors::{spi, Error};
use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::spi::{OwnedPreparedStatement, SpiTupleTable};
use pgrx::{PgBuiltInOids, PgOid};
use std::cell::OnceCell;
use std::thread::LocalKey;

/// Runs a query through a plan prepared once per backend and kept. The event triggers run the same
/// catalog query for every DDL statement, and planning it costs several times more than running it.
pub fn kept_select<R>(
    plan: &'static LocalKey<OnceCell<OwnedPreparedStatement>>,
    sql: &str,
    types: &[PgOid],
    args: &[DatumWithOid<'_>],
    read: impl FnOnce(SpiTupleTable<'_>) -> Result<R, pgrx::spi::Error>,
) -> R {
    plan.with(|cell| {
        spi(Spi::connect(|client| {
            if cell.get().is_none() {
                let kept = client.prepare(sql, types)?.keep();
                let _ = cell.set(kept);
            }
            let stmt = cell.get().expect("plan prepared above");
            read(client.select(stmt, None, args)?)
        }))
    })
}

/// [`kept_select`] for a catalog probe on the DDL path (protect(), auto-protect, the registry),
/// planned and run with `enable_seqscan = off`. A kept plan keeps the plan it was given at its
/// sixth run: made while pg_policy, pg_attrdef, pg_inherits or the registry were a page or two
/// (a new database), it would scan them whole for good, however many rows they grow to (1,000
/// auto-protected tables made each CREATE TABLE five times slower). Only for lookups by key, which
/// an index serves.
pub fn probe_select<R>(
    plan: &'static LocalKey<OnceCell<OwnedPreparedStatement>>,
    sql: &str,
    types: &[PgOid],
    args: &[DatumWithOid<'_>],
    read: impl FnOnce(SpiTupleTable<'_>) -> Result<R, pgrx::spi::Error>,
) -> R {
    crate::pg::raw::with_setting(c"enable_seqscan", c"off", || {
        kept_select(plan, sql, types, args, read)
    })
}

/// [`kept_first`] as a [`probe_select`].
pub fn probe_first<T: FromDatum + IntoDatum>(
    plan: &'static LocalKey<OnceCell<OwnedPreparedStatement>>,
    sql: &str,
    types: &[PgOid],
    args: &[DatumWithOid<'_>],
) -> Option<T> {
    crate::pg::raw::with_setting(c"enable_seqscan", c"off", || {
        kept_first(plan, sql, types, args)
    })
}

/// Like [`kept_select`], for a statement that writes.
pub fn kept_update(
    plan: &'static LocalKey<OnceCell<OwnedPreparedStatement>>,
    sql: &str,
    types: &[PgOid],
    args: &[DatumWithOid<'_>],
) -> usize {
    plan.with(|cell| {
        spi(Spi::connect_mut(|client| {
            if cell.get().is_none() {
                let kept = client.prepare_mut(sql, types)?.keep();
                let _ = cell.set(kept);
            }
            let stmt = cell.get().expect("plan prepared above");
            client.update(stmt, None, args).map(|t| t.len())
        }))
    })
}

/// The first column of the first row through a kept plan, or `None` for no row (or NULL).
pub fn kept_first<T: FromDatum + IntoDatum>(
    plan: &'static LocalKey<OnceCell<OwnedPreparedStatement>>,
    sql: &str,
    types: &[PgOid],
    args: &[DatumWithOid<'_>],
) -> Option<T> {
    kept_select(plan, sql, types, args, |rows| {
        if rows.is_empty() {
            Ok(None)
        } else {
            rows.first().get_one::<T>()
        }
    })
}

pub const OID: PgOid = PgOid::BuiltIn(PgBuiltInOids::OIDOID);
pub const TEXT: PgOid = PgOid::BuiltIn(PgBuiltInOids::TEXTOID);

/// What protect() needs to know about a relation.
#[derive(Debug, Clone)]
pub struct RelInfo {
    pub oid: pg_sys::Oid,
    pub schema: String,
    pub name: String,
    pub relkind: String,
    pub persistence: String,
    pub rls_enabled: bool,
    pub rls_forced: bool,
    pub is_owner: bool,
    pub owner: String,
    pub is_system: bool,
}

impl RelInfo {
    pub fn load(oid: pg_sys::Oid) -> RelInfo {
        thread_local! {
            static PLAN: OnceCell<OwnedPreparedStatement> = const { OnceCell::new() };
        }
        let found = kept_select(
            &PLAN,
            "SELECT CASE WHEN c.relpersistence = 't' THEN 'pg_temp' ELSE n.nspname::text END,
                    c.relname::text, c.relkind::text, c.relpersistence::text,
                    c.relrowsecurity, c.relforcerowsecurity,
                    pg_catalog.pg_has_role(c.relowner, 'USAGE'),
                    pg_catalog.pg_get_userbyid(c.relowner)::text,
                    (c.oid < 16384 OR n.nspname IN ('pg_catalog', 'information_schema')
                     OR n.nspname LIKE 'pg\\_toast%')
               FROM pg_catalog.pg_class c
               JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
              WHERE c.oid = $1",
            &[OID],
            &[oid.into()],
            |rows| {
                let mut out = None;
                for row in rows {
                    out = Some(RelInfo {
                        oid,
                        schema: row.get::<String>(1)?.unwrap_or_default(),
                        name: row.get::<String>(2)?.unwrap_or_default(),
                        relkind: row.get::<String>(3)?.unwrap_or_default(),
                        persistence: row.get::<String>(4)?.unwrap_or_default(),
                        rls_enabled: row.get::<bool>(5)?.unwrap_or(false),
                        rls_forced: row.get::<bool>(6)?.unwrap_or(false),
                        is_owner: row.get::<bool>(7)?.unwrap_or(false),
                        owner: row.get::<String>(8)?.unwrap_or_default(),
                        is_system: row.get::<bool>(9)?.unwrap_or(false),
                    });
                }
                Ok(out)
            },
        );
        match found {
            Some(info) => info,
            None => Error::NoSuchRelation { oid: oid.to_u32() }.raise(),
        }
    }

    /// The schema-qualified, quoted name, safe to put into SQL.
    pub fn qualified(&self) -> String {
        pgrx::spi::quote_qualified_identifier(&self.schema, &self.name)
    }

    /// The qualified name for messages.
    pub fn display(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }

    pub fn is_partitioned(&self) -> bool {
        self.relkind == "p"
    }

    /// Refuse what cannot carry tenant isolation, and callers who may not change it.
    pub fn check_protectable(&self, verb: &str) {
        let what = match self.relkind.as_str() {
            "r" | "p" => None,
            "v" => Some("a view"),
            "m" => Some("a materialized view"),
            "f" => Some("a foreign table"),
            "S" => Some("a sequence"),
            "i" | "I" => Some("an index"),
            "c" => Some("a composite type"),
            "t" => Some("a TOAST table"),
            _ => Some("not a table"),
        };
        let table = &self.display();
        if let Some(what) = what {
            Error::NotATable { verb, table, what }.raise();
        }
        if self.is_system {
            Error::SystemCatalog { verb, table }.raise();
        }
        if self.schema == "tenantguard" {
            Error::OwnObject { verb, table }.raise();
        }
        if self.persistence == "t" {
            Error::TemporaryTable { verb, table }.raise();
        }
        self.check_owner(&format!("to {verb} it"));
    }

    /// Refuse a caller who may not act as the table's owner; `action` completes "must be owner of
    /// table X ...".
    pub fn check_owner(&self, action: &str) {
        if !self.is_owner {
            Error::NotOwner {
                table: &self.display(),
                action,
                owner: &self.owner,
            }
            .raise();
        }
    }

    /// Every partition below a partitioned table, parents before children.
    pub fn partitions(&self) -> Vec<RelInfo> {
        if !self.is_partitioned() {
            return Vec::new();
        }
        let oids: Vec<pg_sys::Oid> = spi(Spi::connect(|client| {
            let rows = client.select(
                "SELECT relid::oid FROM pg_catalog.pg_partition_tree($1) WHERE relid::oid <> $1 ORDER BY level, relid::oid",
                None,
                &[self.oid.into()],
            )?;
            rows.map(|r| {
                r.get::<pg_sys::Oid>(1)
                    .map(|o| o.unwrap_or(pg_sys::InvalidOid))
            })
            .collect::<Result<Vec<_>, _>>()
        }));
        oids.into_iter().map(RelInfo::load).collect()
    }
}

/// A live column's base type name (after domains, e.g. `timestamptz`), its type as written
/// (`format_type`), and whether it is NOT NULL; None if the table has no such column.
fn column_facts(rel: &RelInfo, column: &str) -> Option<(String, String, bool)> {
    thread_local! {
        static PLAN: OnceCell<OwnedPreparedStatement> = const { OnceCell::new() };
    }
    kept_select(
        &PLAN,
        "SELECT bt.typname::text, pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull
           FROM pg_catalog.pg_attribute a
           JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
           JOIN pg_catalog.pg_type bt ON bt.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
          WHERE a.attrelid = $1 AND a.attname = $2 AND a.attnum > 0 AND NOT a.attisdropped",
        &[OID, TEXT],
        &[rel.oid.into(), column.into()],
        |rows| {
            let mut out = None;
            for row in rows {
                out = Some((
                    row.get::<String>(1)?.unwrap_or_default(),
                    row.get::<String>(2)?.unwrap_or_default(),
                    row.get::<bool>(3)?.unwrap_or(false),
                ));
            }
            Ok(out)
        },
    )
}

/// The base type name (after domains, e.g. `timestamptz`) of a live column, if the table has it.
pub fn column_base_type(rel: &RelInfo, column: &str) -> Option<String> {
    column_facts(rel, column).map(|(base, _, _)| base)
}

/// The tenant column of a table.
#[derive(Debug, Clone)]
pub struct TenantColumn {
    pub name: String,
    /// Base type name: uuid, text, varchar, int8, int4 or int2.
    pub base_type: String,
    /// Whether the column is NOT NULL (lint reports a nullable tenant column).
    #[allow(dead_code)]
    pub not_null: bool,
}

pub const SUPPORTED_TYPES: &str = "uuid, text, varchar, bigint, integer or smallint";

impl TenantColumn {
    pub fn load(rel: &RelInfo, column: &str) -> TenantColumn {
        let found = column_facts(rel, column);
        let Some((base_type, shown_type, not_null)) = found else {
            Error::NoTenantColumn {
                table: &rel.display(),
                column,
            }
            .raise();
        };
        if !matches!(
            base_type.as_str(),
            "uuid" | "text" | "varchar" | "int8" | "int4" | "int2"
        ) {
            Error::UnsupportedTenantType {
                table: &rel.display(),
                column,
                shown: &shown_type,
                supported: SUPPORTED_TYPES,
            }
            .raise();
        }
        TenantColumn {
            name: column.to_string(),
            base_type,
            not_null,
        }
    }
}

/// A column's DEFAULT as PostgreSQL deparses it with only pg_catalog on the search path (so every
/// other schema is written out), or None. A kept plan (protect() asks for every table it
/// protects), always run under the same search_path, so that it is not planned again.
pub fn column_default(rel: &RelInfo, column: &str) -> Option<String> {
    thread_local! {
        static PLAN: OnceCell<OwnedPreparedStatement> = const { OnceCell::new() };
    }
    crate::pg::raw::with_setting(c"search_path", c"pg_catalog", || {
        probe_first::<String>(
            &PLAN,
            "SELECT pg_catalog.pg_get_expr(d.adbin, d.adrelid)
               FROM pg_catalog.pg_attrdef d
               JOIN pg_catalog.pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum
              WHERE d.adrelid = $1 AND a.attname = $2",
            &[OID, TEXT],
            &[rel.oid.into(), column.into()],
        )
    })
}
