//! The guard: DDL that would switch a protected table's protection off is refused, with the one
//! sanctioned way out; and a GRANT of TRUNCATE or REFERENCES on a protected table is taken back.

use crate::catalog::{probe_select, RelInfo};
use crate::errors::{refusal_hint, spi, unprotect_hint, Error};
use crate::pg::nodes::{list_nodes, range_var_oid};
use crate::protect;
use crate::session::{allow, is_allowed, Busy};
use pgrx::prelude::*;
use pgrx::spi::OwnedPreparedStatement;
use std::cell::OnceCell;
use std::ffi::CStr;

thread_local! {
    static TOUCHED_PLAN: OnceCell<OwnedPreparedStatement> = const { OnceCell::new() };
}

/// Lets the current transaction change a protected table's protection outside protect() and
/// unprotect() (the first statement of their dry-run scripts). Only the table's owner may.
#[pg_extern(volatile, parallel_unsafe)]
pub(crate) fn _allow_change(tbl: pg_sys::Oid) {
    let _internal = crate::session::Internal::enter();
    RelInfo::load(tbl).check_owner("to change its protection");
    allow(tbl);
}

/// ALTER TABLE ... ALTER COLUMN ... TYPE or DROP COLUMN of a protected table's tenant column.
///
/// # Safety
/// `parsetree` must be the statement's parse tree.
pub(crate) unsafe fn refuse_tenant_column_change(parsetree: *mut pg_sys::Node) {
    // Every node's tag is checked before the cast.
    let (relation, columns) = {
        if (*parsetree).type_ != pg_sys::NodeTag::T_AlterTableStmt {
            return;
        }
        let stmt = parsetree as *mut pg_sys::AlterTableStmt;
        let mut columns = Vec::new();
        for cmd in list_nodes((*stmt).cmds) {
            if cmd.is_null() || (*cmd).type_ != pg_sys::NodeTag::T_AlterTableCmd {
                continue;
            }
            let cmd = cmd as *mut pg_sys::AlterTableCmd;
            let retype = match (*cmd).subtype {
                pg_sys::AlterTableType::AT_AlterColumnType => true,
                pg_sys::AlterTableType::AT_DropColumn => false,
                _ => continue,
            };
            if !(*cmd).name.is_null() {
                columns.push((
                    CStr::from_ptr((*cmd).name).to_string_lossy().into_owned(),
                    retype,
                ));
            }
        }
        if columns.is_empty() {
            return;
        }
        ((*stmt).relation, columns)
    };
    let Some(relid) = range_var_oid(relation) else {
        return;
    };
    if is_allowed(relid) {
        return;
    }
    let Some(tenant_column) = protect::registry::registered_tenant_column(relid) else {
        return;
    };
    if let Some((_, retype)) = columns.iter().find(|(c, _)| *c == tenant_column) {
        let rel = RelInfo::load(relid);
        Error::TenantColumnChange {
            table: &rel.display(),
            column: &tenant_column,
            retype: *retype,
            hint: unprotect_hint(&rel.qualified()),
        }
        .raise();
    }
}

/// The tables a `GRANT` that can include TRUNCATE or REFERENCES names (`ALL PRIVILEGES`, or the
/// privileges listed), or `None` for any other statement. `ALL TABLES IN SCHEMA` gives schemas.
///
/// # Safety
/// `parsetree` must be the statement's parse tree, non-null.
pub(crate) unsafe fn truncate_references_grant(
    parsetree: *mut pg_sys::Node,
) -> Option<(Vec<pg_sys::Oid>, Vec<String>)> {
    // SAFETY: parse tree nodes from the server, each checked for its tag before the cast.
    unsafe {
        if (*parsetree).type_ != pg_sys::NodeTag::T_GrantStmt {
            return None;
        }
        let g = parsetree as *mut pg_sys::GrantStmt;
        if !(*g).is_grant || (*g).objtype != pg_sys::ObjectType::OBJECT_TABLE {
            return None;
        }
        let privileges = list_nodes((*g).privileges);
        let relevant = privileges.is_empty()
            || privileges.iter().any(|p| {
                !p.is_null() && (**p).type_ == pg_sys::NodeTag::T_AccessPriv && {
                    let name = (*(*p as *mut pg_sys::AccessPriv)).priv_name;
                    !name.is_null()
                        && matches!(CStr::from_ptr(name).to_str(), Ok("truncate" | "references"))
                }
            });
        if !relevant {
            return None;
        }
        let mut tables = Vec::new();
        let mut schemas = Vec::new();
        for obj in list_nodes((*g).objects) {
            if obj.is_null() {
                continue;
            }
            match (*obj).type_ {
                pg_sys::NodeTag::T_RangeVar => {
                    tables.extend(range_var_oid(obj as *mut pg_sys::RangeVar));
                }
                pg_sys::NodeTag::T_String => {
                    let name = crate::pg::nodes::string_node_text(obj);
                    if !name.is_null() {
                        schemas.push(CStr::from_ptr(name).to_string_lossy().into_owned());
                    }
                }
                _ => {}
            }
        }
        Some((tables, schemas))
    }
}

/// After `GRANT ALL` (or TRUNCATE / REFERENCES) on protected tables, takes those two back from
/// everyone but the owner: row level security does not cover TRUNCATE, and REFERENCES lets a role
/// probe other tenants' keys with foreign keys. A NOTICE says so; the rest of the GRANT stands.
///
/// # Safety
/// `parsetree` must be the statement's parse tree, non-null.
pub(crate) unsafe fn take_back_truncate_references(parsetree: *mut pg_sys::Node) {
    let Some((tables, schemas)) = truncate_references_grant(parsetree) else {
        return;
    };
    let protected: Vec<pg_sys::Oid> = spi(Spi::connect(|client| {
        client
            .select(
                "SELECT r.relid::oid FROM tenantguard.registry r
                   JOIN pg_catalog.pg_class c ON c.oid = r.relid
                   JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                  WHERE r.relid::oid = ANY($1) OR n.nspname = ANY($2)
                  ORDER BY 1",
                None,
                &[tables.into(), schemas.into()],
            )?
            .map(|row| row.get::<pg_sys::Oid>(1).map(|o| o.unwrap_or_default()))
            .collect::<Result<Vec<_>, _>>()
    }));
    for oid in protected {
        let rel = RelInfo::load(oid);
        let grantees = protect::planner::truncate_or_references_grantees(&rel);
        if grantees.is_empty() {
            continue;
        }
        {
            let _busy = Busy::enter();
            spi(Spi::run(&protect::planner::revoke_truncate_references_sql(
                &rel, &grantees,
            )));
        }
        notice!(
            "tenantguard: revoked TRUNCATE and REFERENCES on {} from {}: row level security does not cover them",
            rel.display(),
            grantees.join(", ")
        );
    }
}

/// The table and policy of an `ALTER POLICY` or `ALTER POLICY ... RENAME TO`.
///
/// # Safety
/// `parsetree` must be the statement's parse tree, non-null.
pub(crate) unsafe fn altered_policy(parsetree: *mut pg_sys::Node) -> Option<(pg_sys::Oid, String)> {
    // SAFETY: parse tree nodes from the server, checked for their tag before the cast.
    unsafe {
        let (rv, name) = match (*parsetree).type_ {
            pg_sys::NodeTag::T_AlterPolicyStmt => {
                let stmt = parsetree as *mut pg_sys::AlterPolicyStmt;
                ((*stmt).table, (*stmt).policy_name)
            }
            pg_sys::NodeTag::T_RenameStmt => {
                let stmt = parsetree as *mut pg_sys::RenameStmt;
                if (*stmt).renameType != pg_sys::ObjectType::OBJECT_POLICY {
                    return None;
                }
                ((*stmt).relation, (*stmt).subname)
            }
            _ => return None,
        };
        if name.is_null() {
            return None;
        }
        range_var_oid(rv).map(|relid| (relid, CStr::from_ptr(name).to_string_lossy().into_owned()))
    }
}

/// ALTER POLICY on a policy tenantguard made, on a protected table: refused, whatever it changes.
pub(crate) fn refuse_policy_change(relid: pg_sys::Oid, policy: &str) {
    if is_allowed(relid) || !protect::registry::is_recorded_policy(relid, policy) {
        return;
    }
    let rel = RelInfo::load(relid);
    Error::ProtectedPolicy {
        table: &rel.display(),
        policy,
        hint: refusal_hint(
            relid,
            format!(
                "To change the policies, call tenantguard.protect() with other arguments; to \
                 remove the protection, call SELECT tenantguard.unprotect('{}').",
                rel.qualified().replace('\'', "''")
            ),
        ),
    }
    .raise();
}

/// Every protected table the command touched must still be intact.
pub(crate) fn guard_end_state() {
    // A probe: a kept plan made while the registry was empty must not scan it whole later.
    let touched: Vec<pg_sys::Oid> = probe_select(
        &TOUCHED_PLAN,
        "SELECT DISTINCT r.relid::oid
           FROM pg_catalog.pg_event_trigger_ddl_commands() c
           LEFT JOIN pg_catalog.pg_policy p
                  ON c.classid = 'pg_catalog.pg_policy'::pg_catalog.regclass AND p.oid = c.objid
           LEFT JOIN pg_catalog.pg_trigger t
                  ON c.classid = 'pg_catalog.pg_trigger'::pg_catalog.regclass AND t.oid = c.objid
           JOIN tenantguard.registry r
             ON r.relid = CASE WHEN c.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
                               THEN c.objid ELSE COALESCE(p.polrelid, t.tgrelid) END",
        &[],
        &[],
        |rows| {
            rows.map(|row| row.get::<pg_sys::Oid>(1).map(|o| o.unwrap_or_default()))
                .collect()
        },
    );
    for oid in touched {
        if is_allowed(oid) {
            continue;
        }
        let rel = RelInfo::load(oid);
        if let Some(problem) = protect::registry::drift(&rel).into_iter().next() {
            Error::Protected {
                table: &rel.display(),
                problem: &problem,
                hint: refusal_hint(
                    oid,
                    format!(
                        "To remove the protection, call SELECT tenantguard.unprotect('{}'); \
                         to change it, call tenantguard.protect() with other arguments.",
                        rel.qualified().replace('\'', "''")
                    ),
                ),
            }
            .raise();
        }
    }
}

/// A dropped policy tenantguard made, or the tenant column, of a protected table that stays.
pub(crate) fn guard_drops() {
    let hits: Vec<(String, String, pg_sys::Oid)> = spi(Spi::connect(|client| {
        client
            .select(
                "SELECT d.object_type, d.address_names[3], r.relid::oid
                   FROM pg_catalog.pg_event_trigger_dropped_objects() d
                   JOIN tenantguard.registry r
                     ON r.relid = pg_catalog.to_regclass(
                                    pg_catalog.format('%I.%I', d.address_names[1], d.address_names[2]))
                  WHERE (d.object_type = 'policy'
                         AND r.policies @> pg_catalog.jsonb_build_array(
                                             pg_catalog.jsonb_build_object('name', d.address_names[3])))
                     OR (d.object_type = 'trigger' AND d.address_names[3] = ANY (r.triggers))
                     OR (d.object_type = 'table column' AND r.tenant_column::text = d.address_names[3])",
                None,
                &[],
            )?
            .map(|row| {
                Ok((
                    row.get::<String>(1)?.unwrap_or_default(),
                    row.get::<String>(2)?.unwrap_or_default(),
                    row.get::<pg_sys::Oid>(3)?.unwrap_or_default(),
                ))
            })
            .collect::<Result<Vec<_>, pgrx::spi::Error>>()
    }));
    for (kind, name, oid) in hits {
        if is_allowed(oid) {
            continue;
        }
        let rel = RelInfo::load(oid);
        let what = if kind == "policy" || kind == "trigger" {
            format!("{kind} \"{name}\"")
        } else {
            format!("tenant column \"{name}\"")
        };
        Error::ProtectedDrop {
            table: &rel.display(),
            what: &what,
            hint: refusal_hint(oid, unprotect_hint(&rel.qualified())),
        }
        .raise();
    }
}
