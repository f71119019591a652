//! Auto-protect: a table that gains the tenant column is protected in the same transaction, and
//! options that name a column follow it when it is renamed.

use crate::catalog::probe_select;
use crate::errors::{spi, Error};
use crate::gucs::{self, AutoProtect};
use crate::pg::nodes::{list_nodes, range_var_oid};
use crate::protect;
use pgrx::prelude::*;
use pgrx::spi::OwnedPreparedStatement;
use pgrx::{PgBuiltInOids, PgOid};
use std::cell::OnceCell;
use std::ffi::CStr;

thread_local! {
    static CANDIDATES_PLAN: OnceCell<OwnedPreparedStatement> = const { OnceCell::new() };
}

/// `ALTER TABLE ... RENAME COLUMN`: audit_exclude and time_column entries follow their column.
///
/// # Safety
/// `parsetree` must be the statement's parse tree, non-null.
pub(crate) unsafe fn follow_column_rename(parsetree: *mut pg_sys::Node) {
    // SAFETY: the statement's parse tree, read-only, checked to be a RenameStmt before the cast.
    let (relid, old, new) = unsafe {
        if (*parsetree).type_ != pg_sys::NodeTag::T_RenameStmt {
            return;
        }
        let stmt = parsetree as *mut pg_sys::RenameStmt;
        if (*stmt).renameType != pg_sys::ObjectType::OBJECT_COLUMN
            || (*stmt).subname.is_null()
            || (*stmt).newname.is_null()
        {
            return;
        }
        let Some(relid) = range_var_oid((*stmt).relation) else {
            return;
        };
        (
            relid,
            CStr::from_ptr((*stmt).subname)
                .to_string_lossy()
                .into_owned(),
            CStr::from_ptr((*stmt).newname)
                .to_string_lossy()
                .into_owned(),
        )
    };
    // The rename recurses to inheritance children (partitions are re-protected with their parent).
    let mut tables = vec![relid];
    tables.extend(inheritance_children(&tables));
    for oid in tables {
        if let Some(account) = protect::api::follow_column_rename(oid, &old, &new) {
            notice!(
                "tenantguard: the options follow the rename of column \"{old}\" to \"{new}\": {account}"
            );
        }
    }
}

/// Tables the command created or gave the tenant column: CREATE TABLE (also AS, SELECT INTO,
/// PARTITION OF, LIKE, INHERITS, OF type), CREATE SCHEMA ... CREATE TABLE, ALTER TABLE ... ADD
/// COLUMN / ATTACH PARTITION, and RENAME COLUMN ... TO the tenant column.
///
/// Read from the statement's parse tree, so that the common case (a table without the tenant
/// column) costs no catalog query at all.
///
/// # Safety
/// `parsetree` must be the statement's parse tree, non-null.
pub(crate) unsafe fn gained_tenant_column(
    parsetree: *mut pg_sys::Node,
    column: &str,
) -> Vec<pg_sys::Oid> {
    let mut out = Vec::new();
    // SAFETY: the parse tree of the statement that fired the trigger, read-only; every node is
    // checked for its tag before it is cast.
    unsafe {
        let is = |n: *mut pg_sys::Node, tag: pg_sys::NodeTag| !n.is_null() && (*n).type_ == tag;
        let named = |p: *const std::ffi::c_char| {
            !p.is_null() && CStr::from_ptr(p).to_str().is_ok_and(|s| s == column)
        };
        // Temporary tables are never protected.
        let resolve = |rv: *mut pg_sys::RangeVar| -> Option<pg_sys::Oid> {
            if rv.is_null() || (*rv).relpersistence as u8 == pg_sys::RELPERSISTENCE_TEMP {
                return None;
            }
            range_var_oid(rv)
        };
        match (*parsetree).type_ {
            pg_sys::NodeTag::T_CreateStmt => {
                let stmt = parsetree as *mut pg_sys::CreateStmt;
                let may_have = !(*stmt).inhRelations.is_null()
                    || !(*stmt).partbound.is_null()
                    || !(*stmt).ofTypename.is_null()
                    || list_nodes((*stmt).tableElts).into_iter().any(|e| {
                        is(e, pg_sys::NodeTag::T_TableLikeClause)
                            || (is(e, pg_sys::NodeTag::T_ColumnDef)
                                && named((*(e as *mut pg_sys::ColumnDef)).colname))
                    });
                if may_have {
                    out.extend(resolve((*stmt).relation));
                }
            }
            pg_sys::NodeTag::T_CreateTableAsStmt => {
                let stmt = parsetree as *mut pg_sys::CreateTableAsStmt;
                if (*stmt).objtype == pg_sys::ObjectType::OBJECT_TABLE && !(*stmt).into.is_null() {
                    out.extend(resolve((*(*stmt).into).rel));
                }
            }
            pg_sys::NodeTag::T_AlterTableStmt => {
                let stmt = parsetree as *mut pg_sys::AlterTableStmt;
                for cmd in list_nodes((*stmt).cmds) {
                    if !is(cmd, pg_sys::NodeTag::T_AlterTableCmd) {
                        continue;
                    }
                    let cmd = cmd as *mut pg_sys::AlterTableCmd;
                    let def = (*cmd).def;
                    match (*cmd).subtype {
                        pg_sys::AlterTableType::AT_AddColumn
                            if is(def, pg_sys::NodeTag::T_ColumnDef)
                                && named((*(def as *mut pg_sys::ColumnDef)).colname) =>
                        {
                            out.extend(resolve((*stmt).relation));
                        }
                        pg_sys::AlterTableType::AT_AttachPartition
                            if is(def, pg_sys::NodeTag::T_PartitionCmd) =>
                        {
                            out.extend(resolve((*(def as *mut pg_sys::PartitionCmd)).name));
                        }
                        _ => {}
                    }
                }
            }
            pg_sys::NodeTag::T_RenameStmt => {
                let stmt = parsetree as *mut pg_sys::RenameStmt;
                if (*stmt).renameType == pg_sys::ObjectType::OBJECT_COLUMN && named((*stmt).newname)
                {
                    out.extend(resolve((*stmt).relation));
                }
            }
            pg_sys::NodeTag::T_CreateSchemaStmt => {
                // The tables of CREATE SCHEMA ... CREATE TABLE live in a schema that is not on
                // the search_path: ask the server which tables the command created.
                out.extend(created_tables());
            }
            _ => {}
        }
    }
    out.sort_by_key(|o| o.to_u32());
    out.dedup();
    out
}

/// The ordinary tables that inherit, directly or not, from any of `parents`.
pub(crate) fn inheritance_children(parents: &[pg_sys::Oid]) -> Vec<pg_sys::Oid> {
    spi(Spi::connect(|client| {
        client
            .select(
                "WITH RECURSIVE d(oid) AS (
                     SELECT i.inhrelid FROM pg_catalog.pg_inherits i
                      WHERE i.inhparent = ANY ($1)
                     UNION
                     SELECT i.inhrelid FROM pg_catalog.pg_inherits i JOIN d ON i.inhparent = d.oid)
                 SELECT d.oid FROM d JOIN pg_catalog.pg_class c ON c.oid = d.oid
                  WHERE NOT c.relispartition ORDER BY d.oid",
                None,
                &[parents.to_vec().into()],
            )?
            .map(|row| row.get::<pg_sys::Oid>(1).map(|o| o.unwrap_or_default()))
            .collect::<Result<Vec<_>, _>>()
    }))
}

pub(crate) fn created_tables() -> Vec<pg_sys::Oid> {
    spi(Spi::connect(|client| {
        client
            .select(
                "SELECT objid FROM pg_catalog.pg_event_trigger_ddl_commands()
                  WHERE classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND objsubid = 0
                    AND object_type = 'table' AND NOT in_extension
                    AND command_tag IN ('CREATE TABLE', 'CREATE TABLE AS', 'SELECT INTO')",
                None,
                &[],
            )?
            .map(|row| row.get::<pg_sys::Oid>(1).map(|o| o.unwrap_or_default()))
            .collect::<Result<Vec<_>, _>>()
    }))
}

/// # Safety
/// `parsetree` must be the statement's parse tree, non-null.
pub(crate) unsafe fn auto_protect(parsetree: *mut pg_sys::Node, mode: AutoProtect) {
    let column = gucs::tenant_column();
    // Citus's own DDL on a worker makes shards and copies of Citus tables: they are protected
    // through the coordinator's table, never by themselves.
    if crate::citus::internal_backend() {
        return;
    }
    let mut candidates = gained_tenant_column(parsetree, &column);
    candidates.retain(|&oid| !crate::citus::known_shard(oid));
    if candidates.is_empty() {
        return;
    }
    // Inheritance children gain a column their parent gains (ADD COLUMN and RENAME COLUMN
    // recurse); partitions are protected with their parent by protect() itself.
    // SAFETY: a parse tree node from the server.
    let tag = unsafe { (*parsetree).type_ };
    if matches!(
        tag,
        pg_sys::NodeTag::T_AlterTableStmt | pg_sys::NodeTag::T_RenameStmt
    ) {
        candidates.extend(inheritance_children(&candidates));
    }
    if tag == pg_sys::NodeTag::T_AlterTableStmt && mode == AutoProtect::On {
        // A protected table attached as a partition of a protected table takes the parent's options.
        for &oid in &candidates {
            if let Some(account) = protect::api::adopt_parent_options(oid) {
                notice!("tenantguard auto-protect: {account}");
            }
        }
    }
    let excluded = gucs::exclude_schemas();
    // Keep the ordinary and partitioned tables with the tenant column that nobody decided about.
    // One probe per table (usually just one): with `c.oid = $1` the kept generic plan stays an
    // index lookup, where `= ANY($1)` would plan a scan of pg_class.
    let todo: Vec<(pg_sys::Oid, String)> = candidates
        .into_iter()
        .filter_map(|oid| {
            probe_select(
                &CANDIDATES_PLAN,
                "SELECT pg_catalog.format('%I.%I', n.nspname, c.relname)
                   FROM pg_catalog.pg_class c
                   JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                  WHERE c.oid = $1 AND c.relkind IN ('r', 'p') AND c.relpersistence <> 't'
                    AND n.nspname <> 'tenantguard' AND NOT (n.nspname = ANY($2))
                    AND (EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                                  WHERE a.attrelid = c.oid AND a.attname = $3
                                    AND a.attnum > 0 AND NOT a.attisdropped)
                         -- a new partition or child of a protected table, whatever its
                         -- tenant column is called: it takes the parent's options
                         OR EXISTS (SELECT 1 FROM pg_catalog.pg_inherits i
                                      JOIN tenantguard.registry r ON r.relid = i.inhparent
                                     WHERE i.inhrelid = c.oid))
                    AND NOT EXISTS (SELECT 1 FROM tenantguard.registry r WHERE r.relid = c.oid)
                    AND NOT EXISTS (SELECT 1 FROM tenantguard.exemptions x WHERE x.relid = c.oid)
                    AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                                     WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
                                       AND d.objid = c.oid AND d.deptype = 'e')",
                &[
                    PgOid::BuiltIn(PgBuiltInOids::OIDOID),
                    PgOid::BuiltIn(PgBuiltInOids::TEXTARRAYOID),
                    PgOid::BuiltIn(PgBuiltInOids::TEXTOID),
                ],
                &[oid.into(), excluded.clone().into(), column.as_str().into()],
                |rows| {
                    let mut name = None;
                    for row in rows {
                        name = row.get::<String>(1)?;
                    }
                    Ok(name)
                },
            )
            .map(|name| (oid, name))
        })
        .collect();
    for (oid, name) in todo {
        match mode {
            AutoProtect::Warn => Error::UnprotectedTenantTable {
                table: &name,
                column: &column,
                hint: format!(
                    "Call SELECT tenantguard.protect('{}'), or tenantguard.exempt() it with a reason.",
                    name.replace('\'', "''")
                ),
            }
            .warn(),
            AutoProtect::On => {
                let account = protect::api::auto_protect(oid);
                notice!("tenantguard auto-protect: {account}");
            }
            AutoProtect::Off => {}
        }
    }
}
