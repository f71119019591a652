//! Citus's table rewrites: `undistribute_table()`, `alter_distributed_table()` and the other
//! conversions make a new table, copy the rows, drop the old table and give the new one its name,
//! then re-create its indexes, policies and triggers. For tenantguard that is the same table: its
//! registry entry, and its audit rows on this node, move to the new table, and nothing in between
//! is auto-protected or refused (the conversion re-creates exactly what the table had).
//!
//! On a worker the same rewrite arrives from the coordinator as Citus's own DDL: the old copy of
//! the table is dropped and a new one takes its name. The audit rows the worker wrote for the
//! table's shards move to the new copy.

use pgrx::prelude::*;
use std::cell::RefCell;
use std::ffi::CStr;

/// A table a rewrite dropped: schema, name, oid, and its registry row as JSON if registered.
type Dropped = (String, String, pg_sys::Oid, Option<String>);

thread_local! {
    /// (local transaction id, [(schema, name, old oid, registry row as JSON if registered)]) of
    /// the tables a conversion, or Citus's own DDL on a worker, dropped in this transaction.
    static DROPPED: RefCell<(u32, Vec<Dropped>)> =
        const { RefCell::new((0, Vec::new())) };
}

/// Is Citus converting a table right now (inside one of its table conversion functions)?
pub(crate) fn converting() -> bool {
    super::with(|c| {
        // SAFETY: Citus's bool global, read.
        !c.converting.is_null() && unsafe { *c.converting }
    })
    .unwrap_or(false)
}

/// Does this statement rewrite a table the Citus way: a conversion on the coordinator, or Citus's
/// own DDL on a worker?
pub(crate) fn rewriting() -> bool {
    converting() || super::internal_backend()
}

/// sql_drop of a rewrite: keep the dropped tables' names and registry rows.
pub(crate) fn remember_dropped() {
    // SAFETY: the backend's own PGPROC.
    let xid = unsafe { crate::pg::raw::my_local_xid() };
    let rows: Vec<Dropped> = Spi::connect(|client| {
        client
            .select(
                "SELECT d.schema_name, d.object_name, d.objid, pg_catalog.row_to_json(r)::text
                   FROM pg_catalog.pg_event_trigger_dropped_objects() d
                   LEFT JOIN tenantguard.registry r ON r.relid::oid = d.objid
                  WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
                    AND d.objsubid = 0 AND d.object_type = 'table'",
                None,
                &[],
            )
            .map(|rows| {
                rows.filter_map(|row| {
                    Some((
                        row.get::<String>(1).ok()??,
                        row.get::<String>(2).ok()??,
                        row.get::<pg_sys::Oid>(3).ok()??,
                        row.get::<String>(4).ok()?,
                    ))
                })
                .collect()
            })
    })
    .unwrap_or_default();
    if rows.is_empty() {
        return;
    }
    DROPPED.with(|d| {
        let mut d = d.borrow_mut();
        if d.0 != xid {
            *d = (xid, Vec::new());
        }
        d.1.extend(rows);
    });
}

/// ddl_command_end of a rewrite's `ALTER TABLE new RENAME TO old` (or, on a worker, of a
/// `CREATE TABLE old`): the new table takes the dropped table's registry entry and audit rows.
///
/// # Safety
/// `parsetree` is the statement's parse tree.
pub(crate) unsafe fn adopt_renamed(parsetree: *mut pg_sys::Node) {
    let renamed = match (*parsetree).type_ {
        pg_sys::NodeTag::T_RenameStmt => {
            let stmt = parsetree as *mut pg_sys::RenameStmt;
            if (*stmt).renameType != pg_sys::ObjectType::OBJECT_TABLE
                || (*stmt).relation.is_null()
                || (*stmt).newname.is_null()
            {
                return;
            }
            pg_sys::makeRangeVar((*(*stmt).relation).schemaname, (*stmt).newname, -1)
        }
        pg_sys::NodeTag::T_CreateStmt => (*(parsetree as *mut pg_sys::CreateStmt)).relation,
        _ => return,
    };
    if renamed.is_null() || (*renamed).relname.is_null() {
        return;
    }
    let new_name = CStr::from_ptr((*renamed).relname)
        .to_string_lossy()
        .into_owned();
    let Some(new_oid) = crate::pg::nodes::range_var_oid(renamed) else {
        return;
    };
    let schema = {
        let nsp = pg_sys::get_namespace_name(pg_sys::get_rel_namespace(new_oid));
        if nsp.is_null() {
            return;
        }
        CStr::from_ptr(nsp).to_string_lossy().into_owned()
    };
    // SAFETY: the backend's own PGPROC.
    let xid = crate::pg::raw::my_local_xid();
    let found = DROPPED.with(|d| {
        let mut d = d.borrow_mut();
        if d.0 != xid {
            return None;
        }
        let at =
            d.1.iter()
                .position(|(s, n, _, _)| *s == schema && *n == new_name)?;
        Some(d.1.remove(at))
    });
    let Some((_, _, old_oid, row)) = found else {
        return;
    };
    let _busy = crate::session::Busy::enter();
    if let Some(row) = row {
        crate::errors::spi(Spi::run_with_args(
            "INSERT INTO tenantguard.registry
         SELECT $2::pg_catalog.oid::pg_catalog.regclass, r.tenant_column, r.options, r.policies,
                r.triggers, r.rls_was_enabled, r.rls_was_forced, r.protected_at, r.protected_by
           FROM pg_catalog.json_populate_record(NULL::tenantguard.registry, $1::pg_catalog.json) r",
            &[row.into(), new_oid.into()],
        ));
    }
    crate::audit::write::as_audit_owner(|| {
        crate::errors::spi(Spi::run_with_args(
            "UPDATE tenantguard._audit_log SET table_oid = $2::pg_catalog.oid::pg_catalog.regclass
              WHERE table_oid = $1::pg_catalog.oid::pg_catalog.regclass",
            &[old_oid.into(), new_oid.into()],
        ));
    });
}
