//! Writing audit rows: straight into tenantguard._audit_log's heap and indexes, kept open for the
//! transaction (or, if that table is not a plain table with plain indexes, through a kept INSERT
//! plan as its owner). No role needs a privilege on it.

use crate::audit::encode::{op_text, text_datum, uuid_text};
use crate::audit::meta::{
    attname, cached_name, live_attributes, name_ref, registry_facts, AuditMeta, TenantText,
};
use crate::catalog::{kept_select, OID};
use crate::errors::Error;
use crate::pg::raw;
use pgrx::pg_sys;

// commands/sequence.h, which pgrx's bindings leave out. Called only through pg_guard_ffi_boundary,
// so an ERROR inside it unwinds properly.
extern "C-unwind" {
    fn nextval_internal(relid: pg_sys::Oid, check_permissions: bool) -> i64;
}
use pgrx::prelude::*;
use pgrx::spi::OwnedPreparedStatement;
use std::cell::{Cell, OnceCell, RefCell};
use std::ffi::{CStr, CString};
use std::ptr;
use std::rc::Rc;

/// Where audit rows go: tenantguard._audit_log (read through the view audit_log), and how to
/// write into it.
pub(crate) struct AuditTarget {
    pub(crate) oid: pg_sys::Oid,
    pub(crate) seq: pg_sys::Oid,
    /// Heap insert straight into the table: it is a plain table whose indexes are all plain
    /// column indexes. Otherwise (say, partitioned by month) rows go through a kept INSERT plan.
    pub(crate) direct: bool,
    /// For each field in FIELDS, its 0-based attribute index in the table.
    pub(crate) slots: [usize; FIELDS.len()],
    pub(crate) natts: usize,
    pub(crate) plan: pg_sys::SPIPlanPtr,
    pub(crate) owner: pg_sys::Oid,
}

impl Drop for AuditTarget {
    fn drop(&mut self) {
        if !self.plan.is_null() {
            // SAFETY: a plan we kept with SPI_keepplan and no one else holds.
            unsafe { pg_sys::SPI_freeplan(self.plan) };
        }
    }
}

/// The audit_log columns tenantguard fills, in the order of `AuditRow::datums`.
pub(crate) const FIELDS: [(&str, pg_sys::Oid); 16] = [
    ("occurred_at", pg_sys::TIMESTAMPTZOID),
    ("statement_at", pg_sys::TIMESTAMPTZOID),
    ("txid", pg_sys::INT8OID),
    ("table_schema", pg_sys::NAMEOID),
    ("table_name", pg_sys::NAMEOID),
    // regclass: pg_dump writes the table's name, and a restore gives it the restored table's OID.
    ("table_oid", pg_sys::REGCLASSOID),
    ("op", pg_sys::TEXTOID),
    ("tenant_id", pg_sys::TEXTOID),
    ("record_key", pg_sys::JSONBOID),
    ("old_values", pg_sys::JSONBOID),
    ("new_values", pg_sys::JSONBOID),
    ("changed_columns", pg_sys::TEXTARRAYOID),
    ("db_user", pg_sys::NAMEOID),
    ("session_user_name", pg_sys::NAMEOID),
    ("app_user", pg_sys::TEXTOID),
    ("application_name", pg_sys::TEXTOID),
];

thread_local! {
    pub(crate) static TARGET: RefCell<Option<Rc<AuditTarget>>> = const { RefCell::new(None) };
    pub(crate) static OPEN: RefCell<Option<OpenAudit>> = const { RefCell::new(None) };
    pub(crate) static CALLBACKS_REGISTERED: Cell<bool> = const { Cell::new(false) };
}

/// A relcache invalidation of the audit log (or of everything) drops the kept target and marks
/// the open table stale.
#[pg_guard]
pub(crate) unsafe extern "C-unwind" fn target_invalidated(_arg: pg_sys::Datum, relid: pg_sys::Oid) {
    let all = relid == pg_sys::InvalidOid;
    let target = TARGET.with(|t| {
        t.try_borrow_mut().ok().and_then(|mut t| {
            if all || t.as_ref().is_some_and(|x| x.oid == relid) {
                t.take()
            } else {
                None
            }
        })
    });
    OPEN.with(|o| {
        if let Ok(mut o) = o.try_borrow_mut() {
            if let Some(open) = o.as_mut() {
                if all || open.oid == relid {
                    open.stale = true;
                }
            }
        }
    });
    drop(target);
}

pub(crate) fn register_callbacks() {
    if CALLBACKS_REGISTERED.with(|r| r.get()) {
        return;
    }
    crate::pg::callbacks::register_once(&CALLBACKS_REGISTERED, Some(target_invalidated), &[]);
    // SAFETY: registers a function that only closes this module's open table.
    unsafe { pg_sys::RegisterXactCallback(Some(xact_event), ptr::null_mut()) };
}

/// Closes the audit log kept open for the transaction, before commit; on abort the resource owner
/// releases it.
#[pg_guard]
pub(crate) unsafe extern "C-unwind" fn xact_event(
    event: pg_sys::XactEvent::Type,
    _arg: *mut std::ffi::c_void,
) {
    let open = OPEN.with(|o| o.borrow_mut().take());
    if let Some(open) = open {
        if matches!(
            event,
            pg_sys::XactEvent::XACT_EVENT_PRE_COMMIT
                | pg_sys::XactEvent::XACT_EVENT_PARALLEL_PRE_COMMIT
                | pg_sys::XactEvent::XACT_EVENT_PRE_PREPARE
        ) {
            open.close();
        }
    }
}

/// tenantguard._audit_log and its indexes, opened once per transaction under the transaction's
/// resource owner (not the statement's), closed before commit.
pub(crate) struct OpenAudit {
    pub(crate) oid: pg_sys::Oid,
    pub(crate) rel: pg_sys::Relation,
    pub(crate) indexes: pg_sys::CatalogIndexState,
    pub(crate) id_index: Option<usize>,
    pub(crate) stale: bool,
}

impl OpenAudit {
    fn open(oid: pg_sys::Oid) -> OpenAudit {
        // SAFETY: opens the table and its indexes in the transaction's memory and resource owner.
        unsafe {
            let saved_owner = pg_sys::CurrentResourceOwner;
            let saved_cxt = pg_sys::MemoryContextSwitchTo(pg_sys::TopTransactionContext);
            pg_sys::CurrentResourceOwner = pg_sys::TopTransactionResourceOwner;
            let rel = pg_sys::table_open(oid, pg_sys::RowExclusiveLock as i32);
            let indexes = pg_sys::CatalogOpenIndexes(rel);
            pg_sys::CurrentResourceOwner = saved_owner;
            pg_sys::MemoryContextSwitchTo(saved_cxt);
            let id_index = live_attributes((*rel).rd_att)
                .into_iter()
                .find(|(_, a)| attname(a) == "id")
                .map(|(i, _)| i);
            OpenAudit {
                oid,
                rel,
                indexes,
                id_index,
                stale: false,
            }
        }
    }

    fn close(self) {
        // SAFETY: closes what open() opened, under the same resource owner.
        unsafe {
            let saved_owner = pg_sys::CurrentResourceOwner;
            pg_sys::CurrentResourceOwner = pg_sys::TopTransactionResourceOwner;
            pg_sys::CatalogCloseIndexes(self.indexes);
            pg_sys::table_close(self.rel, pg_sys::NoLock as i32);
            pg_sys::CurrentResourceOwner = saved_owner;
        }
    }
}

/// Runs `f` with the audit log open for this transaction.
pub(crate) fn with_open_audit<R>(oid: pg_sys::Oid, f: impl FnOnce(&OpenAudit) -> R) -> R {
    let current = OPEN.with(|o| o.borrow_mut().take());
    let open = match current {
        Some(o) if o.oid == oid && !o.stale => o,
        Some(o) => {
            o.close();
            OpenAudit::open(oid)
        }
        None => OpenAudit::open(oid),
    };
    // Put it back before running f: an error inside f must still leave it for the xact callback.
    OPEN.with(|o| *o.borrow_mut() = Some(open));
    OPEN.with(|o| f(o.borrow().as_ref().expect("just stored")))
}

pub(crate) fn build_target() -> AuditTarget {
    // SAFETY: catalog lookups by name.
    let oid = unsafe {
        let nsp = pg_sys::get_namespace_oid(c"tenantguard".as_ptr(), false);
        match pg_sys::get_relname_relid(c"_audit_log".as_ptr(), nsp) {
            // 0.1.0's table, until ALTER EXTENSION tenantguard UPDATE renames it: a server that
            // already runs this library keeps auditing in between.
            pg_sys::InvalidOid => pg_sys::get_relname_relid(c"audit_log".as_ptr(), nsp),
            oid => oid,
        }
    };
    if oid == pg_sys::InvalidOid {
        Error::AuditLogMissing.raise();
    }
    thread_local! {
        static PLAN: OnceCell<OwnedPreparedStatement> = const { OnceCell::new() };
    }
    // A heap insert is right only for a plain table whose indexes are plain column indexes.
    let (plain, seq) = kept_select(
        &PLAN,
        "SELECT c.relkind = 'r'
                AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_index i
                                 WHERE i.indrelid = c.oid
                                   AND (i.indexprs IS NOT NULL OR i.indpred IS NOT NULL
                                        OR i.indisexclusion OR NOT i.indimmediate
                                        OR NOT i.indisready)),
                COALESCE(pg_catalog.pg_get_serial_sequence(c.oid::pg_catalog.regclass::text, 'id')::pg_catalog.regclass::oid, 0)
           FROM pg_catalog.pg_class c WHERE c.oid = $1",
        &[OID],
        &[oid.into()],
        |rows| {
            let mut out = (false, pg_sys::InvalidOid);
            for row in rows {
                out = (
                    row.get::<bool>(1)?.unwrap_or(false),
                    row.get::<pg_sys::Oid>(2)?.unwrap_or_default(),
                );
            }
            Ok(out)
        },
    );
    // SAFETY: open and close the table to read its descriptor.
    unsafe {
        let rel = pg_sys::table_open(oid, pg_sys::AccessShareLock as i32);
        let desc = (*rel).rd_att;
        let natts = (*desc).natts as usize;
        let owner = (*(*rel).rd_rel).relowner;
        // The table found above, by name (0.1.0's audit_log until the extension is updated).
        let table = CStr::from_ptr((*(*rel).rd_rel).relname.data.as_ptr())
            .to_string_lossy()
            .into_owned();
        let atts = live_attributes(desc);
        let mut slots = [0usize; FIELDS.len()];
        let mut shape_ok = seq != pg_sys::InvalidOid;
        for (k, (name, typid)) in FIELDS.iter().enumerate() {
            match atts.iter().find(|(_, a)| attname(a) == *name) {
                // table_oid is an oid in 0.1.0's table, a regclass since: the same datum.
                Some((i, a))
                    if a.atttypid == *typid
                        || (*typid == pg_sys::REGCLASSOID && a.atttypid == pg_sys::OIDOID) =>
                {
                    slots[k] = *i
                }
                _ => shape_ok = false,
            }
        }
        // Every column must be one tenantguard fills, or id.
        let known = atts
            .iter()
            .all(|(_, a)| attname(a) == "id" || FIELDS.iter().any(|(n, _)| attname(a) == *n));
        pg_sys::table_close(rel, pg_sys::NoLock as i32);
        let direct = plain && shape_ok && known;
        let mut plan = ptr::null_mut();
        if !direct {
            let cols: Vec<&str> = FIELDS.iter().map(|(n, _)| *n).collect();
            let params: Vec<String> = (1..=FIELDS.len()).map(|i| format!("${i}")).collect();
            let sql = CString::new(format!(
                "INSERT INTO {} ({}) VALUES ({})",
                pgrx::spi::quote_qualified_identifier("tenantguard", &table),
                cols.join(", "),
                params.join(", ")
            ))
            .expect("no NUL");
            let mut types: Vec<pg_sys::Oid> = FIELDS.iter().map(|(_, t)| *t).collect();
            pg_sys::SPI_connect();
            let p = pg_sys::SPI_prepare(sql.as_ptr(), types.len() as i32, types.as_mut_ptr());
            if p.is_null() {
                pg_sys::SPI_finish();
                Error::AuditLogShape.raise();
            }
            pg_sys::SPI_keepplan(p);
            pg_sys::SPI_finish();
            plan = p;
        }
        AuditTarget {
            oid,
            seq,
            direct,
            slots,
            natts,
            plan,
            owner,
        }
    }
}

pub(crate) fn target() -> Rc<AuditTarget> {
    register_callbacks();
    if let Some(t) = TARGET.with(|t| t.borrow().clone()) {
        return t;
    }
    let t = Rc::new(build_target());
    TARGET.with(|x| *x.borrow_mut() = Some(t.clone()));
    t
}

/// One audit row, as datums in the order of FIELDS (None = NULL).
pub(crate) struct AuditRow {
    pub(crate) op: &'static str,
    /// The audited table (on a Citus shard: the distributed table) and its schema.
    pub(crate) table: pg_sys::Oid,
    pub(crate) namespace: pg_sys::Oid,
    /// The table's name, a `name` datum.
    pub(crate) relname: pg_sys::Datum,
    pub(crate) tenant: Option<pg_sys::Datum>,
    pub(crate) record_key: Option<pg_sys::Datum>,
    pub(crate) old_values: Option<pg_sys::Datum>,
    pub(crate) new_values: Option<pg_sys::Datum>,
    pub(crate) changed: Option<pg_sys::Datum>,
}

/// Writes one audit row.
///
/// # Safety
/// The datums must be valid in the current memory context.
pub(crate) unsafe fn write_row(row: AuditRow) {
    let target = target();
    let mut datums: [Option<pg_sys::Datum>; FIELDS.len()] = [None; FIELDS.len()];
    datums[0] = Some(pg_sys::Datum::from(raw::GetCurrentTimestamp()));
    datums[1] = Some(pg_sys::Datum::from(raw::GetCurrentStatementStartTimestamp()));
    datums[2] = Some(pg_sys::Datum::from(
        pg_sys::GetTopFullTransactionId().value as i64,
    ));
    let schema = cached_name(b'n', row.namespace);
    let db_user = cached_name(b'r', raw::GetUserId());
    let session_user = cached_name(b'r', raw::GetSessionUserId());
    datums[3] = Some(name_ref(&schema));
    datums[4] = Some(row.relname);
    datums[5] = Some(pg_sys::Datum::from(row.table));
    datums[6] = Some(op_text(row.op));
    datums[7] = row.tenant;
    datums[8] = row.record_key;
    datums[9] = row.old_values;
    datums[10] = row.new_values;
    datums[11] = row.changed;
    datums[12] = Some(name_ref(&db_user));
    datums[13] = Some(name_ref(&session_user));
    // Under require_signed_tenant the application user is the verified token's, if it names one.
    datums[14] = if crate::tenant::token::required() {
        crate::tenant::token::verified_user().map(|u| text_datum(&u))
    } else {
        let app_user = crate::pg::settings::named_setting(1);
        if app_user.is_null() || *app_user == 0 {
            None
        } else {
            Some(text_datum(CStr::from_ptr(app_user).to_bytes()))
        }
    };
    // A Citus worker's shard query runs under Citus's own application_name; the client's comes
    // with the statement (src/citus/propagate.rs).
    let mut app = pg_sys::application_name as *const std::ffi::c_char;
    if crate::citus::internal_backend() {
        if let Some(client) = crate::gucs::CLIENT_APPLICATION_NAME.get() {
            if !client.as_bytes().is_empty() {
                app = pg_sys::pstrdup(client.as_ptr());
            }
        }
    }
    datums[15] = if app.is_null() || *app == 0 {
        None
    } else {
        Some(text_datum(CStr::from_ptr(app).to_bytes()))
    };

    if target.direct {
        with_open_audit(target.oid, |open| {
            let audit = open.rel;
            let mut values = vec![pg_sys::Datum::from(0); target.natts];
            let mut nulls = vec![true; target.natts];
            // id: the identity sequence, without the caller needing any privilege on it.
            if let Some(i) = open.id_index {
                values[i] = pg_sys::Datum::from(pg_sys::ffi::pg_guard_ffi_boundary(|| {
                    nextval_internal(target.seq, false)
                }));
                nulls[i] = false;
            }
            for (k, d) in datums.iter().enumerate() {
                if let Some(d) = d {
                    values[target.slots[k]] = *d;
                    nulls[target.slots[k]] = false;
                }
            }
            let tuple =
                pg_sys::heap_form_tuple((*audit).rd_att, values.as_mut_ptr(), nulls.as_mut_ptr());
            // Under the transaction's resource owner, which also owns the open table and
            // indexes: from PostgreSQL 17 a BRIN index keeps buffers pinned between inserts (its
            // insert state, released when the indexes are closed before commit), and a pin taken
            // under this statement's owner would be reported as leaked when the statement ends.
            let saved_owner = pg_sys::CurrentResourceOwner;
            pg_sys::CurrentResourceOwner = pg_sys::TopTransactionResourceOwner;
            pg_sys::CatalogTupleInsertWithInfo(audit, tuple, open.indexes);
            pg_sys::CurrentResourceOwner = saved_owner;
        });
    } else {
        // Through the kept INSERT plan, as the audit log's owner: no role needs INSERT on it.
        let mut values: Vec<pg_sys::Datum> = datums
            .iter()
            .map(|d| d.unwrap_or(pg_sys::Datum::from(0)))
            .collect();
        let nulls: Vec<std::ffi::c_char> = datums
            .iter()
            .map(|d| if d.is_some() { b' ' } else { b'n' } as std::ffi::c_char)
            .collect();
        let mut saved_user = pg_sys::InvalidOid;
        let mut saved_sec = 0;
        pg_sys::GetUserIdAndSecContext(&mut saved_user, &mut saved_sec);
        pg_sys::SetUserIdAndSecContext(
            target.owner,
            saved_sec
                | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32
                | pg_sys::SECURITY_RESTRICTED_OPERATION as i32,
        );
        pg_sys::SPI_connect();
        let rc =
            pg_sys::SPI_execute_plan(target.plan, values.as_mut_ptr(), nulls.as_ptr(), false, 0);
        pg_sys::SPI_finish();
        pg_sys::SetUserIdAndSecContext(saved_user, saved_sec);
        if rc != pg_sys::SPI_OK_INSERT as i32 {
            Error::Internal {
                message: format!("tenantguard could not write an audit row (SPI code {rc})"),
                hint: "Check that tenantguard._audit_log accepts inserts from its owner.",
            }
            .raise();
        }
    }
}

/// The session's tenant for a TRUNCATE row, written as the table's tenant column prints it (a
/// uuid in lower case, a number without leading zeros), as row operations write it; text that is
/// not a value of that type is written as it is.
///
/// # Safety
/// `rel` must be the open relation the trigger fired for.
pub(crate) unsafe fn truncate_tenant(rel: pg_sys::Relation, setting: Vec<u8>) -> Vec<u8> {
    let Some((_, column, _)) = registry_facts((*rel).rd_id) else {
        return setting;
    };
    let base = live_attributes((*rel).rd_att)
        .into_iter()
        .find(|(_, a)| attname(a) == column)
        .map(|(_, a)| pg_sys::getBaseType(a.atttypid));
    let text = String::from_utf8_lossy(&setting);
    match base {
        Some(pg_sys::UUIDOID) => uuid::Uuid::try_parse(text.trim())
            .map(|u| u.hyphenated().to_string().into_bytes())
            .unwrap_or(setting),
        Some(pg_sys::INT2OID | pg_sys::INT4OID | pg_sys::INT8OID) => text
            .trim()
            .parse::<i64>()
            .map(|n| n.to_string().into_bytes())
            .unwrap_or(setting),
        _ => setting,
    }
}

pub(crate) unsafe fn tenant_of(
    meta: &AuditMeta,
    values: &[pg_sys::Datum],
    nulls: &[bool],
) -> Option<pg_sys::Datum> {
    let (i, how) = meta.tenant.as_ref()?;
    if nulls[*i] {
        return None;
    }
    Some(match how {
        TenantText::AsIs => values[*i],
        TenantText::Uuid => text_datum(&uuid_text(values[*i])),
        TenantText::Output(finfo) => {
            let s = pg_sys::OutputFunctionCall(*finfo, values[*i]);
            text_datum(CStr::from_ptr(s).to_bytes())
        }
    })
}

/// Runs `f` as the audit log's owner (a Citus table rewrite moves the rewritten table's rows to
/// its new oid; no other role may update the log).
pub(crate) fn as_audit_owner<R>(f: impl FnOnce() -> R) -> R {
    let owner = target().owner;
    let mut saved_user = pg_sys::InvalidOid;
    let mut saved_sec = 0;
    // SAFETY: the same switch the INSERT path above makes; an ERROR inside `f` aborts the
    // (sub)transaction, which restores the user and security context.
    unsafe {
        pg_sys::GetUserIdAndSecContext(&mut saved_user, &mut saved_sec);
        pg_sys::SetUserIdAndSecContext(
            owner,
            saved_sec
                | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32
                | pg_sys::SECURITY_RESTRICTED_OPERATION as i32,
        );
    }
    let out = f();
    // SAFETY: restores what was saved above.
    unsafe { pg_sys::SetUserIdAndSecContext(saved_user, saved_sec) };
    out
}
