//! The audit trigger and the updated_at trigger, as native C-ABI trigger functions: each row's
//! catalog work is done once per relation (`meta`), its values become jsonb directly (`encode`),
//! and the audit row goes straight into the table (`write`).

use crate::audit::encode::{name_datum, row_object, same, same_bytes, text_datum};
use crate::audit::meta::{
    audit_meta, build_updated_at_meta, name_ref, register_callback, trigger_args, UPDATED_AT_META,
};
use crate::audit::write::{tenant_of, truncate_tenant, write_row, AuditRow};
use crate::errors::Error;
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::ptr;
use std::rc::Rc;

/// The TriggerData of a trigger call, or a coded error when called otherwise.
///
/// # Safety
/// `fcinfo` must be the call's FunctionCallInfo.
unsafe fn trigger_data(fcinfo: pg_sys::FunctionCallInfo, name: &str) -> *mut pg_sys::TriggerData {
    let ctx = if fcinfo.is_null() {
        ptr::null_mut()
    } else {
        (*fcinfo).context
    };
    if ctx.is_null() || (*ctx).type_ != pg_sys::NodeTag::T_TriggerData {
        Error::CalledOutsideTrigger { function: name }.raise();
    }
    ctx as *mut pg_sys::TriggerData
}

use pg_sys::{
    TRIGGER_EVENT_BEFORE, TRIGGER_EVENT_DELETE, TRIGGER_EVENT_INSERT, TRIGGER_EVENT_OPMASK,
    TRIGGER_EVENT_ROW, TRIGGER_EVENT_TRUNCATE, TRIGGER_EVENT_UPDATE,
};

crate::pg_finfo_v1!(pg_finfo_tenantguard_audit);

crate::pg_finfo_v1!(pg_finfo_tenantguard_set_updated_at);

/// The audit trigger: AFTER INSERT OR UPDATE OR DELETE FOR EACH ROW, and AFTER TRUNCATE FOR EACH
/// STATEMENT. Arguments: 'skip_noop' or 'keep_noop', then 'tenant=<column>', then the excluded
/// column names (src/audit/meta.rs, `parse_audit_args`).
#[no_mangle]
#[pg_guard]
pub extern "C-unwind" fn tenantguard_audit(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    let _internal = crate::session::Internal::enter();
    // SAFETY: everything below reads the TriggerData the server passed for this call.
    unsafe {
        let td = trigger_data(fcinfo, "audit");
        let event = (*td).tg_event;
        let rel = (*td).tg_relation;
        if event & TRIGGER_EVENT_BEFORE != 0 {
            Error::WrongTriggerKind {
                message: "tenantguard.audit() must be an AFTER trigger",
            }
            .raise();
        }
        let op = event & TRIGGER_EVENT_OPMASK;
        if op == TRIGGER_EVENT_TRUNCATE || event & TRIGGER_EVENT_ROW == 0 {
            // A distributed table's TRUNCATE runs on every shard, and on the coordinator's table:
            // the coordinator writes the one row.
            if op == TRIGGER_EVENT_TRUNCATE && !crate::citus::known_shard((*rel).rd_id) {
                let tenant = crate::tenant::context::tenant_value()
                    .map(|t| text_datum(&truncate_tenant(rel, t.into_bytes())));
                write_row(AuditRow {
                    op: "TRUNCATE",
                    table: (*rel).rd_id,
                    namespace: (*(*rel).rd_rel).relnamespace,
                    relname: name_datum((*(*rel).rd_rel).relname.data.as_ptr()),
                    tenant,
                    record_key: None,
                    old_values: None,
                    new_values: None,
                    changed: None,
                });
            }
            return pg_sys::Datum::from(0);
        }
        let meta = audit_meta(rel, (*td).tg_trigger);
        if !meta.writes {
            return pg_sys::Datum::from(0);
        }
        let desc = (*rel).rd_att;
        let row = match op {
            TRIGGER_EVENT_INSERT => {
                let (v, n) = meta.deform((*td).tg_trigtuple, desc);
                AuditRow {
                    op: "INSERT",
                    relname: name_ref(&meta.relname),
                    table: meta.table,
                    namespace: meta.namespace,
                    tenant: tenant_of(&meta, &v, &n),
                    record_key: (!meta.key.is_empty()).then(|| row_object(&meta.key, &v, &n)),
                    old_values: None,
                    new_values: Some(row_object(&meta.values, &v, &n)),
                    changed: None,
                }
            }
            TRIGGER_EVENT_DELETE => {
                let (v, n) = meta.deform((*td).tg_trigtuple, desc);
                AuditRow {
                    op: "DELETE",
                    relname: name_ref(&meta.relname),
                    table: meta.table,
                    namespace: meta.namespace,
                    tenant: tenant_of(&meta, &v, &n),
                    record_key: (!meta.key.is_empty()).then(|| row_object(&meta.key, &v, &n)),
                    old_values: Some(row_object(&meta.values, &v, &n)),
                    new_values: None,
                    changed: None,
                }
            }
            TRIGGER_EVENT_UPDATE => {
                if meta.skip_noop && same_bytes((*td).tg_trigtuple, (*td).tg_newtuple) {
                    return pg_sys::Datum::from(0);
                }
                let (ov, on) = meta.deform((*td).tg_trigtuple, desc);
                let (nv, nn) = meta.deform((*td).tg_newtuple, desc);
                // An excluded column's change counts as a change (the row is written) but is
                // not named: audit_exclude columns never appear in the log.
                let mut changed: Vec<pg_sys::Datum> = Vec::new();
                let mut any_changed = false;
                for (i, len, byval, name, audited) in &meta.all {
                    if !same(*i, *len, *byval, &ov, &on, &nv, &nn) {
                        any_changed = true;
                        if *audited {
                            changed.push(text_datum(name.as_bytes()));
                        }
                    }
                }
                if !any_changed && meta.skip_noop {
                    return pg_sys::Datum::from(0);
                }
                let mut elems = changed;
                let array = pg_sys::construct_array(
                    elems.as_mut_ptr(),
                    elems.len() as i32,
                    pg_sys::TEXTOID,
                    -1,
                    false,
                    pg_sys::TYPALIGN_INT as std::ffi::c_char,
                );
                AuditRow {
                    op: "UPDATE",
                    relname: name_ref(&meta.relname),
                    table: meta.table,
                    namespace: meta.namespace,
                    tenant: tenant_of(&meta, &nv, &nn),
                    record_key: (!meta.key.is_empty()).then(|| row_object(&meta.key, &nv, &nn)),
                    old_values: Some(row_object(&meta.values, &ov, &on)),
                    new_values: Some(row_object(&meta.values, &nv, &nn)),
                    changed: Some(pg_sys::Datum::from(array)),
                }
            }
            _ => return pg_sys::Datum::from(0),
        };
        write_row(row);
        pg_sys::Datum::from(0)
    }
}

/// BEFORE UPDATE FOR EACH ROW: sets the column (argument 1, default updated_at) to the
/// transaction's timestamp, the value now() gives; with 'skip_noop' (argument 2, the default) an
/// update that changes no other column leaves the row alone.
#[no_mangle]
#[pg_guard]
pub extern "C-unwind" fn tenantguard_set_updated_at(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    // SAFETY: everything below reads the TriggerData the server passed for this call.
    unsafe {
        let td = trigger_data(fcinfo, "set_updated_at");
        let event = (*td).tg_event;
        if event & TRIGGER_EVENT_BEFORE == 0
            || event & TRIGGER_EVENT_ROW == 0
            || event & TRIGGER_EVENT_OPMASK != TRIGGER_EVENT_UPDATE
        {
            Error::WrongTriggerKind {
                message:
                    "tenantguard.set_updated_at() must be a BEFORE UPDATE FOR EACH ROW trigger",
            }
            .raise();
        }
        let rel = (*td).tg_relation;
        let trigger = (*td).tg_trigger;
        register_callback();
        let key = ((*rel).rd_id, (*trigger).tgoid);
        let meta = match UPDATED_AT_META.with(|m| m.borrow().get(&key).cloned()) {
            Some(m) => m,
            None => {
                let m = Rc::new(build_updated_at_meta(rel, &trigger_args(trigger)));
                UPDATED_AT_META.with(|x| x.borrow_mut().insert(key, m.clone()));
                m
            }
        };
        let new = (*td).tg_newtuple;
        let desc = (*rel).rd_att;
        let Some((index, with_tz)) = meta.target else {
            return pg_sys::Datum::from(new);
        };
        if meta.skip_noop && same_bytes((*td).tg_trigtuple, new) {
            return pg_sys::Datum::from(new);
        }
        let now = pg_sys::GetCurrentTransactionStartTimestamp();
        let mut value = pg_sys::Datum::from(now);
        if !with_tz {
            value = pg_sys::OidFunctionCall1Coll(meta.to_timestamp, pg_sys::InvalidOid, value);
        }
        let mut attnum = (index + 1) as i32;
        let mut isnull = false;
        let tuple = pg_sys::heap_modify_tuple_by_cols(
            new,
            desc,
            1,
            // Raw pointers: PostgreSQL 17 made these parameters const.
            ptr::addr_of_mut!(attnum),
            ptr::addr_of_mut!(value),
            ptr::addr_of_mut!(isnull),
        );
        pg_sys::Datum::from(tuple)
    }
}
