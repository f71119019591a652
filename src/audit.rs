//! The audit trigger and the updated_at trigger, as native C-ABI trigger functions.
//!
//! Both run on every changed row, so they do their catalog work once per relation: what to write
//! for each column, the primary key, the tenant column and the excluded columns are kept in a
//! backend-local cache that relcache invalidations clear. Row values become jsonb by building
//! JsonbValues directly (no text round trip), and audit rows go straight into the heap and its
//! indexes, as PostgreSQL does for its own catalogs: no SPI, no parsing, no executor per row.

use crate::catalog::{kept_select, OID};
use crate::errors::raise;
use crate::raw;
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::spi::OwnedPreparedStatement;
use std::cell::{Cell, OnceCell, RefCell};
use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::ptr;
use std::rc::Rc;

// utils/datum.h and commands/sequence.h, which pgrx's bindings leave out. Called only through
// pg_guard_ffi_boundary, so an ERROR inside them unwinds properly.
extern "C-unwind" {
    fn datum_image_eq(
        value1: pg_sys::Datum,
        value2: pg_sys::Datum,
        typ_by_val: bool,
        typ_len: i32,
    ) -> bool;
    fn nextval_internal(relid: pg_sys::Oid, check_permissions: bool) -> i64;
}

/// FxHash-style hashing for the caches' small integer keys: SipHash, the default, cost more than
/// the rest of a lookup, and these maps are read several times for every audited row.
#[derive(Default)]
struct OidHasher(u64);

impl std::hash::Hasher for OidHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        bytes.iter().for_each(|b| self.add(*b as u64));
    }
    fn write_u8(&mut self, n: u8) {
        self.add(n as u64)
    }
    fn write_u32(&mut self, n: u32) {
        self.add(n as u64)
    }
}

impl OidHasher {
    fn add(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

type OidMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<OidHasher>>;

/// How one column's value becomes a jsonb value; the same result `to_jsonb()` gives.
enum Encoding {
    Int2,
    Int4,
    Int8,
    /// numeric; NaN and infinities become strings through the output function, as in to_jsonb().
    Numeric(*mut pg_sys::FmgrInfo),
    Bool,
    Text,
    Jsonb,
    /// date, timestamp, timestamptz: ISO 8601, as to_jsonb() writes them.
    DateTime(pg_sys::Oid),
    /// uuid: its text form, written here rather than through uuid_out (a tenant column is
    /// usually a uuid, so most audited rows have one or two).
    Uuid,
    /// A built-in type to_jsonb() writes as its text output: the output function, cached.
    Output(*mut pg_sys::FmgrInfo),
    /// Everything else (arrays, composites, floats, json, user-defined types): to_jsonb() itself.
    ToJsonb(*mut pg_sys::FmgrInfo),
}

struct Column {
    /// 0-based index into the deformed tuple.
    index: usize,
    name: CString,
    encoding: Encoding,
}

/// A memory context that lives as long as the cache entry that owns it.
struct OwnedContext(pg_sys::MemoryContext);

impl OwnedContext {
    fn new(name: &'static CStr) -> OwnedContext {
        // SAFETY: CacheMemoryContext exists in every backend; the new context is deleted on drop.
        OwnedContext(unsafe {
            pg_sys::AllocSetContextCreateInternal(
                pg_sys::CacheMemoryContext,
                name.as_ptr(),
                0,
                1024,
                8 * 1024,
            )
        })
    }

    fn alloc<T>(&self) -> *mut T {
        // SAFETY: zeroed memory of T's size in our own context.
        unsafe { pg_sys::MemoryContextAllocZero(self.0, std::mem::size_of::<T>()) as *mut T }
    }
}

impl Drop for OwnedContext {
    fn drop(&mut self) {
        // SAFETY: created in new() and deleted only here.
        unsafe { pg_sys::MemoryContextDelete(self.0) }
    }
}

/// What the audit trigger needs about one audited relation (and one trigger's arguments).
struct AuditMeta {
    skip_noop: bool,
    /// Columns written to old_values/new_values (excluded columns left out).
    values: Vec<Column>,
    /// Primary key columns, for record_key; empty when the table has no primary key.
    key: Vec<Column>,
    /// Every live column: index, typlen, typbyval, name, and whether it is audited (not in
    /// audit_exclude); for changed_columns, which names only audited columns.
    all: Vec<(usize, i16, bool, CString, bool)>,
    /// The tenant column's index and how to turn it into text.
    tenant: Option<(usize, TenantText)>,
    /// The table's name when this entry was built (a rename invalidates the entry).
    relname: Box<pg_sys::NameData>,
    _cxt: OwnedContext,
}

enum TenantText {
    AsIs,
    Uuid,
    Output(*mut pg_sys::FmgrInfo),
}

/// Where audit rows go: tenantguard._audit_log (read through the view audit_log), and how to
/// write into it.
struct AuditTarget {
    oid: pg_sys::Oid,
    seq: pg_sys::Oid,
    /// Heap insert straight into the table: it is a plain table whose indexes are all plain
    /// column indexes. Otherwise (say, partitioned by month) rows go through a kept INSERT plan.
    direct: bool,
    /// For each field in FIELDS, its 0-based attribute index in the table.
    slots: [usize; FIELDS.len()],
    natts: usize,
    plan: pg_sys::SPIPlanPtr,
    owner: pg_sys::Oid,
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
const FIELDS: [(&str, pg_sys::Oid); 16] = [
    ("occurred_at", pg_sys::TIMESTAMPTZOID),
    ("statement_at", pg_sys::TIMESTAMPTZOID),
    ("txid", pg_sys::INT8OID),
    ("table_schema", pg_sys::NAMEOID),
    ("table_name", pg_sys::NAMEOID),
    ("table_oid", pg_sys::OIDOID),
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

/// What the updated_at trigger needs about one relation.
struct UpdatedAtMeta {
    /// The column's index and whether it is timestamptz (else timestamp); None when the table no
    /// longer has such a column.
    target: Option<(usize, bool)>,
    skip_noop: bool,
    /// timestamptz_timestamp, for a timestamp without time zone column.
    to_timestamp: pg_sys::Oid,
}

thread_local! {
    static AUDIT_META: RefCell<OidMap<(pg_sys::Oid, pg_sys::Oid), Rc<AuditMeta>>> =
        RefCell::new(OidMap::default());
    static UPDATED_AT_META: RefCell<OidMap<(pg_sys::Oid, pg_sys::Oid), Rc<UpdatedAtMeta>>> =
        RefCell::new(OidMap::default());
    static TARGET: RefCell<Option<Rc<AuditTarget>>> = const { RefCell::new(None) };
    static CALLBACK_REGISTERED: Cell<bool> = const { Cell::new(false) };
    static OPEN: RefCell<Option<OpenAudit>> = const { RefCell::new(None) };
    static NAMES: RefCell<OidMap<(u8, pg_sys::Oid), Rc<pg_sys::NameData>>> = RefCell::new(OidMap::default());
    /// 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE' as text datums, made once in TopMemoryContext.
    static OP_TEXTS: OnceCell<[pg_sys::Datum; 4]> = const { OnceCell::new() };
}

#[pg_guard]
unsafe extern "C-unwind" fn relcache_invalidated(_arg: pg_sys::Datum, relid: pg_sys::Oid) {
    // Entries are taken out of the maps and dropped after the borrow ends: dropping one frees its
    // memory context, and code still using it holds its own Rc.
    let all = relid == pg_sys::InvalidOid;
    let mut dropped_audit = Vec::new();
    let mut dropped_updated = Vec::new();
    AUDIT_META.with(|m| {
        if let Ok(mut m) = m.try_borrow_mut() {
            let keys: Vec<_> = m.keys().filter(|k| all || k.0 == relid).copied().collect();
            dropped_audit.extend(keys.iter().filter_map(|k| m.remove(k)));
        }
    });
    UPDATED_AT_META.with(|m| {
        if let Ok(mut m) = m.try_borrow_mut() {
            let keys: Vec<_> = m.keys().filter(|k| all || k.0 == relid).copied().collect();
            dropped_updated.extend(keys.iter().filter_map(|k| m.remove(k)));
        }
    });
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
    drop(dropped_audit);
    drop(dropped_updated);
    drop(target);
}

#[pg_guard]
unsafe extern "C-unwind" fn names_invalidated(_arg: pg_sys::Datum, _cacheid: i32, _hash: u32) {
    let dropped = NAMES.with(|n| n.try_borrow_mut().map(|mut n| std::mem::take(&mut *n)));
    drop(dropped);
}

/// Closes the audit log kept open for the transaction, before commit; on abort the resource owner
/// releases it.
#[pg_guard]
unsafe extern "C-unwind" fn xact_event(
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

fn register_callback() {
    CALLBACK_REGISTERED.with(|r| {
        if !r.get() {
            // SAFETY: registers functions that only clear this module's caches.
            unsafe {
                pg_sys::CacheRegisterRelcacheCallback(
                    Some(relcache_invalidated),
                    pg_sys::Datum::from(0),
                );
                for cache in [
                    pg_sys::SysCacheIdentifier::AUTHOID,
                    pg_sys::SysCacheIdentifier::NAMESPACEOID,
                ] {
                    pg_sys::CacheRegisterSyscacheCallback(
                        cache as i32,
                        Some(names_invalidated),
                        pg_sys::Datum::from(0),
                    );
                }
                pg_sys::RegisterXactCallback(Some(xact_event), ptr::null_mut());
            }
            r.set(true);
        }
    });
}

/// tenantguard._audit_log and its indexes, opened once per transaction under the transaction's
/// resource owner (not the statement's), closed before commit.
struct OpenAudit {
    oid: pg_sys::Oid,
    rel: pg_sys::Relation,
    indexes: pg_sys::CatalogIndexState,
    id_index: Option<usize>,
    stale: bool,
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
fn with_open_audit<R>(oid: pg_sys::Oid, f: impl FnOnce(&OpenAudit) -> R) -> R {
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

/// A role's or schema's name as a `name` value, cached until the catalogs change. The caller
/// keeps the Rc while a datum points into it: an invalidation may empty the cache meanwhile.
fn cached_name(kind: u8, oid: pg_sys::Oid) -> Rc<pg_sys::NameData> {
    if let Some(n) = NAMES.with(|n| n.borrow().get(&(kind, oid)).cloned()) {
        return n;
    }
    // SAFETY: syscache lookups; both return palloc'd strings (or NULL) we copy.
    let name = unsafe {
        let raw = if kind == b'r' {
            pg_sys::GetUserNameFromId(oid, false)
        } else {
            pg_sys::get_namespace_name(oid)
        };
        let mut n: pg_sys::NameData = std::mem::zeroed();
        if !raw.is_null() {
            pg_sys::namestrcpy(&mut n, raw);
        }
        Rc::new(n)
    };
    NAMES.with(|m| m.borrow_mut().insert((kind, oid), name.clone()));
    name
}

/// A datum pointing at a `name` value.
fn name_ref(n: &pg_sys::NameData) -> pg_sys::Datum {
    pg_sys::Datum::from(n as *const pg_sys::NameData)
}

/// The trigger's arguments.
///
/// # Safety
/// `trigger` must be the Trigger of a trigger call.
unsafe fn trigger_args(trigger: *const pg_sys::Trigger) -> Vec<String> {
    let n = (*trigger).tgnargs as usize;
    (0..n)
        .map(|i| {
            CStr::from_ptr(*(*trigger).tgargs.add(i))
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

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
        raise(
            PgSqlErrorCode::ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED,
            format!("tenantguard.{name}() was called outside a trigger"),
            "tenantguard.protect() attaches it; do not call it directly.",
        );
    }
    ctx as *mut pg_sys::TriggerData
}

/// Live (not dropped) attributes of a tuple descriptor: index, attribute.
///
/// # Safety
/// `desc` must be a valid tuple descriptor.
unsafe fn live_attributes(
    desc: pg_sys::TupleDesc,
) -> Vec<(usize, &'static pg_sys::FormData_pg_attribute)> {
    let natts = (*desc).natts as usize;
    (0..natts)
        .filter_map(|i| {
            let att = &*(*desc).attrs.as_ptr().add(i);
            (!att.attisdropped).then_some((i, att))
        })
        .collect()
}

fn attname(att: &pg_sys::FormData_pg_attribute) -> String {
    // SAFETY: NameData holds a NUL-terminated string.
    unsafe { CStr::from_ptr(att.attname.data.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

/// An output function's FmgrInfo, allocated in `cxt`.
fn output_fmgr(cxt: &OwnedContext, typid: pg_sys::Oid) -> *mut pg_sys::FmgrInfo {
    let mut func = pg_sys::InvalidOid;
    let mut varlena = false;
    let finfo = cxt.alloc::<pg_sys::FmgrInfo>();
    // SAFETY: plain catalog lookups; the FmgrInfo lives in cxt.
    unsafe {
        pg_sys::getTypeOutputInfo(typid, &mut func, &mut varlena);
        pg_sys::fmgr_info_cxt(func, finfo, cxt.0);
    }
    finfo
}

/// to_jsonb(anyelement) set up for one argument type: the function finds its argument's type in
/// fn_expr, so give it an expression of that type.
fn to_jsonb_fmgr(cxt: &OwnedContext, att: &pg_sys::FormData_pg_attribute) -> *mut pg_sys::FmgrInfo {
    let finfo = cxt.alloc::<pg_sys::FmgrInfo>();
    // SAFETY: node construction in cxt, which outlives the FmgrInfo's use.
    unsafe {
        let old = pg_sys::MemoryContextSwitchTo(cxt.0);
        let func = pg_sys::fmgr_internal_function(c"to_jsonb".as_ptr());
        pg_sys::fmgr_info_cxt(func, finfo, cxt.0);
        let arg = pg_sys::makeConst(
            att.atttypid,
            att.atttypmod,
            att.attcollation,
            att.attlen as i32,
            pg_sys::Datum::from(0),
            true,
            att.attbyval,
        );
        let args = pg_sys::lappend(ptr::null_mut(), arg as *mut std::ffi::c_void);
        (*finfo).fn_expr = pg_sys::makeFuncExpr(
            func,
            pg_sys::JSONBOID,
            args,
            pg_sys::InvalidOid,
            pg_sys::InvalidOid,
            pg_sys::CoercionForm::COERCE_EXPLICIT_CALL,
        ) as *mut pg_sys::Node;
        pg_sys::MemoryContextSwitchTo(old);
    }
    finfo
}

fn encoding_for(cxt: &OwnedContext, att: &pg_sys::FormData_pg_attribute) -> Encoding {
    // SAFETY: catalog lookups.
    let base = unsafe { pg_sys::getBaseType(att.atttypid) };
    match base {
        pg_sys::INT2OID => Encoding::Int2,
        pg_sys::INT4OID => Encoding::Int4,
        pg_sys::INT8OID => Encoding::Int8,
        pg_sys::NUMERICOID => Encoding::Numeric(output_fmgr(cxt, base)),
        pg_sys::BOOLOID => Encoding::Bool,
        pg_sys::TEXTOID | pg_sys::VARCHAROID => Encoding::Text,
        pg_sys::JSONBOID => Encoding::Jsonb,
        pg_sys::UUIDOID => Encoding::Uuid,
        pg_sys::DATEOID | pg_sys::TIMESTAMPOID | pg_sys::TIMESTAMPTZOID => Encoding::DateTime(base),
        pg_sys::FLOAT4OID | pg_sys::FLOAT8OID | pg_sys::JSONOID | pg_sys::RECORDOID => {
            Encoding::ToJsonb(to_jsonb_fmgr(cxt, att))
        }
        _ => {
            // SAFETY: catalog lookups.
            let (is_array, typtype) = unsafe {
                (
                    pg_sys::get_element_type(base) != pg_sys::InvalidOid,
                    pg_sys::get_typtype(base) as u8,
                )
            };
            if base.to_u32() < pg_sys::FirstNormalObjectId && !is_array && typtype == b'b' {
                Encoding::Output(output_fmgr(cxt, base))
            } else {
                Encoding::ToJsonb(to_jsonb_fmgr(cxt, att))
            }
        }
    }
}

/// Length of a uuid's text form, 8-4-4-4-12 hex digits.
const UUID_TEXT_LEN: usize = 36;

/// A uuid datum's text form, exactly as uuid_out writes it: lower-case hex digits with dashes
/// after the 4th, 6th, 8th and 10th byte.
///
/// # Safety
/// `datum` must be a uuid datum (a pointer to 16 bytes).
unsafe fn uuid_text(datum: pg_sys::Datum) -> [u8; UUID_TEXT_LEN] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = std::slice::from_raw_parts(datum.cast_mut_ptr::<u8>() as *const u8, 16);
    let mut out = [b'-'; UUID_TEXT_LEN];
    let mut j = 0;
    for (i, b) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            j += 1;
        }
        out[j] = HEX[(b >> 4) as usize];
        out[j + 1] = HEX[(b & 0xf) as usize];
        j += 2;
    }
    out
}

/// A jsonb datum as a value to push: scalars unwrapped, containers as binary.
///
/// # Safety
/// `datum` must be a jsonb datum.
unsafe fn jsonb_value(datum: pg_sys::Datum, out: &mut pg_sys::JsonbValue) {
    let jb = pg_sys::pg_detoast_datum(datum.cast_mut_ptr()) as *mut pg_sys::Jsonb;
    let root = ptr::addr_of_mut!((*jb).root);
    if (*root).header & pg_sys::JB_FSCALAR != 0 {
        pg_sys::JsonbExtractScalar(root, out);
    } else {
        out.type_ = pg_sys::jbvType::jbvBinary;
        out.val.binary.data = root;
        out.val.binary.len =
            (pgrx::varsize(jb as *const pg_sys::varlena) - pg_sys::VARHDRSZ) as i32;
    }
}

fn string_value(out: &mut pg_sys::JsonbValue, s: *mut std::ffi::c_char, len: usize) {
    out.type_ = pg_sys::jbvType::jbvString;
    out.val.string.val = s;
    out.val.string.len = len as i32;
}

/// One column's value as a JsonbValue, valid until the current memory context is reset.
///
/// # Safety
/// `datum` must be a non-null value of the column's type.
unsafe fn encode(encoding: &Encoding, datum: pg_sys::Datum, out: &mut pg_sys::JsonbValue) {
    match encoding {
        Encoding::Int2 | Encoding::Int4 | Encoding::Int8 => {
            let v = match encoding {
                Encoding::Int2 => datum.value() as i16 as i64,
                Encoding::Int4 => datum.value() as i32 as i64,
                _ => datum.value() as i64,
            };
            out.type_ = pg_sys::jbvType::jbvNumeric;
            out.val.numeric = pg_sys::int64_to_numeric(v);
        }
        Encoding::Numeric(finfo) => {
            let n = pg_sys::pg_detoast_datum(datum.cast_mut_ptr()) as pg_sys::Numeric;
            if pg_sys::numeric_is_nan(n) || pg_sys::numeric_is_inf(n) {
                let s = pg_sys::OutputFunctionCall(*finfo, datum);
                string_value(out, s, CStr::from_ptr(s).to_bytes().len());
            } else {
                out.type_ = pg_sys::jbvType::jbvNumeric;
                out.val.numeric = n;
            }
        }
        Encoding::Bool => {
            out.type_ = pg_sys::jbvType::jbvBool;
            out.val.boolean = datum.value() != 0;
        }
        Encoding::Text => {
            let t = pg_sys::pg_detoast_datum_packed(datum.cast_mut_ptr());
            string_value(
                out,
                pgrx::vardata_any(t) as *mut std::ffi::c_char,
                pgrx::varsize_any_exhdr(t),
            );
        }
        Encoding::Jsonb => jsonb_value(datum, out),
        Encoding::DateTime(typid) => {
            let s = pg_sys::JsonEncodeDateTime(ptr::null_mut(), datum, *typid, ptr::null());
            string_value(out, s, CStr::from_ptr(s).to_bytes().len());
        }
        Encoding::Uuid => {
            let s = pg_sys::pnstrdup(uuid_text(datum).as_ptr() as *const _, UUID_TEXT_LEN);
            string_value(out, s, UUID_TEXT_LEN);
        }
        Encoding::Output(finfo) => {
            let s = pg_sys::OutputFunctionCall(*finfo, datum);
            string_value(out, s, CStr::from_ptr(s).to_bytes().len());
        }
        Encoding::ToJsonb(finfo) => {
            let j = pg_sys::FunctionCall1Coll(*finfo, pg_sys::InvalidOid, datum);
            jsonb_value(j, out);
        }
    }
}

/// A jsonb object of the given columns of a deformed row.
///
/// The columns come in jsonb's key order, so the object is handed to JsonbValueToJsonb whole:
/// one call per row instead of two pushJsonbValue calls per column and a sort at the end. A value
/// that is itself a jsonb container (a jsonb column, or to_jsonb() of an array or composite) must
/// be unpacked into the object, which pushJsonbValue does; such rows take that path.
///
/// # Safety
/// `values`/`nulls` must be the deformed row the columns index into.
unsafe fn row_object(
    columns: &[Column],
    values: &[pg_sys::Datum],
    nulls: &[bool],
) -> pg_sys::Datum {
    let mut pairs: Vec<pg_sys::JsonbPair> = Vec::with_capacity(columns.len());
    for (order, c) in columns.iter().enumerate() {
        let mut pair: pg_sys::JsonbPair = std::mem::zeroed();
        string_value(
            &mut pair.key,
            c.name.as_ptr() as *mut std::ffi::c_char,
            c.name.as_bytes().len(),
        );
        if nulls[c.index] {
            pair.value.type_ = pg_sys::jbvType::jbvNull;
        } else {
            encode(&c.encoding, values[c.index], &mut pair.value);
        }
        pair.order = order as u32;
        pairs.push(pair);
    }
    if pairs
        .iter()
        .any(|p| p.value.type_ == pg_sys::jbvType::jbvBinary)
    {
        return pushed_object(&mut pairs);
    }
    let mut object: pg_sys::JsonbValue = std::mem::zeroed();
    object.type_ = pg_sys::jbvType::jbvObject;
    object.val.object.nPairs = pairs.len() as i32;
    object.val.object.pairs = pairs.as_mut_ptr();
    pg_sys::Datum::from(pg_sys::JsonbValueToJsonb(&mut object))
}

/// The same object built through pushJsonbValue, which unpacks container values.
///
/// # Safety
/// The pairs' values must be valid JsonbValues.
unsafe fn pushed_object(pairs: &mut [pg_sys::JsonbPair]) -> pg_sys::Datum {
    use pg_sys::JsonbIteratorToken::{WJB_BEGIN_OBJECT, WJB_END_OBJECT, WJB_KEY, WJB_VALUE};
    let mut state: *mut pg_sys::JsonbParseState = ptr::null_mut();
    pg_sys::pushJsonbValue(&mut state, WJB_BEGIN_OBJECT, ptr::null_mut());
    for p in pairs.iter_mut() {
        pg_sys::pushJsonbValue(&mut state, WJB_KEY, &mut p.key);
        pg_sys::pushJsonbValue(&mut state, WJB_VALUE, &mut p.value);
    }
    let res = pg_sys::pushJsonbValue(&mut state, WJB_END_OBJECT, ptr::null_mut());
    pg_sys::Datum::from(pg_sys::JsonbValueToJsonb(res))
}

/// A deformed heap tuple.
///
/// # Safety
/// `tuple` must be a tuple of `desc`.
unsafe fn deform(
    tuple: pg_sys::HeapTuple,
    desc: pg_sys::TupleDesc,
) -> (Vec<pg_sys::Datum>, Vec<bool>) {
    let n = (*desc).natts as usize;
    let mut values = vec![pg_sys::Datum::from(0); n];
    let mut nulls = vec![true; n];
    pg_sys::heap_deform_tuple(tuple, desc, values.as_mut_ptr(), nulls.as_mut_ptr());
    (values, nulls)
}

/// True when the column's value is the same in both rows (NULLs equal, values byte-equal).
///
/// # Safety
/// The slices must be deformed rows of the same descriptor.
#[allow(clippy::too_many_arguments)]
unsafe fn same(
    i: usize,
    typlen: i16,
    byval: bool,
    a: &[pg_sys::Datum],
    an: &[bool],
    b: &[pg_sys::Datum],
    bn: &[bool],
) -> bool {
    match (an[i], bn[i]) {
        (true, true) => true,
        (false, false) => {
            pg_sys::ffi::pg_guard_ffi_boundary(|| datum_image_eq(a[i], b[i], byval, typlen as i32))
        }
        _ => false,
    }
}

/// True when two versions of a row hold byte-identical data: same null bitmap, same attribute
/// bytes (an unchanged TOASTed value keeps its pointer). No deforming, one memcmp.
///
/// # Safety
/// Both must be valid heap tuples of the same relation.
unsafe fn same_bytes(a: pg_sys::HeapTuple, b: pg_sys::HeapTuple) -> bool {
    let (ha, hb) = ((*a).t_data, (*b).t_data);
    let mask = pg_sys::HEAP_NATTS_MASK as u16;
    if (*a).t_len != (*b).t_len
        || (*ha).t_hoff != (*hb).t_hoff
        || ((*ha).t_infomask2 & mask) != ((*hb).t_infomask2 & mask)
        || ((*ha).t_infomask ^ (*hb).t_infomask) & pg_sys::HEAP_HASNULL as u16 != 0
    {
        return false;
    }
    let start = std::mem::offset_of!(pg_sys::HeapTupleHeaderData, t_bits);
    let len = (*a).t_len as usize - start;
    let pa = std::slice::from_raw_parts((ha as *const u8).add(start), len);
    let pb = std::slice::from_raw_parts((hb as *const u8).add(start), len);
    pa == pb
}

/// Registry facts about an audited table: is it audited, and its tenant column.
fn registry_facts(relid: pg_sys::Oid) -> Option<(bool, String, Vec<i16>)> {
    thread_local! {
        static PLAN: OnceCell<OwnedPreparedStatement> = const { OnceCell::new() };
    }
    kept_select(
        &PLAN,
        "SELECT COALESCE((r.options ->> 'audit')::boolean, false), r.tenant_column::text,
                (SELECT i.indkey::int2[] FROM pg_catalog.pg_index i
                  WHERE i.indrelid = r.relid AND i.indisprimary)
           FROM tenantguard.registry r WHERE r.relid = $1",
        &[OID],
        &[relid.into()],
        |rows| {
            let mut out = None;
            for row in rows {
                out = Some((
                    row.get::<bool>(1)?.unwrap_or(false),
                    row.get::<String>(2)?.unwrap_or_default(),
                    row.get::<Vec<i16>>(3)?.unwrap_or_default(),
                ));
            }
            Ok(out)
        },
    )
}

fn rel_display(rel: pg_sys::Relation) -> String {
    // SAFETY: an open relation's name and namespace.
    unsafe {
        let nsp = pg_sys::get_namespace_name((*(*rel).rd_rel).relnamespace);
        let name = CStr::from_ptr((*(*rel).rd_rel).relname.data.as_ptr()).to_string_lossy();
        if nsp.is_null() {
            name.into_owned()
        } else {
            format!("{}.{}", CStr::from_ptr(nsp).to_string_lossy(), name)
        }
    }
}

fn build_audit_meta(rel: pg_sys::Relation, args: &[String]) -> AuditMeta {
    // SAFETY: an open relation.
    let relid = unsafe { (*rel).rd_id };
    let Some((true, tenant_column, key_attnums)) = registry_facts(relid) else {
        raise(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!(
                "table \"{}\" is not audited by tenantguard",
                rel_display(rel)
            ),
            "The audit trigger is attached by tenantguard.protect(tbl, audit => true); drop this trigger.",
        );
    };
    let skip_noop = args.first().map(String::as_str) != Some("keep_noop");
    let excluded: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
    let cxt = OwnedContext::new(c"tenantguard audit metadata");
    // SAFETY: the relation's descriptor, read while the relation is open.
    let atts = unsafe { live_attributes((*rel).rd_att) };
    let column = |i: usize, att: &pg_sys::FormData_pg_attribute| Column {
        index: i,
        name: CString::new(attname(att)).expect("attribute names have no NUL"),
        encoding: encoding_for(&cxt, att),
    };
    // In jsonb's key order (shorter keys first, then bytewise), as row_object() needs them.
    let jsonb_order = |a: &Column, b: &Column| {
        let (a, b) = (a.name.as_bytes(), b.name.as_bytes());
        a.len().cmp(&b.len()).then(a.cmp(b))
    };
    let mut values: Vec<Column> = atts
        .iter()
        .filter(|(_, att)| !excluded.contains(&attname(att).as_str()))
        .map(|(i, att)| column(*i, att))
        .collect();
    values.sort_by(jsonb_order);
    let mut key: Vec<Column> = key_attnums
        .iter()
        .filter_map(|&n| atts.iter().find(|(i, _)| *i as i16 == n - 1))
        .map(|(i, att)| column(*i, att))
        .collect();
    key.sort_by(jsonb_order);
    let all = atts
        .iter()
        .map(|(i, att)| {
            (
                *i,
                att.attlen,
                att.attbyval,
                CString::new(attname(att)).expect("attribute names have no NUL"),
                !excluded.contains(&attname(att).as_str()),
            )
        })
        .collect();
    let tenant = atts
        .iter()
        .find(|(_, att)| attname(att) == tenant_column)
        .map(|(i, att)| {
            // SAFETY: catalog lookup.
            let base = unsafe { pg_sys::getBaseType(att.atttypid) };
            let how = if base == pg_sys::TEXTOID || base == pg_sys::VARCHAROID {
                TenantText::AsIs
            } else if base == pg_sys::UUIDOID {
                TenantText::Uuid
            } else {
                TenantText::Output(output_fmgr(&cxt, att.atttypid))
            };
            (*i, how)
        });
    // SAFETY: the open relation's name, copied.
    let relname = Box::new(unsafe { (*(*rel).rd_rel).relname });
    AuditMeta {
        skip_noop,
        values,
        key,
        all,
        tenant,
        relname,
        _cxt: cxt,
    }
}

fn audit_meta(rel: pg_sys::Relation, trigger: *const pg_sys::Trigger) -> Rc<AuditMeta> {
    register_callback();
    // SAFETY: an open relation and its trigger.
    let key = unsafe { ((*rel).rd_id, (*trigger).tgoid) };
    if let Some(m) = AUDIT_META.with(|m| m.borrow().get(&key).cloned()) {
        return m;
    }
    // SAFETY: the trigger of this trigger call.
    let meta = Rc::new(build_audit_meta(rel, &unsafe { trigger_args(trigger) }));
    AUDIT_META.with(|m| m.borrow_mut().insert(key, meta.clone()));
    meta
}

fn build_target() -> AuditTarget {
    // SAFETY: catalog lookups by name.
    let oid = unsafe {
        let nsp = pg_sys::get_namespace_oid(c"tenantguard".as_ptr(), false);
        pg_sys::get_relname_relid(c"_audit_log".as_ptr(), nsp)
    };
    if oid == pg_sys::InvalidOid {
        raise(
            PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
            "tenantguard._audit_log does not exist",
            "Reinstall the extension, or unprotect() the table to detach its audit trigger.",
        );
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
                COALESCE(pg_catalog.pg_get_serial_sequence('tenantguard._audit_log', 'id')::pg_catalog.regclass::oid, 0)
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
        let atts = live_attributes(desc);
        let mut slots = [0usize; FIELDS.len()];
        let mut shape_ok = seq != pg_sys::InvalidOid;
        for (k, (name, typid)) in FIELDS.iter().enumerate() {
            match atts.iter().find(|(_, a)| attname(a) == *name) {
                Some((i, a)) if a.atttypid == *typid => slots[k] = *i,
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
                "INSERT INTO tenantguard._audit_log ({}) VALUES ({})",
                cols.join(", "),
                params.join(", ")
            ))
            .expect("no NUL");
            let mut types: Vec<pg_sys::Oid> = FIELDS.iter().map(|(_, t)| *t).collect();
            pg_sys::SPI_connect();
            let p = pg_sys::SPI_prepare(sql.as_ptr(), types.len() as i32, types.as_mut_ptr());
            if p.is_null() {
                pg_sys::SPI_finish();
                raise(
                    PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                    "tenantguard._audit_log does not accept audit rows",
                    "Its columns must keep the names and types CREATE EXTENSION gave them.",
                );
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

fn target() -> Rc<AuditTarget> {
    register_callback();
    if let Some(t) = TARGET.with(|t| t.borrow().clone()) {
        return t;
    }
    let t = Rc::new(build_target());
    TARGET.with(|x| *x.borrow_mut() = Some(t.clone()));
    t
}

/// A `name` datum, palloc'd in the current memory context.
///
/// # Safety
/// `s` must be a valid C string.
unsafe fn name_datum(s: *const std::ffi::c_char) -> pg_sys::Datum {
    let n = pg_sys::palloc0(pg_sys::NAMEDATALEN as usize) as *mut pg_sys::NameData;
    pg_sys::namestrcpy(n, s);
    pg_sys::Datum::from(n)
}

fn text_datum(s: &[u8]) -> pg_sys::Datum {
    // SAFETY: copies the bytes into a new text value.
    pg_sys::Datum::from(unsafe {
        pg_sys::cstring_to_text_with_len(s.as_ptr() as *const std::ffi::c_char, s.len() as i32)
    })
}

/// The operation's name as a text datum, made once per backend.
fn op_text(op: &str) -> pg_sys::Datum {
    const OPS: [&str; 4] = ["INSERT", "UPDATE", "DELETE", "TRUNCATE"];
    let texts = OP_TEXTS.with(|t| {
        *t.get_or_init(|| {
            // SAFETY: four small text values in TopMemoryContext, kept for the backend's life.
            unsafe {
                let old = pg_sys::MemoryContextSwitchTo(pg_sys::TopMemoryContext);
                let texts = OPS.map(|o| text_datum(o.as_bytes()));
                pg_sys::MemoryContextSwitchTo(old);
                texts
            }
        })
    });
    texts[OPS
        .iter()
        .position(|o| *o == op)
        .expect("a known operation")]
}

/// One audit row, as datums in the order of FIELDS (None = NULL).
struct AuditRow {
    op: &'static str,
    /// The table's name, a `name` datum.
    relname: pg_sys::Datum,
    tenant: Option<pg_sys::Datum>,
    record_key: Option<pg_sys::Datum>,
    old_values: Option<pg_sys::Datum>,
    new_values: Option<pg_sys::Datum>,
    changed: Option<pg_sys::Datum>,
}

/// Writes one audit row for `rel`.
///
/// # Safety
/// `rel` must be the open relation the trigger fired for; datums must be valid in the current
/// memory context.
unsafe fn write_row(rel: pg_sys::Relation, row: AuditRow) {
    let target = target();
    let mut datums: [Option<pg_sys::Datum>; FIELDS.len()] = [None; FIELDS.len()];
    datums[0] = Some(pg_sys::Datum::from(raw::GetCurrentTimestamp()));
    datums[1] = Some(pg_sys::Datum::from(raw::GetCurrentStatementStartTimestamp()));
    datums[2] = Some(pg_sys::Datum::from(
        pg_sys::GetTopFullTransactionId().value as i64,
    ));
    let schema = cached_name(b'n', (*(*rel).rd_rel).relnamespace);
    let db_user = cached_name(b'r', raw::GetUserId());
    let session_user = cached_name(b'r', raw::GetSessionUserId());
    datums[3] = Some(name_ref(&schema));
    datums[4] = Some(row.relname);
    datums[5] = Some(pg_sys::Datum::from((*rel).rd_id));
    datums[6] = Some(op_text(row.op));
    datums[7] = row.tenant;
    datums[8] = row.record_key;
    datums[9] = row.old_values;
    datums[10] = row.new_values;
    datums[11] = row.changed;
    datums[12] = Some(name_ref(&db_user));
    datums[13] = Some(name_ref(&session_user));
    let app_user = crate::settings::named_setting(1);
    datums[14] = if app_user.is_null() || *app_user == 0 {
        None
    } else {
        Some(text_datum(CStr::from_ptr(app_user).to_bytes()))
    };
    let app = pg_sys::application_name;
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
            pg_sys::CatalogTupleInsertWithInfo(audit, tuple, open.indexes);
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
            raise(
                PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                format!("tenantguard could not write an audit row (SPI code {rc})"),
                "Check that tenantguard._audit_log accepts inserts from its owner.",
            );
        }
    }
}

/// The session's tenant for a TRUNCATE row, written as the table's tenant column prints it (a
/// uuid in lower case, a number without leading zeros), as row operations write it; text that is
/// not a value of that type is written as it is.
///
/// # Safety
/// `rel` must be the open relation the trigger fired for.
unsafe fn truncate_tenant(rel: pg_sys::Relation, setting: Vec<u8>) -> Vec<u8> {
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

unsafe fn tenant_of(
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

use pg_sys::{
    TRIGGER_EVENT_BEFORE, TRIGGER_EVENT_DELETE, TRIGGER_EVENT_INSERT, TRIGGER_EVENT_OPMASK,
    TRIGGER_EVENT_ROW, TRIGGER_EVENT_TRUNCATE, TRIGGER_EVENT_UPDATE,
};

crate::pg_finfo_v1!(pg_finfo_tenantguard_audit);

crate::pg_finfo_v1!(pg_finfo_tenantguard_set_updated_at);

/// The audit trigger: AFTER INSERT OR UPDATE OR DELETE FOR EACH ROW, and AFTER TRUNCATE FOR EACH
/// STATEMENT. Arguments: 'skip_noop' or 'keep_noop', then the excluded column names.
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
            raise(
                PgSqlErrorCode::ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED,
                "tenantguard.audit() must be an AFTER trigger",
                "tenantguard.protect() attaches it; do not attach it by hand.",
            );
        }
        let op = event & TRIGGER_EVENT_OPMASK;
        if op == TRIGGER_EVENT_TRUNCATE || event & TRIGGER_EVENT_ROW == 0 {
            if op == TRIGGER_EVENT_TRUNCATE {
                let tenant = crate::context::tenant_value()
                    .map(|t| text_datum(&truncate_tenant(rel, t.into_bytes())));
                write_row(
                    rel,
                    AuditRow {
                        op: "TRUNCATE",
                        relname: name_datum((*(*rel).rd_rel).relname.data.as_ptr()),
                        tenant,
                        record_key: None,
                        old_values: None,
                        new_values: None,
                        changed: None,
                    },
                );
            }
            return pg_sys::Datum::from(0);
        }
        let meta = audit_meta(rel, (*td).tg_trigger);
        let desc = (*rel).rd_att;
        let row = match op {
            TRIGGER_EVENT_INSERT => {
                let (v, n) = deform((*td).tg_trigtuple, desc);
                AuditRow {
                    op: "INSERT",
                    relname: name_ref(&meta.relname),
                    tenant: tenant_of(&meta, &v, &n),
                    record_key: (!meta.key.is_empty()).then(|| row_object(&meta.key, &v, &n)),
                    old_values: None,
                    new_values: Some(row_object(&meta.values, &v, &n)),
                    changed: None,
                }
            }
            TRIGGER_EVENT_DELETE => {
                let (v, n) = deform((*td).tg_trigtuple, desc);
                AuditRow {
                    op: "DELETE",
                    relname: name_ref(&meta.relname),
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
                let (ov, on) = deform((*td).tg_trigtuple, desc);
                let (nv, nn) = deform((*td).tg_newtuple, desc);
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
                    tenant: tenant_of(&meta, &nv, &nn),
                    record_key: (!meta.key.is_empty()).then(|| row_object(&meta.key, &nv, &nn)),
                    old_values: Some(row_object(&meta.values, &ov, &on)),
                    new_values: Some(row_object(&meta.values, &nv, &nn)),
                    changed: Some(pg_sys::Datum::from(array)),
                }
            }
            _ => return pg_sys::Datum::from(0),
        };
        write_row(rel, row);
        pg_sys::Datum::from(0)
    }
}

fn build_updated_at_meta(rel: pg_sys::Relation, args: &[String]) -> UpdatedAtMeta {
    let column = args.first().map(String::as_str).unwrap_or("updated_at");
    let skip_noop = args.get(1).map(String::as_str) != Some("keep_noop");
    // SAFETY: the open relation's descriptor.
    let atts = unsafe { live_attributes((*rel).rd_att) };
    // The column (a domain counts as its base type). When a later ALTER TABLE dropped, renamed or
    // retyped it, the trigger does nothing rather than fail every UPDATE of the table; protect()
    // run again detaches it.
    let target = atts.iter().find(|(_, a)| attname(a) == column).and_then(
        // SAFETY: a catalog lookup of the column's type.
        |(index, att)| match unsafe { pg_sys::getBaseType(att.atttypid) } {
            pg_sys::TIMESTAMPTZOID => Some((*index, true)),
            pg_sys::TIMESTAMPOID => Some((*index, false)),
            _ => None,
        },
    );
    UpdatedAtMeta {
        target,
        skip_noop,
        // SAFETY: looks up a built-in function by its C name.
        to_timestamp: unsafe { pg_sys::fmgr_internal_function(c"timestamptz_timestamp".as_ptr()) },
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
            raise(
                PgSqlErrorCode::ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED,
                "tenantguard.set_updated_at() must be a BEFORE UPDATE FOR EACH ROW trigger",
                "tenantguard.protect() attaches it; do not attach it by hand.",
            );
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
        let tuple =
            pg_sys::heap_modify_tuple_by_cols(new, desc, 1, &mut attnum, &mut value, &mut isnull);
        pg_sys::Datum::from(tuple)
    }
}

extension_sql!(
    r#"
CREATE FUNCTION tenantguard.audit() RETURNS trigger
LANGUAGE c AS 'MODULE_PATHNAME', 'tenantguard_audit';
COMMENT ON FUNCTION tenantguard.audit() IS
  'Audit trigger attached by protect(): writes one tenantguard.audit_log row per changed row.';

CREATE FUNCTION tenantguard.set_updated_at() RETURNS trigger
LANGUAGE c AS 'MODULE_PATHNAME', 'tenantguard_set_updated_at';
COMMENT ON FUNCTION tenantguard.set_updated_at() IS
  'BEFORE UPDATE trigger attached by protect(): sets updated_at to the transaction timestamp.';
"#,
    name = "audit_functions",
    requires = ["bootstrap"]
);
