//! Event triggers: every table that gains the tenant column is protected in the same transaction
//! (auto-protect), protection cannot be switched off by accident (the guard), and dropped tables
//! leave the registry (cleanup).
//!
//! Both triggers stand aside while tenantguard itself changes a table, while an extension script
//! runs, and in sessions with `row_security = off`, which is how pg_dump scripts and pg_restore run:
//! a restore brings back policies, RLS flags and the registry exactly as dumped.

use crate::catalog::{kept_select, RelInfo};
use crate::errors::{raise, spi};
use crate::gucs::{self, AutoProtect};
use crate::protect;
use crate::session::{allow, busy, is_allowed, was_allowed_earlier, Busy};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::spi::OwnedPreparedStatement;
use pgrx::{PgBuiltInOids, PgOid};
use std::cell::OnceCell;
use std::ffi::CStr;

thread_local! {
    static TOUCHED_PLAN: OnceCell<OwnedPreparedStatement> = const { OnceCell::new() };
    static CANDIDATES_PLAN: OnceCell<OwnedPreparedStatement> = const { OnceCell::new() };
}

/// The registry row of a protected table changes only inside protect()/unprotect(), or in the
/// transaction that called `_allow_change` for it: a dry-run or unprotect_sql() script run
/// statement by statement in autocommit fails at each change the guard refuses, and must not then
/// rewrite or drop the registry row at its end (the table would be left half unprotected).
pub fn require_allowance(oid: pg_sys::Oid, what: &str) {
    if busy() || is_allowed(oid) {
        return;
    }
    let rel = RelInfo::load(oid);
    ErrorReport::new(
        PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
        format!(
            "cannot {what} the registry entry of table \"{}\": the table is protected by tenantguard",
            rel.display()
        ),
        "tenantguard",
    )
    .set_hint(refusal_hint(
        oid,
        format!(
            "Call tenantguard.protect() or tenantguard.unprotect('{}'), or run the script from \
             dry_run / unprotect_sql() whole, in one transaction.",
            rel.qualified().replace('\'', "''")
        ),
    ))
    .report(PgLogLevel::ERROR);
}

/// The hint of a refused drop or retype: unprotect() is the way out.
fn unprotect_first_hint(rel: &RelInfo) -> String {
    format!(
        "To remove the protection first, call SELECT tenantguard.unprotect('{}').",
        rel.qualified().replace('\'', "''")
    )
}

/// The hint for a refused change: the usual one, or, when an earlier transaction of this session
/// ran `_allow_change` for the table (a dry-run or unprotect_sql() script run statement by statement
/// in autocommit), how to run that script.
fn refusal_hint(oid: pg_sys::Oid, usual: String) -> String {
    if was_allowed_earlier(oid) {
        "tenantguard._allow_change() ran in an earlier transaction: run the whole script from \
         protect(..., dry_run => true) or unprotect_sql() in one transaction (BEGIN; ... COMMIT; \
         or psql --single-transaction -f)."
            .to_string()
    } else {
        usual
    }
}

/// Lets the current transaction change a protected table's protection outside protect() and
/// unprotect() (the first statement of their dry-run scripts). Only the table's owner may.
#[pg_extern(volatile, parallel_unsafe)]
fn _allow_change(tbl: pg_sys::Oid) {
    let _internal = crate::session::Internal::enter();
    let rel = RelInfo::load(tbl);
    if !rel.is_owner {
        raise(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!(
                "must be owner of table \"{}\" to change its protection",
                rel.display()
            ),
            format!(
                "Run it as the table's owner \"{}\", a member of that role, or a superuser.",
                rel.owner
            ),
        );
    }
    allow(tbl);
}

/// A restore: pg_dump scripts and pg_restore run with row_security = off, as a superuser (the
/// README says to restore as one). An application session never runs with row_security = off
/// (its queries on protected tables would fail), and a role that is not a superuser gets no
/// pass from it: it could otherwise switch the guard off for itself with one SET.
fn restoring() -> bool {
    // SAFETY: a plain GUC variable of the server, and a role check for the current user.
    unsafe { !pg_sys::row_security && pg_sys::superuser() }
}

fn stand_aside() -> bool {
    // SAFETY: a plain global of the server, true while CREATE/ALTER EXTENSION runs a script.
    busy() || restoring() || unsafe { pg_sys::creating_extension }
}

/// The EventTriggerData of an event trigger call, or an error when called otherwise.
unsafe fn event_data(fcinfo: pg_sys::FunctionCallInfo) -> *mut pg_sys::EventTriggerData {
    let ctx = if fcinfo.is_null() {
        std::ptr::null_mut()
    } else {
        (*fcinfo).context
    };
    if ctx.is_null() || (*ctx).type_ != pg_sys::NodeTag::T_EventTriggerData {
        raise(
            PgSqlErrorCode::ERRCODE_E_R_I_E_EVENT_TRIGGER_PROTOCOL_VIOLATED,
            "tenantguard event trigger function called outside an event trigger",
            "It is attached by CREATE EXTENSION tenantguard; do not call it directly.",
        );
    }
    ctx as *mut pg_sys::EventTriggerData
}

crate::pg_finfo_v1!(pg_finfo_tenantguard_ddl_command_end);

crate::pg_finfo_v1!(pg_finfo_tenantguard_sql_drop);

crate::pg_finfo_v1!(pg_finfo_tenantguard_ddl_command_start);

/// ddl_command_start (ALTER TABLE only): retyping or dropping the tenant column of a protected
/// table is refused before PostgreSQL's own dependency errors, whose hints (DROP ... CASCADE)
/// point the wrong way, with the one sanctioned way out.
#[no_mangle]
#[pg_guard]
pub extern "C-unwind" fn tenantguard_ddl_command_start(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    let _internal = crate::session::Internal::enter();
    // SAFETY: checked to be an event trigger call.
    let parsetree = unsafe { (*event_data(fcinfo)).parsetree };
    if stand_aside() || !gucs::guard_enabled() || parsetree.is_null() {
        return pg_sys::Datum::from(0);
    }
    // SAFETY: the statement's parse tree.
    crate::raw::with_row_security(|| unsafe { refuse_tenant_column_change(parsetree) });
    pg_sys::Datum::from(0)
}

/// ALTER TABLE ... ALTER COLUMN ... TYPE or DROP COLUMN of a protected table's tenant column.
///
/// # Safety
/// `parsetree` must be the statement's parse tree.
unsafe fn refuse_tenant_column_change(parsetree: *mut pg_sys::Node) {
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
    let Some(tenant_column) = protect::registered_tenant_column(relid) else {
        return;
    };
    if let Some((_, retype)) = columns.iter().find(|(c, _)| *c == tenant_column) {
        let rel = RelInfo::load(relid);
        ErrorReport::new(
            if *retype {
                PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE
            } else {
                PgSqlErrorCode::ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST
            },
            format!(
                "cannot {} tenant column \"{tenant_column}\" of table \"{}\": the table is protected by tenantguard",
                if *retype { "change the type of" } else { "drop" },
                rel.display()
            ),
            "tenantguard",
        )
        .set_hint(unprotect_first_hint(&rel))
        .report(PgLogLevel::ERROR);
    }
}

/// ddl_command_end: the guard's end-state check, then auto-protect.
#[no_mangle]
#[pg_guard]
pub extern "C-unwind" fn tenantguard_ddl_command_end(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    let _internal = crate::session::Internal::enter();
    // SAFETY: checked to be an event trigger call.
    let parsetree = unsafe { (*event_data(fcinfo)).parsetree };
    if !stand_aside() && !parsetree.is_null() {
        // SAFETY: the statement's parse tree, non-null.
        crate::raw::with_row_security(|| unsafe { ddl_command_end(parsetree) });
    }
    pg_sys::Datum::from(0)
}

/// The guard's end-state check, then auto-protect.
///
/// # Safety
/// `parsetree` must be the statement's parse tree, non-null.
unsafe fn ddl_command_end(parsetree: *mut pg_sys::Node) {
    {
        // Only these statements can switch an existing table's protection off; everything else
        // (CREATE TABLE above all) skips the guard's catalog query.
        let tag = (*parsetree).type_;
        if tag == pg_sys::NodeTag::T_RenameStmt {
            follow_column_rename(parsetree);
        }
        if gucs::guard_enabled() {
            if let Some((relid, policy)) = altered_policy(parsetree) {
                refuse_policy_change(relid, &policy);
            }
            if matches!(
                tag,
                pg_sys::NodeTag::T_AlterTableStmt | pg_sys::NodeTag::T_RenameStmt
            ) {
                guard_end_state();
            }
        }
        if tag == pg_sys::NodeTag::T_GrantStmt {
            take_back_truncate_references(parsetree);
        }
        let mode = gucs::auto_protect();
        if mode != AutoProtect::Off {
            auto_protect(parsetree, mode);
        }
    }
}

/// sql_drop: forget dropped tables; refuse dropping what protects a table that stays.
#[no_mangle]
#[pg_guard]
pub extern "C-unwind" fn tenantguard_sql_drop(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    let _internal = crate::session::Internal::enter();
    // SAFETY: only checks that this is an event trigger call.
    unsafe { event_data(fcinfo) };
    let guarding = !busy() && !restoring() && gucs::guard_enabled();
    crate::raw::with_row_security(|| {
        if guarding {
            guard_drops();
        }
        // Always, even during a restore or with the guard off: a dropped table's row must go.
        spi(Spi::run(
            "SELECT tenantguard._forget(ARRAY(
                 SELECT objid FROM pg_catalog.pg_event_trigger_dropped_objects()
                  WHERE classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND objsubid = 0))",
        ));
    });
    pg_sys::Datum::from(0)
}

/// The nodes of a parse-tree List (empty for NIL).
///
/// # Safety
/// `l` must be NIL or a valid List of pointers.
unsafe fn list_nodes(l: *mut pg_sys::List) -> Vec<*mut pg_sys::Node> {
    if l.is_null() {
        return Vec::new();
    }
    (0..(*l).length as usize)
        .map(|i| (*(*l).elements.add(i)).ptr_value as *mut pg_sys::Node)
        .collect()
}

/// The OID a RangeVar names now, or `None` when it names nothing.
///
/// # Safety
/// `rv` must be null or a valid RangeVar.
unsafe fn range_var_oid(rv: *mut pg_sys::RangeVar) -> Option<pg_sys::Oid> {
    if rv.is_null() {
        return None;
    }
    let oid = pg_sys::RangeVarGetRelidExtended(
        rv,
        pg_sys::NoLock as pg_sys::LOCKMODE,
        pg_sys::RVROption::RVR_MISSING_OK,
        None,
        std::ptr::null_mut(),
    );
    (oid != pg_sys::InvalidOid).then_some(oid)
}

/// The tables a `GRANT` that can include TRUNCATE or REFERENCES names (`ALL PRIVILEGES`, or the
/// privileges listed), or `None` for any other statement. `ALL TABLES IN SCHEMA` gives schemas.
///
/// # Safety
/// `parsetree` must be the statement's parse tree, non-null.
unsafe fn truncate_references_grant(
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
                    let name = (*(obj as *mut pg_sys::String)).sval;
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
unsafe fn take_back_truncate_references(parsetree: *mut pg_sys::Node) {
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
        let grantees = protect::truncate_or_references_grantees(&rel);
        if grantees.is_empty() {
            continue;
        }
        {
            let _busy = Busy::enter();
            spi(Spi::run(&protect::revoke_truncate_references_sql(
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
unsafe fn altered_policy(parsetree: *mut pg_sys::Node) -> Option<(pg_sys::Oid, String)> {
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
fn refuse_policy_change(relid: pg_sys::Oid, policy: &str) {
    if is_allowed(relid) || !protect::is_recorded_policy(relid, policy) {
        return;
    }
    let rel = RelInfo::load(relid);
    ErrorReport::new(
        PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
        format!(
            "cannot alter policy \"{policy}\" of table \"{}\": the table is protected by tenantguard",
            rel.display()
        ),
        "tenantguard",
    )
    .set_hint(refusal_hint(
        relid,
        format!(
            "To change the policies, call tenantguard.protect() with other arguments; to remove \
             the protection, call SELECT tenantguard.unprotect('{}').",
            rel.qualified().replace('\'', "''")
        ),
    ))
    .report(PgLogLevel::ERROR);
}

/// `ALTER TABLE ... RENAME COLUMN`: audit_exclude and time_column entries follow their column.
///
/// # Safety
/// `parsetree` must be the statement's parse tree, non-null.
unsafe fn follow_column_rename(parsetree: *mut pg_sys::Node) {
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
        if let Some(account) = protect::follow_column_rename(oid, &old, &new) {
            notice!(
                "tenantguard: the options follow the rename of column \"{old}\" to \"{new}\": {account}"
            );
        }
    }
}

/// Every protected table the command touched must still be intact.
fn guard_end_state() {
    let touched: Vec<pg_sys::Oid> = kept_select(
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
        if let Some(problem) = protect::drift(&rel).into_iter().next() {
            ErrorReport::new(
                PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!(
                    "table \"{}\" is protected by tenantguard: {problem}",
                    rel.display()
                ),
                "tenantguard",
            )
            .set_detail(
                "tenantguard refuses DDL that switches a protected table's row level security \
                 off or changes its policies or triggers.",
            )
            .set_hint(refusal_hint(
                oid,
                format!(
                    "To remove the protection, call SELECT tenantguard.unprotect('{}'); \
                     to change it, call tenantguard.protect() with other arguments.",
                    rel.qualified().replace('\'', "''")
                ),
            ))
            .report(PgLogLevel::ERROR);
        }
    }
}

/// A dropped policy tenantguard made, or the tenant column, of a protected table that stays.
fn guard_drops() {
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
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST,
            format!(
                "cannot drop {what} of table \"{}\": the table is protected by tenantguard",
                rel.display()
            ),
            "tenantguard",
        )
        .set_hint(refusal_hint(oid, unprotect_first_hint(&rel)))
        .report(PgLogLevel::ERROR);
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
unsafe fn gained_tenant_column(parsetree: *mut pg_sys::Node, column: &str) -> Vec<pg_sys::Oid> {
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
fn inheritance_children(parents: &[pg_sys::Oid]) -> Vec<pg_sys::Oid> {
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

fn created_tables() -> Vec<pg_sys::Oid> {
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
unsafe fn auto_protect(parsetree: *mut pg_sys::Node, mode: AutoProtect) {
    let column = gucs::tenant_column();
    let mut candidates = gained_tenant_column(parsetree, &column);
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
            if let Some(account) = protect::adopt_parent_options(oid) {
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
            kept_select(
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
            AutoProtect::Warn => ErrorReport::new(
                PgSqlErrorCode::ERRCODE_WARNING,
                format!("table \"{name}\" has a tenant column \"{column}\" but is not protected"),
                "tenantguard",
            )
            .set_hint(format!(
                "Call SELECT tenantguard.protect('{}'), or tenantguard.exempt() it with a reason.",
                name.replace('\'', "''")
            ))
            .report(PgLogLevel::WARNING),
            AutoProtect::On => {
                let account = protect::auto_protect(oid);
                notice!("tenantguard auto-protect: {account}");
            }
            AutoProtect::Off => {}
        }
    }
}

extension_sql!(
    r#"
-- Forget dropped tables. SECURITY DEFINER because the registry only lets a table's owner delete
-- its row, and a dropped table has no owner any more. It only removes rows of tables that no longer
-- exist, so any role may call it (the sql_drop trigger runs as whoever drops the table).
CREATE FUNCTION tenantguard._forget(oids oid[]) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
  DELETE FROM tenantguard.registry
   WHERE relid::oid = ANY (oids)
     AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid = relid::oid);
  DELETE FROM tenantguard.exemptions
   WHERE relid::oid = ANY (oids)
     AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid = relid::oid);
$$;

CREATE FUNCTION tenantguard._ddl_command_end() RETURNS event_trigger
LANGUAGE c AS 'MODULE_PATHNAME', 'tenantguard_ddl_command_end';
CREATE FUNCTION tenantguard._sql_drop() RETURNS event_trigger
LANGUAGE c AS 'MODULE_PATHNAME', 'tenantguard_sql_drop';
CREATE EVENT TRIGGER tenantguard_ddl_command_end ON ddl_command_end
  EXECUTE FUNCTION tenantguard._ddl_command_end();
CREATE EVENT TRIGGER tenantguard_sql_drop ON sql_drop
  EXECUTE FUNCTION tenantguard._sql_drop();
CREATE FUNCTION tenantguard._ddl_command_start() RETURNS event_trigger
LANGUAGE c AS 'MODULE_PATHNAME', 'tenantguard_ddl_command_start';
CREATE EVENT TRIGGER tenantguard_ddl_command_start ON ddl_command_start
  WHEN TAG IN ('ALTER TABLE')
  EXECUTE FUNCTION tenantguard._ddl_command_start();
"#,
    name = "event_triggers",
    finalize,
);
