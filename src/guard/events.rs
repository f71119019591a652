//! The three event-trigger functions: what fires them, and when they stand aside (tenantguard's own
//! DDL, extension scripts, a superuser's restore with row_security = off).

use crate::errors::{spi, Error};
use crate::guard::autoprotect::{auto_protect, follow_column_rename};
use crate::guard::refusals::{
    altered_policy, guard_drops, guard_end_state, refuse_policy_change,
    refuse_tenant_column_change, take_back_truncate_references,
};
use crate::gucs::{self, AutoProtect};
use crate::session::busy;
use pgrx::prelude::*;

/// A restore: pg_dump scripts and pg_restore run with row_security = off, as a superuser (the
/// docs say to restore as one). An application session never runs with row_security = off
/// (its queries on protected tables would fail), and a role that is not a superuser gets no
/// pass from it: it could otherwise switch the guard off for itself with one SET.
pub(crate) fn restoring() -> bool {
    // SAFETY: a plain GUC variable of the server, and a role check for the current user.
    unsafe { !pg_sys::row_security && pg_sys::superuser() }
}

/// The event triggers do nothing for tenantguard's own DDL, a restore, an extension script, and a
/// Citus table rewrite (src/citus/convert.rs). The statements Citus sends from the coordinator to
/// a worker need no pass: they act on shards and on the workers' copies of Citus tables, which a
/// worker never registers, so the guard has nothing to refuse there; auto-protect skips them.
/// (Citus tells its own sessions by their application_name, which any client can set: the guard
/// does not take that as a pass.)
pub(crate) fn stand_aside() -> bool {
    // SAFETY: a plain global of the server, true while CREATE/ALTER EXTENSION runs a script.
    busy()
        || restoring()
        || unsafe { pg_sys::creating_extension }
        || crate::citus::convert::converting()
}

/// The EventTriggerData of an event trigger call, or an error when called otherwise.
pub(crate) unsafe fn event_data(fcinfo: pg_sys::FunctionCallInfo) -> *mut pg_sys::EventTriggerData {
    let ctx = if fcinfo.is_null() {
        std::ptr::null_mut()
    } else {
        (*fcinfo).context
    };
    if ctx.is_null() || (*ctx).type_ != pg_sys::NodeTag::T_EventTriggerData {
        Error::CalledOutsideEventTrigger.raise();
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
    crate::pg::raw::with_row_security(|| unsafe { refuse_tenant_column_change(parsetree) });
    pg_sys::Datum::from(0)
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
    if !parsetree.is_null() && crate::citus::convert::rewriting() {
        // SAFETY: the statement's parse tree, non-null.
        crate::pg::raw::with_row_security(|| unsafe {
            crate::citus::convert::adopt_renamed(parsetree)
        });
    }
    if !stand_aside() && !parsetree.is_null() {
        // SAFETY: the statement's parse tree, non-null.
        crate::pg::raw::with_row_security(|| unsafe { ddl_command_end(parsetree) });
    }
    pg_sys::Datum::from(0)
}

/// The guard's end-state check, then auto-protect.
///
/// # Safety
/// `parsetree` must be the statement's parse tree, non-null.
pub(crate) unsafe fn ddl_command_end(parsetree: *mut pg_sys::Node) {
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
    let guarding = !stand_aside() && gucs::guard_enabled();
    crate::pg::raw::with_row_security(|| {
        if crate::citus::convert::rewriting() {
            crate::citus::convert::remember_dropped();
        }
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
