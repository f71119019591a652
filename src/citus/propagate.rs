//! The tenant context on every node that runs a shard query.
//!
//! Citus runs each shard query on a worker in a session of its own, as the same role, but it
//! passes on none of the session's settings: a worker sees no tenant, and tenantguard's policies
//! there match no row (they fail closed). Citus does pass on `SET LOCAL` commands, at the start of
//! each remote transaction, when they run inside a transaction block with
//! `citus.propagate_set_commands = 'local'`.
//!
//! So before a statement that Citus executes across nodes (a plan with Citus's custom scan, or a
//! COPY), tenantguard hands Citus one `SET LOCAL` command per context setting, with the value this
//! session has now (however it was set: `set_tenant()`, `SET`, `SET LOCAL`, `set_config()`),
//! through the same function Citus's own SET LOCAL propagation calls, and asks for a coordinated
//! transaction so that the workers' sessions begin with it. The settings: the tenant and role
//! settings (tenantguard's and every protected table's), the application-user setting, and
//! `tenantguard.client_application_name` (the client's application_name, for the audit rows a
//! worker writes). When nothing changed since the last hand-over in this transaction, nothing is
//! sent.

use crate::gucs;
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::spi::quote_literal;
use std::cell::RefCell;
use std::ffi::{CStr, CString};

/// The setting that carries the client's application_name to the workers' audit rows.
pub const CLIENT_APPLICATION_NAME: &str = "tenantguard.client_application_name";

thread_local! {
    /// The setting names of protected tables (None inside: not installed), until invalidated.
    static REGISTRY_NAMES: RefCell<Option<Option<Vec<String>>>> = const { RefCell::new(None) };
    static CALLBACK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    static INSIDE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Does the plan run through Citus's executor (a custom scan anywhere in it)?
///
/// # Safety
/// `plan` is null or a valid plan tree.
unsafe fn has_custom_scan(plan: *mut pg_sys::Plan) -> bool {
    if plan.is_null() {
        return false;
    }
    if (*plan).type_ == pg_sys::NodeTag::T_CustomScan {
        return true;
    }
    has_custom_scan((*plan).lefttree) || has_custom_scan((*plan).righttree) || {
        // Append-like nodes keep their children in lists.
        let list = match (*plan).type_ {
            pg_sys::NodeTag::T_Append => (*(plan as *mut pg_sys::Append)).appendplans,
            pg_sys::NodeTag::T_MergeAppend => (*(plan as *mut pg_sys::MergeAppend)).mergeplans,
            _ => std::ptr::null_mut(),
        };
        list_any(list)
    }
}

/// # Safety
/// `list` is null or a list of plans.
unsafe fn list_any(list: *mut pg_sys::List) -> bool {
    if list.is_null() {
        return false;
    }
    (0..(*list).length).any(|i| {
        has_custom_scan((*(*list).elements.add(i as usize)).ptr_value as *mut pg_sys::Plan)
    })
}

/// Does the relation have row level security enabled?
///
/// # Safety
/// A syscache lookup; needs a transaction.
unsafe fn row_security_on(relid: pg_sys::Oid) -> bool {
    let tuple = pg_sys::SearchSysCache1(
        pg_sys::SysCacheIdentifier::RELOID as i32,
        pg_sys::Datum::from(relid),
    );
    if tuple.is_null() {
        return false;
    }
    let form = pg_sys::GETSTRUCT(tuple) as *mut pg_sys::FormData_pg_class;
    let on = (*form).relrowsecurity;
    pg_sys::ReleaseSysCache(tuple);
    on
}

/// Does the range table name a table with row level security? Citus keeps the statement's
/// original range table in its plan (for permission checks): a statement on tables without
/// policies has no use for the tenant on the workers, and does not pay for passing it on.
///
/// # Safety
/// `rtable` is null or a list of range table entries.
unsafe fn touches_row_security(rtable: *mut pg_sys::List) -> bool {
    if rtable.is_null() {
        return false;
    }
    (0..(*rtable).length).any(|i| {
        let rte = (*(*rtable).elements.add(i as usize)).ptr_value as *mut pg_sys::RangeTblEntry;
        !rte.is_null()
            && (*rte).rtekind == pg_sys::RTEKind::RTE_RELATION
            && row_security_on((*rte).relid)
    })
}

/// Does the statement need the context on other nodes? Cheap when Citus is not loaded.
///
/// # Safety
/// `stmt` is a valid planned statement.
pub(crate) unsafe fn wants_context(stmt: *mut pg_sys::PlannedStmt) -> bool {
    if !super::library_loaded() || stmt.is_null() {
        return false;
    }
    let utility = (*stmt).utilityStmt;
    if !utility.is_null() {
        if (*utility).type_ != pg_sys::NodeTag::T_CopyStmt {
            return false;
        }
        // COPY of a table: only one with policies; COPY (query): always.
        let rv = (*(utility as *mut pg_sys::CopyStmt)).relation;
        return rv.is_null()
            || crate::pg::nodes::range_var_oid(rv).is_none_or(|oid| row_security_on(oid));
    }
    (has_custom_scan((*stmt).planTree) || list_any((*stmt).subplans))
        && touches_row_security((*stmt).rtable)
}

/// Hands the context to Citus for the statement about to run. Called from the executor and
/// utility hooks, inside pgrx's error boundary.
#[pg_guard]
pub(crate) unsafe extern "C-unwind" fn hand_over() {
    if INSIDE.with(|i| i.replace(true)) {
        return;
    }
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            INSIDE.with(|i| i.set(false));
        }
    }
    let _reset = Reset;
    // SAFETY: a plain global of the server, true while CREATE/ALTER EXTENSION runs a script.
    if super::internal_backend() || unsafe { pg_sys::creating_extension } || !super::active() {
        return;
    }
    let Some(settings) = context_settings() else {
        return;
    };
    let anything_set = settings
        .iter()
        .any(|(name, value)| name != CLIENT_APPLICATION_NAME && !value.is_empty());
    super::with(|c| {
        // SAFETY: Citus's activeSetStmts is NULL or a StringInfo in TopTransactionContext.
        let active = unsafe { *c.active_set_stmts };
        let sent = if active.is_null() {
            ""
        } else {
            // SAFETY: a StringInfo's data is NUL-terminated.
            unsafe { CStr::from_ptr((*active).data) }
                .to_str()
                .unwrap_or("")
        };
        // An unset setting is what a worker has anyway: send it only to undo a value sent
        // earlier in this transaction.
        let command = settings
            .iter()
            .map(|(name, value)| (format!("SET LOCAL {} = ", quote_name(name)), value))
            .filter(|(set, value)| !value.is_empty() || sent.contains(set.as_str()))
            .map(|(set, value)| format!("{set}{}", quote_literal(value)))
            .collect::<Vec<_>>()
            .join(";")
            + ";";
        if sent.ends_with(&command) || (!anything_set && sent.is_empty()) {
            return;
        }
        let text = CString::new(command.as_str()).expect("settings hold no NUL");
        // SAFETY: a VariableSetStmt node for Citus's bookkeeping (it reads only the text); the
        // text is copied by Citus into its own StringInfo. Both calls may raise (a worker
        // connection failing), so they run inside pgrx's error boundary.
        unsafe {
            let stmt = pg_sys::palloc0(std::mem::size_of::<pg_sys::VariableSetStmt>())
                as *mut pg_sys::VariableSetStmt;
            (*stmt).type_ = pg_sys::NodeTag::T_VariableSetStmt;
            (*stmt).kind = pg_sys::VariableSetKind::VAR_SET_VALUE;
            (*stmt).is_local = true;
            pg_sys::ffi::pg_guard_ffi_boundary(|| {
                (c.use_coordinated_transaction)();
                (c.propagate_set)(stmt, text.as_ptr());
            });
        }
    });
}

/// A setting name as SQL: each dot-separated part quoted (names are checked to be
/// `[A-Za-z0-9_$.]` when set, and the registry's came from there).
fn quote_name(name: &str) -> String {
    name.split('.')
        .map(pgrx::spi::quote_identifier)
        .collect::<Vec<_>>()
        .join(".")
}

/// A context setting's value to pass on: '' when unset, and, under tenantguard.tenant_scope =
/// transaction, when set for the session (a worker would otherwise take it as the transaction's).
fn setting_value(name: &str) -> String {
    let mut finder = crate::pg::settings::Finder::new();
    // SAFETY: a lookup that never raises; the value is copied at once; a superuser-only setting
    // goes through GetConfigOption's privilege check.
    unsafe {
        let var = finder.find(name.as_bytes());
        if var.is_null() {
            return String::new();
        }
        if crate::gucs::tenant_scope_transaction() && !crate::pg::settings::transaction_scoped(var)
        {
            return String::new();
        }
        let raw = if crate::pg::settings::superuser_only(var) {
            pg_sys::GetConfigOption((*var).name, true, true)
        } else {
            crate::pg::settings::value_of(var)
        };
        if raw.is_null() {
            String::new()
        } else {
            CStr::from_ptr(raw).to_string_lossy().into_owned()
        }
    }
}

/// Every context setting with this session's value ('' when unset), in a stable order; `None`
/// when tenantguard is not installed in this database.
pub(crate) fn context_settings() -> Option<Vec<(String, String)>> {
    let mut names = vec![
        gucs::tenant_setting(),
        gucs::role_setting(),
        gucs::user_setting(),
    ];
    names.extend(registry_names()?);
    // A JSON path reads the setting before the colon: that is what travels.
    for n in names.iter_mut() {
        if let Some(i) = n.find(':') {
            n.truncate(i);
        }
    }
    names.sort();
    names.dedup();
    let mut out: Vec<(String, String)> = names
        .into_iter()
        .map(|n| {
            let v = setting_value(&n);
            (n, v)
        })
        .collect();
    // SAFETY: the server's application_name, NUL-terminated or null.
    let app = unsafe {
        let p = pg_sys::application_name;
        if p.is_null() {
            String::new()
        } else {
            CStr::from_ptr(p).to_string_lossy().into_owned()
        }
    };
    out.push((CLIENT_APPLICATION_NAME.into(), app));
    Some(out)
}

/// The tenant and role settings protected tables name; `None` when tenantguard is not installed
/// in this database. Read once and kept until the registry changes: a statement trigger on the
/// registry (`_registry_changed`) sends a relcache invalidation (of its primary key's index) to
/// every backend.
fn registry_names() -> Option<Vec<String>> {
    crate::pg::callbacks::register_once(&CALLBACK, Some(registry_invalidated), &[]);
    if let Some(names) = REGISTRY_NAMES.with(|r| r.borrow().clone()) {
        return names;
    }
    // SAFETY: a catalog lookup with missing_ok.
    let installed =
        unsafe { pg_sys::get_extension_oid(c"tenantguard".as_ptr(), true) } != pg_sys::InvalidOid;
    let names = installed.then(|| {
        let _internal = crate::session::Internal::enter();
        crate::pg::raw::with_row_security(|| {
            Spi::connect(|client| {
                client
                    .select(
                        "SELECT DISTINCT s FROM tenantguard.registry r,
                                LATERAL (VALUES (r.options ->> 'tenant_setting'),
                                                (r.options ->> 'role_setting')) v(s)
                          WHERE s IS NOT NULL",
                        None,
                        &[],
                    )
                    .map(|rows| {
                        rows.filter_map(|row| row.get::<String>(1).ok().flatten())
                            .collect::<Vec<String>>()
                    })
            })
        })
        .unwrap_or_default()
    });
    REGISTRY_NAMES.with(|r| *r.borrow_mut() = Some(names.clone()));
    names
}

/// Any relcache invalidation may be the registry's (or the extension's creation or removal):
/// read the names again next time. Cheap, and invalidations are rare next to statements.
#[pg_guard]
unsafe extern "C-unwind" fn registry_invalidated(_arg: pg_sys::Datum, relid: pg_sys::Oid) {
    let _ = relid;
    REGISTRY_NAMES.with(|r| {
        if let Ok(mut r) = r.try_borrow_mut() {
            *r = None;
        }
    });
}

/// `tenantguard._registry_changed()`, a statement trigger on the registry: every backend reads
/// the setting names again. Also `tenantguard._tenants_changed()` on a hierarchy's tenants table
/// (src/tenant/subtree.rs), whose listeners look for that table's own invalidation.
///
/// The registry's listeners take any relcache invalidation as theirs, so the registry sends one
/// for its primary key's index rather than for the table: an invalidation of the table would make
/// every backend parse and plan again every statement that reads the registry (protect()'s and
/// auto-protect's catalog probes among them), once per registry change, which made each
/// auto-protected CREATE TABLE plan them all again.
#[no_mangle]
#[pg_guard]
pub extern "C-unwind" fn tenantguard_registry_changed(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    // SAFETY: the trigger's TriggerData, checked to be one; the relation is open and locked by
    // the statement that fired it, and its index list comes from its relcache entry.
    unsafe {
        let ctx = (*fcinfo).context;
        if !ctx.is_null() && (*ctx).type_ == pg_sys::NodeTag::T_TriggerData {
            let rel = (*(ctx as *mut pg_sys::TriggerData)).tg_relation;
            let own = pg_sys::get_namespace_name((*(*rel).rd_rel).relnamespace);
            let is_registry = !own.is_null() && CStr::from_ptr(own).to_bytes() == b"tenantguard";
            let index = if is_registry {
                // RelationGetIndexList fills rd_pkindex in.
                pg_sys::list_free(pg_sys::RelationGetIndexList(rel));
                (*rel).rd_pkindex
            } else {
                pg_sys::InvalidOid
            };
            if index != pg_sys::InvalidOid {
                pg_sys::CacheInvalidateRelcacheByRelid(index);
            } else {
                pg_sys::CacheInvalidateRelcache(rel);
            }
        }
    }
    pg_sys::Datum::from(0)
}
crate::pg_finfo_v1!(pg_finfo_tenantguard_registry_changed);
