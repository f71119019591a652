//! What the audit and updated_at triggers know about each relation, built once and kept in
//! backend-local caches that relcache invalidations clear: how each column becomes jsonb, the
//! primary key, the tenant column, the excluded columns, the updated_at column.

use crate::catalog::{kept_select, OID};
use crate::errors::Error;
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::spi::OwnedPreparedStatement;
use pgrx::{PgBuiltInOids, PgOid};
use std::cell::{Cell, OnceCell, RefCell};
use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::ptr;
use std::rc::Rc;

// The column types live with the encoder that reads them; the cache builds them.
pub(crate) use crate::audit::encode::{Column, Encoding};

/// FxHash-style hashing for the caches' small integer keys: SipHash, the default, cost more than
/// the rest of a lookup, and these maps are read several times for every audited row.
#[derive(Default)]
pub(crate) struct OidHasher(u64);

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

pub(crate) type OidMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<OidHasher>>;

/// A memory context that lives as long as the cache entry that owns it.
pub(crate) struct OwnedContext(pg_sys::MemoryContext);

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
pub(crate) struct AuditMeta {
    pub(crate) skip_noop: bool,
    /// Columns written to old_values/new_values (excluded columns left out).
    pub(crate) values: Vec<Column>,
    /// Primary key columns, for record_key; empty when the table has no primary key.
    pub(crate) key: Vec<Column>,
    /// Every live column: index, typlen, typbyval, name, and whether it is audited (not in
    /// audit_exclude); for changed_columns, which names only audited columns.
    pub(crate) all: Vec<(usize, i16, bool, CString, bool)>,
    /// The tenant column's index and how to turn it into text.
    pub(crate) tenant: Option<(usize, TenantText)>,
    /// The table's name when this entry was built (a rename invalidates the entry). On a Citus
    /// shard: the distributed table's name, and its oid and schema on this node.
    pub(crate) relname: Box<pg_sys::NameData>,
    pub(crate) table: pg_sys::Oid,
    pub(crate) namespace: pg_sys::Oid,
    /// False on a placement that leaves the row to another one: a reference table's change runs
    /// on every node that holds it, and only the first placement writes its audit row.
    pub(crate) writes: bool,
    /// Virtual generated columns (PostgreSQL 18), which the trigger's tuple holds as NULL.
    pub(crate) generated: crate::pg::generated::Virtual,
    pub(crate) _cxt: OwnedContext,
}

impl AuditMeta {
    /// A row of the table, deformed, with its virtual generated columns computed: the values
    /// `to_jsonb()` of the row shows.
    ///
    /// # Safety
    /// `tuple` must be a tuple of the relation this entry was built for.
    pub(crate) unsafe fn deform(
        &self,
        tuple: pg_sys::HeapTuple,
        desc: pg_sys::TupleDesc,
    ) -> (Vec<pg_sys::Datum>, Vec<bool>) {
        let (mut values, mut nulls) = crate::audit::encode::deform(tuple, desc);
        self.generated.compute(tuple, &mut values, &mut nulls);
        (values, nulls)
    }
}

pub(crate) enum TenantText {
    AsIs,
    Uuid,
    Output(*mut pg_sys::FmgrInfo),
}

/// What the updated_at trigger needs about one relation.
pub(crate) struct UpdatedAtMeta {
    /// The column's index and whether it is timestamptz (else timestamp); None when the table no
    /// longer has such a column.
    pub(crate) target: Option<(usize, bool)>,
    pub(crate) skip_noop: bool,
    /// timestamptz_timestamp, for a timestamp without time zone column.
    pub(crate) to_timestamp: pg_sys::Oid,
}

thread_local! {
    pub(crate) static AUDIT_META: RefCell<OidMap<(pg_sys::Oid, pg_sys::Oid), Rc<AuditMeta>>> =
        RefCell::new(OidMap::default());
    pub(crate) static UPDATED_AT_META: RefCell<OidMap<(pg_sys::Oid, pg_sys::Oid), Rc<UpdatedAtMeta>>> =
        RefCell::new(OidMap::default());
    pub(crate) static CALLBACK_REGISTERED: Cell<bool> = const { Cell::new(false) };
    pub(crate) static NAMES: RefCell<OidMap<(u8, pg_sys::Oid), Rc<pg_sys::NameData>>> = RefCell::new(OidMap::default());
}

#[pg_guard]
pub(crate) unsafe extern "C-unwind" fn relcache_invalidated(
    _arg: pg_sys::Datum,
    relid: pg_sys::Oid,
) {
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
    drop(dropped_audit);
    drop(dropped_updated);
}

#[pg_guard]
pub(crate) unsafe extern "C-unwind" fn names_invalidated(
    _arg: pg_sys::Datum,
    _cacheid: i32,
    _hash: u32,
) {
    let dropped = NAMES.with(|n| n.try_borrow_mut().map(|mut n| std::mem::take(&mut *n)));
    drop(dropped);
}

pub(crate) fn register_callback() {
    crate::pg::callbacks::register_once(
        &CALLBACK_REGISTERED,
        Some(relcache_invalidated),
        &[
            (pg_sys::SysCacheIdentifier::AUTHOID, names_invalidated),
            (pg_sys::SysCacheIdentifier::NAMESPACEOID, names_invalidated),
        ],
    );
}

/// A role's or schema's name as a `name` value, cached until the catalogs change. The caller
/// keeps the Rc while a datum points into it: an invalidation may empty the cache meanwhile.
pub(crate) fn cached_name(kind: u8, oid: pg_sys::Oid) -> Rc<pg_sys::NameData> {
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
pub(crate) fn name_ref(n: &pg_sys::NameData) -> pg_sys::Datum {
    pg_sys::Datum::from(n as *const pg_sys::NameData)
}

/// The trigger's arguments.
///
/// # Safety
/// `trigger` must be the Trigger of a trigger call.
pub(crate) unsafe fn trigger_args(trigger: *const pg_sys::Trigger) -> Vec<String> {
    let n = (*trigger).tgnargs as usize;
    (0..n)
        .map(|i| {
            CStr::from_ptr(*(*trigger).tgargs.add(i))
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

/// Live (not dropped) attributes of a tuple descriptor: index, attribute.
///
/// # Safety
/// `desc` must be a valid tuple descriptor.
pub(crate) unsafe fn live_attributes(
    desc: pg_sys::TupleDesc,
) -> Vec<(usize, &'static pg_sys::FormData_pg_attribute)> {
    let natts = (*desc).natts as usize;
    (0..natts)
        .filter_map(|i| {
            let att = &*crate::pg::nodes::tuple_desc_attr(desc, i);
            (!att.attisdropped).then_some((i, att))
        })
        .collect()
}

pub(crate) fn attname(att: &pg_sys::FormData_pg_attribute) -> String {
    // SAFETY: NameData holds a NUL-terminated string.
    unsafe { CStr::from_ptr(att.attname.data.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

/// An output function's FmgrInfo, allocated in `cxt`.
pub(crate) fn output_fmgr(cxt: &OwnedContext, typid: pg_sys::Oid) -> *mut pg_sys::FmgrInfo {
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
pub(crate) fn to_jsonb_fmgr(
    cxt: &OwnedContext,
    att: &pg_sys::FormData_pg_attribute,
) -> *mut pg_sys::FmgrInfo {
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

pub(crate) fn encoding_for(cxt: &OwnedContext, att: &pg_sys::FormData_pg_attribute) -> Encoding {
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

/// Registry facts about an audited table: is it audited, and its tenant column.
pub(crate) fn registry_facts(relid: pg_sys::Oid) -> Option<(bool, String, Vec<i16>)> {
    thread_local! {
        static PLAN: OnceCell<OwnedPreparedStatement> = const { OnceCell::new() };
    }
    crate::catalog::probe_select(
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

pub(crate) fn rel_display(rel: pg_sys::Relation) -> String {
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

/// The audit trigger's arguments: 'skip_noop' or 'keep_noop', then 'tenant=<column>' (from
/// 0.2.0; a shard on a Citus worker has no registry row to say it), then the excluded columns.
pub(crate) struct AuditArgs<'a> {
    pub(crate) skip_noop: bool,
    pub(crate) tenant_column: Option<&'a str>,
    pub(crate) excluded: Vec<&'a str>,
}

pub(crate) const TENANT_ARG: &str = "tenant=";

pub(crate) fn parse_audit_args(args: &[String]) -> AuditArgs<'_> {
    let skip_noop = args.first().map(String::as_str) != Some("keep_noop");
    let tenant_column = args.get(1).and_then(|a| a.strip_prefix(TENANT_ARG));
    let from = if tenant_column.is_some() { 2 } else { 1 };
    AuditArgs {
        skip_noop,
        tenant_column,
        excluded: args.iter().skip(from).map(String::as_str).collect(),
    }
}

/// A Citus shard's audit facts: its tenant column (from the trigger), its primary key, the
/// distributed table it belongs to, and whether this placement writes the rows.
fn shard_facts(
    shard: pg_sys::Oid,
    owner: pg_sys::Oid,
    shard_id: i64,
    tenant_column: Option<&str>,
) -> (String, Vec<i16>, bool) {
    thread_local! {
        static PLAN: OnceCell<OwnedPreparedStatement> = const { OnceCell::new() };
    }
    let (key, writes) = kept_select(
        &PLAN,
        "SELECT (SELECT i.indkey::int2[] FROM pg_catalog.pg_index i
                  WHERE i.indrelid = $1 AND i.indisprimary),
                COALESCE((SELECT pg_catalog.min(p.groupid) FROM pg_catalog.pg_dist_placement p
                           WHERE p.shardid = $2)
                         = (SELECT g.groupid FROM pg_catalog.pg_dist_local_group g), true)",
        &[OID, PgOid::BuiltIn(PgBuiltInOids::INT8OID)],
        &[shard.into(), shard_id.into()],
        |rows| {
            let mut out = (Vec::new(), true);
            for row in rows {
                out = (
                    row.get::<Vec<i16>>(1)?.unwrap_or_default(),
                    row.get::<bool>(2)?.unwrap_or(true),
                );
            }
            Ok(out)
        },
    );
    let Some(column) = tenant_column else {
        // A trigger from before 0.2.0 on a shard: its table was distributed after protect(),
        // which run again on the coordinator rewrites it.
        // SAFETY: a catalog lookup; NULL when the table is gone.
        let name = unsafe { pg_sys::get_rel_name(owner) };
        let table = if name.is_null() {
            owner.to_u32().to_string()
        } else {
            // SAFETY: a palloc'd NUL-terminated name.
            unsafe { CStr::from_ptr(name) }
                .to_string_lossy()
                .into_owned()
        };
        Error::NotAudited { table: &table }.raise();
    };
    (column.to_string(), key, writes)
}

pub(crate) fn build_audit_meta(rel: pg_sys::Relation, args: &[String]) -> AuditMeta {
    // SAFETY: an open relation.
    let relid = unsafe { (*rel).rd_id };
    let parsed = parse_audit_args(args);
    let shard = crate::citus::shard_owner(relid);
    let (tenant_column, key_attnums, writes) = match shard {
        Some((owner, shard_id)) => shard_facts(relid, owner, shard_id, parsed.tenant_column),
        None => match registry_facts(relid) {
            Some((true, tenant_column, key)) => (tenant_column, key, true),
            _ => Error::NotAudited {
                table: &rel_display(rel),
            }
            .raise(),
        },
    };
    let skip_noop = parsed.skip_noop;
    let excluded = parsed.excluded;
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
    // SAFETY: the open relation's name and schema, copied; or the distributed table's, looked up.
    let (table, namespace, relname) = unsafe {
        match shard {
            Some((owner, _)) => {
                let mut name: pg_sys::NameData = std::mem::zeroed();
                let raw = pg_sys::get_rel_name(owner);
                if !raw.is_null() {
                    pg_sys::namestrcpy(&mut name, raw);
                }
                (owner, pg_sys::get_rel_namespace(owner), Box::new(name))
            }
            None => (
                relid,
                (*(*rel).rd_rel).relnamespace,
                Box::new((*(*rel).rd_rel).relname),
            ),
        }
    };
    // SAFETY: the open relation, in the entry's own memory context.
    let generated = unsafe { crate::pg::generated::Virtual::prepare(rel, cxt.0) };
    AuditMeta {
        skip_noop,
        values,
        key,
        all,
        tenant,
        relname,
        table,
        namespace,
        writes,
        generated,
        _cxt: cxt,
    }
}

pub(crate) fn audit_meta(rel: pg_sys::Relation, trigger: *const pg_sys::Trigger) -> Rc<AuditMeta> {
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

pub(crate) fn build_updated_at_meta(rel: pg_sys::Relation, args: &[String]) -> UpdatedAtMeta {
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
