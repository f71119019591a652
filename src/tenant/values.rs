//! What the policies compare the tenant column with: `tenant_uuid(spec)` and its siblings for one
//! tenant, `tenant_uuids(spec)` and theirs for a list, `tenant_subtree_*` for a tenant and its
//! descendants. C functions that keep what they found per backend and look again only when the
//! setting's text changes.
//!
//! The spec names a setting, and optionally a JSON path into it (src/tenant/spec.rs). Under
//! `tenantguard.tenant_scope = transaction` a value set for the session counts as unset (with a
//! WARNING once per transaction that names the fix).

use crate::pg::raw;
use crate::pg::settings::{superuser_only, transaction_scoped, value_of, Finder};
use crate::tenant::spec::{self, Found};
use pgrx::prelude::*;
use std::cell::{Cell, RefCell};
use std::ffi::{c_char, CStr, CString};
use std::ptr;

/// The type a policy compares the tenant column with.
#[derive(Clone, Copy, PartialEq, Debug)]
pub(crate) enum Kind {
    Uuid,
    Int8,
    Int4,
    Int2,
    Text,
}

impl Kind {
    fn element_type(self) -> (pg_sys::Oid, i16, bool, c_char) {
        match self {
            Kind::Uuid => (pg_sys::UUIDOID, 16, false, b'c' as c_char),
            Kind::Int8 => (pg_sys::INT8OID, 8, true, b'd' as c_char),
            Kind::Int4 => (pg_sys::INT4OID, 4, true, b'i' as c_char),
            Kind::Int2 => (pg_sys::INT2OID, 2, true, b's' as c_char),
            Kind::Text => (pg_sys::TEXTOID, -1, false, b'i' as c_char),
        }
    }
}

/// What a spec found in the setting's current text, converted for one kind.
enum Value {
    None,
    /// One tenant: a by-value datum's bits, a uuid's 16 bytes, or text.
    One(Vec<u8>),
    /// A list of tenants, as the array datum's bytes.
    Array(Vec<u8>),
}

/// One spec read as one kind, one or many: the setting it names and what its last text gave.
struct Entry {
    kind: Kind,
    many: bool,
    spec: Vec<u8>,
    name: Vec<u8>,
    path: Vec<String>,
    finder: Finder,
    raw: Option<Vec<u8>>,
    /// Whether `raw` was a verified token's tenant (no JSON path applies to it).
    raw_signed: bool,
    value: Value,
    /// Bumped each time `value` changes, for the per-call-site copies (`CallSite`).
    generation: u64,
}

/// What one call site (one FmgrInfo: one policy expression in one query) keeps between calls: the
/// entry, and the array datum it last returned, made in the call site's memory context. A list
/// function evaluated for every row of a scan then returns the same datum, without a copy, while
/// the setting's text stays the same.
struct CallSite {
    index: usize,
    generation: u64,
    datum: pg_sys::Datum,
}

/// Entries kept at most. Policies name one or two specs; only a caller passing ever new specs to
/// these functions gets near it, and the cache then starts over.
const MAX_ENTRIES: usize = 64;

thread_local! {
    static ENTRIES: RefCell<Vec<Entry>> = const { RefCell::new(Vec::new()) };
    /// The local transaction id in which the session-level WARNING was last given.
    static WARNED: Cell<u32> = const { Cell::new(0) };
}

/// The entry for (spec, kind, many), made on first use; None for a spec that does not parse (a
/// policy is created only with a valid one; a caller passing garbage gets NULL).
fn entry_index(spec_bytes: &[u8], kind: Kind, many: bool) -> Option<usize> {
    ENTRIES.with(|c| {
        let mut c = c.borrow_mut();
        if let Some(i) = c
            .iter()
            .position(|e| e.kind == kind && e.many == many && e.spec == spec_bytes)
        {
            return Some(i);
        }
        let parsed = spec::parse(std::str::from_utf8(spec_bytes).ok()?).ok()?;
        if c.len() >= MAX_ENTRIES {
            c.clear();
        }
        c.push(Entry {
            kind,
            many,
            spec: spec_bytes.to_vec(),
            name: parsed.name.into_bytes(),
            path: parsed.path,
            finder: Finder::new(),
            raw: None,
            raw_signed: false,
            value: Value::None,
            generation: 0,
        });
        Some(c.len() - 1)
    })
}

thread_local! {
    /// The verified token tenant, copied for `current_text` to lend out.
    static SIGNED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// The tenant text for an entry and whether it came from a verified token: under
/// tenantguard.require_signed_tenant only that (src/tenant/token.rs), else the setting's current
/// text. None when unset, empty, or (under tenant_scope = transaction) set for the session.
/// Reading a superuser-only setting needs the privilege current_setting() needs, and raises
/// otherwise.
///
/// # Safety
/// Runs inside a transaction; may raise (the privilege check) only from GetConfigOption. The
/// slice is valid until the setting or the verified tenant changes.
unsafe fn current_text<'a>(index: usize) -> Option<(&'a [u8], bool)> {
    if crate::tenant::token::required() {
        let tenant = crate::tenant::token::verified_tenant()?;
        return SIGNED.with(|s| {
            let mut s = s.borrow_mut();
            if *s != tenant {
                *s = tenant;
            }
            // The buffer is replaced only here, when the verified tenant changes.
            Some((std::slice::from_raw_parts(s.as_ptr(), s.len()), true))
        });
    }
    setting_text(index).map(|t| (t, false))
}

/// The setting's current text for an entry (see `current_text`).
///
/// # Safety
/// As `current_text`.
unsafe fn setting_text<'a>(index: usize) -> Option<&'a [u8]> {
    let (var, name) = ENTRIES.with(|c| {
        let mut c = c.borrow_mut();
        let e = &mut c[index];
        (e.finder.find(&e.name), e.name.as_ptr())
    });
    if var.is_null() {
        return None;
    }
    let raw = if superuser_only(var) {
        raw::GetConfigOption((*var).name, true, true)
    } else {
        value_of(var)
    };
    if raw.is_null() || *raw == 0 {
        return None;
    }
    if crate::gucs::tenant_scope_transaction() && !transaction_scoped(var) {
        let _ = name;
        warn_session_level((*var).name);
        return None;
    }
    Some(CStr::from_ptr(raw).to_bytes())
}

/// The WARNING for a tenant set for the session under tenant_scope = transaction, once per
/// transaction.
#[pg_guard]
unsafe extern "C-unwind" fn warn_session_level(name: *const c_char) {
    let xid = raw::my_local_xid();
    if WARNED.with(|w| w.replace(xid)) == xid {
        return;
    }
    let name = CStr::from_ptr(name).to_string_lossy().into_owned();
    crate::errors::Error::SessionTenant { setting: &name }.warn();
}

/// Converts one tenant's text for `kind` (bad text fails like a cast: 22P02, 22003).
unsafe fn convert_one(kind: Kind, text: &[u8]) -> Option<Vec<u8>> {
    if kind == Kind::Text {
        return Some(text.to_vec());
    }
    let c = CString::new(text).ok()?; // a NUL byte: no tenant
    let input: unsafe extern "C-unwind" fn(pg_sys::FunctionCallInfo) -> pg_sys::Datum = match kind {
        Kind::Uuid => raw::uuid_in,
        Kind::Int8 => raw::int8in,
        Kind::Int4 => raw::int4in,
        Kind::Int2 | Kind::Text => raw::int2in,
    };
    let d = pg_sys::ffi::pg_guard_ffi_boundary(|| {
        raw::DirectFunctionCall1Coll(
            Some(input),
            pg_sys::InvalidOid,
            pg_sys::Datum::from(c.as_ptr()),
        )
    });
    Some(match kind {
        Kind::Uuid => std::slice::from_raw_parts(d.cast_mut_ptr::<u8>(), 16).to_vec(),
        _ => (d.value() as i64).to_ne_bytes().to_vec(),
    })
}

/// A datum from a converted tenant, palloc'd where it is not by value.
unsafe fn datum_of(kind: Kind, bytes: &[u8]) -> pg_sys::Datum {
    match kind {
        Kind::Uuid => {
            let p = raw::palloc(16) as *mut u8;
            ptr::copy_nonoverlapping(bytes.as_ptr(), p, 16);
            pg_sys::Datum::from(p)
        }
        Kind::Text => pg_sys::Datum::from(raw::cstring_to_text_with_len(
            bytes.as_ptr() as *const c_char,
            bytes.len() as i32,
        )),
        _ => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[..8]);
            pg_sys::Datum::from(i64::from_ne_bytes(b))
        }
    }
}

/// An array datum of the tenants (converted for `kind`), as bytes to keep.
unsafe fn array_bytes(kind: Kind, items: &[Vec<u8>]) -> Vec<u8> {
    let (elem, len, byval, align) = kind.element_type();
    let mut datums: Vec<pg_sys::Datum> = items.iter().map(|b| datum_of(kind, b)).collect();
    let array = pg_sys::construct_array(
        datums.as_mut_ptr(),
        datums.len() as i32,
        elem,
        len as i32,
        byval,
        align,
    );
    let size = pgrx::varlena::varsize_any(array as *const pg_sys::varlena);
    std::slice::from_raw_parts(array as *const u8, size).to_vec()
}

/// Finds and converts the entry's tenants in `text` (a cache miss). Inside pgrx's error
/// boundary: conversions may raise, and this frame owns memory.
#[pg_guard]
unsafe extern "C-unwind" fn fill(index: usize, text: *const u8, len: usize, signed: bool) {
    let text = std::slice::from_raw_parts(text, len);
    let (kind, many, path) = ENTRIES.with(|c| {
        let c = c.borrow();
        // A verified token's tenant is the claim itself: no setting's JSON path applies.
        let path = if signed {
            Vec::new()
        } else {
            c[index].path.clone()
        };
        (c[index].kind, c[index].many, path)
    });
    let found = spec::find(text, &path);
    let value = if many {
        let items = spec::list(found);
        let converted: Vec<Vec<u8>> = items.iter().filter_map(|t| convert_one(kind, t)).collect();
        Value::Array(array_bytes(kind, &converted))
    } else {
        match found {
            // Several where one is expected is no tenant: the table was protected for one.
            Found::None | Found::Many(_) => Value::None,
            Found::One(t) => convert_one(kind, &t).map_or(Value::None, Value::One),
        }
    };
    ENTRIES.with(|c| {
        let mut c = c.borrow_mut();
        c[index].raw = Some(text.to_vec());
        c[index].raw_signed = signed;
        c[index].value = value;
        c[index].generation += 1;
    });
}

/// Does the entry hold what `text` gives?
fn is_kept(index: usize, text: &[u8], signed: bool) -> bool {
    ENTRIES.with(|c| {
        let c = c.borrow();
        c[index].raw.as_deref() == Some(text) && c[index].raw_signed == signed
    })
}

/// The call's spec argument as bytes.
///
/// # Safety
/// `fcinfo` is a call with a non-null text first argument.
unsafe fn spec_arg<'a>(fcinfo: pg_sys::FunctionCallInfo) -> &'a [u8] {
    let arg = pgrx::fcinfo::pg_getarg_datum_raw(fcinfo, 0);
    let text = raw::pg_detoast_datum_packed(arg.cast_mut_ptr());
    pgrx::varlena::varlena_to_byte_slice(text)
}

/// What the policy functions return: the tenant (or the array of tenants) for the call's spec,
/// NULL when there is none. A cache hit costs a setting lookup and a comparison of its text.
///
/// # Safety
/// `fcinfo` is a call with one non-null text argument.
unsafe fn tenant_datum(fcinfo: pg_sys::FunctionCallInfo, kind: Kind, many: bool) -> pg_sys::Datum {
    let Some(index) = entry_index(spec_arg(fcinfo), kind, many) else {
        return pgrx::fcinfo::pg_return_null(fcinfo);
    };
    let Some((text, signed)) = current_text(index) else {
        return pgrx::fcinfo::pg_return_null(fcinfo);
    };
    if !is_kept(index, text, signed) {
        fill(index, text.as_ptr(), text.len(), signed);
    }
    ENTRIES.with(|c| {
        let c = c.borrow();
        let e = &c[index];
        match &e.value {
            Value::None => pgrx::fcinfo::pg_return_null(fcinfo),
            Value::One(b) => datum_of(kind, b),
            Value::Array(b) => {
                let flinfo = (*fcinfo).flinfo;
                if flinfo.is_null() {
                    let p = raw::palloc(b.len()) as *mut u8;
                    ptr::copy_nonoverlapping(b.as_ptr(), p, b.len());
                    return pg_sys::Datum::from(p);
                }
                let site = (*flinfo).fn_extra as *mut CallSite;
                if !site.is_null() && (*site).index == index && (*site).generation == e.generation {
                    return (*site).datum;
                }
                // A copy in the call site's memory context, kept for the next call.
                let p = raw::MemoryContextAlloc((*flinfo).fn_mcxt, b.len()) as *mut u8;
                ptr::copy_nonoverlapping(b.as_ptr(), p, b.len());
                let site = if site.is_null() {
                    let s =
                        raw::MemoryContextAlloc((*flinfo).fn_mcxt, std::mem::size_of::<CallSite>())
                            as *mut CallSite;
                    (*flinfo).fn_extra = s as *mut std::ffi::c_void;
                    s
                } else {
                    site
                };
                site.write(CallSite {
                    index,
                    generation: e.generation,
                    datum: pg_sys::Datum::from(p),
                });
                pg_sys::Datum::from(p)
            }
        }
    })
}

/// The session's tenant for the tenant setting `spec`, as text (what `current_tenant()` returns).
pub(crate) fn tenant_text(spec_text: &str) -> Option<String> {
    let index = entry_index(spec_text.as_bytes(), Kind::Text, false)?;
    // SAFETY: inside a transaction (a SQL function's call).
    unsafe {
        let (text, signed) = current_text(index)?;
        if !is_kept(index, text, signed) {
            fill(index, text.as_ptr(), text.len(), signed);
        }
    }
    ENTRIES.with(|c| match &c.borrow()[index].value {
        Value::One(b) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    })
}

/// The session's tenant text for `spec`, as it is (before any JSON path), and whether it came from
/// a verified token: what a hierarchy call site compares to know that its roots are unchanged.
/// None when there is no tenant.
pub(crate) fn roots_text(spec_bytes: &[u8]) -> Option<(Vec<u8>, bool)> {
    let index = entry_index(spec_bytes, Kind::Text, false)?;
    // SAFETY: inside a transaction (a policy's or SQL function's call).
    unsafe { current_text(index) }.map(|(t, signed)| (t.to_vec(), signed))
}

/// The session's tenants for `spec` as text: the one tenant, or (with `many`) the list; empty
/// when there is none. For the hierarchy functions, once per statement.
pub(crate) fn tenant_texts(spec_text: &str, many: bool) -> Vec<String> {
    let Some(index) = entry_index(spec_text.as_bytes(), Kind::Text, false) else {
        return Vec::new();
    };
    // SAFETY: inside a transaction (a SQL function's call).
    let Some((text, signed)) = (unsafe { current_text(index) }) else {
        return Vec::new();
    };
    let path = if signed {
        Vec::new()
    } else {
        ENTRIES.with(|c| c.borrow()[index].path.clone())
    };
    let found = spec::find(text, &path);
    let items = if many {
        spec::list(found)
    } else {
        match found {
            Found::One(t) => vec![t],
            _ => Vec::new(),
        }
    };
    items
        .into_iter()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .collect()
}

thread_local! {
    /// (setting text, what the tenant setting's JSON path found in it, NUL-terminated) for the
    /// slow-query log.
    static FOR_LOG: RefCell<(Vec<u8>, CString)> = RefCell::new((Vec::new(), CString::default()));
}

/// For the slow-query log (outside pgrx's error boundary, never raises): what the tenant setting's
/// JSON path finds in `value`, cached per text; NULL when nothing.
///
/// # Safety
/// `value` is the setting's NUL-terminated current text.
pub(crate) unsafe fn found_for_log(value: *const c_char) -> *const c_char {
    let text = CStr::from_ptr(value).to_bytes();
    FOR_LOG.with(|f| {
        let Ok(mut f) = f.try_borrow_mut() else {
            return ptr::null();
        };
        if f.0 != text {
            let spec_text = crate::gucs::TENANT_SETTING
                .get()
                .and_then(|s| s.into_string().ok())
                .unwrap_or_default();
            let found = match spec::parse(&spec_text) {
                Ok(s) => match spec::find(text, &s.path) {
                    Found::One(v) => CString::new(v).unwrap_or_default(),
                    _ => CString::default(),
                },
                Err(_) => CString::default(),
            };
            *f = (text.to_vec(), found);
        }
        if f.1.as_bytes().is_empty() {
            ptr::null()
        } else {
            f.1.as_ptr()
        }
    })
}

macro_rules! tenant_fn {
    ($finfo:ident, $name:ident, $kind:expr, $many:expr) => {
        crate::pg_finfo_v1!($finfo);
        /// A policy's tenant value(s) for a spec (see `tenant_datum`). Not #[pg_guard]: a cache
        /// hit cannot raise; a miss goes through the guarded `fill`.
        #[no_mangle]
        pub extern "C-unwind" fn $name(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
            // SAFETY: declared in SQL as STRICT with one text argument.
            unsafe { tenant_datum(fcinfo, $kind, $many) }
        }
    };
}

tenant_fn!(
    pg_finfo_tenantguard_tenant_uuid,
    tenantguard_tenant_uuid,
    Kind::Uuid,
    false
);
tenant_fn!(
    pg_finfo_tenantguard_tenant_bigint,
    tenantguard_tenant_bigint,
    Kind::Int8,
    false
);
tenant_fn!(
    pg_finfo_tenantguard_tenant_integer,
    tenantguard_tenant_integer,
    Kind::Int4,
    false
);
tenant_fn!(
    pg_finfo_tenantguard_tenant_smallint,
    tenantguard_tenant_smallint,
    Kind::Int2,
    false
);
tenant_fn!(
    pg_finfo_tenantguard_tenant_text,
    tenantguard_tenant_text,
    Kind::Text,
    false
);
tenant_fn!(
    pg_finfo_tenantguard_tenant_uuids,
    tenantguard_tenant_uuids,
    Kind::Uuid,
    true
);
tenant_fn!(
    pg_finfo_tenantguard_tenant_bigints,
    tenantguard_tenant_bigints,
    Kind::Int8,
    true
);
tenant_fn!(
    pg_finfo_tenantguard_tenant_integers,
    tenantguard_tenant_integers,
    Kind::Int4,
    true
);
tenant_fn!(
    pg_finfo_tenantguard_tenant_smallints,
    tenantguard_tenant_smallints,
    Kind::Int2,
    true
);
tenant_fn!(
    pg_finfo_tenantguard_tenant_texts,
    tenantguard_tenant_texts,
    Kind::Text,
    true
);

/// The session's tenant as the slow-query log records it: the tenant setting's value, or what
/// its JSON path finds, and NULL for a session-level value under tenantguard.tenant_scope =
/// transaction. Never raises, never panics.
pub(crate) fn tenant_for_log() -> *const c_char {
    if crate::tenant::token::required() {
        thread_local! {
            static SIGNED: RefCell<CString> = RefCell::new(CString::default());
        }
        let tenant = crate::tenant::token::verified_tenant().unwrap_or_default();
        return SIGNED.with(|s| match s.try_borrow_mut() {
            Ok(mut s) => {
                if s.as_bytes() != tenant.as_slice() {
                    *s = CString::new(tenant).unwrap_or_default();
                }
                if s.as_bytes().is_empty() {
                    ptr::null()
                } else {
                    s.as_ptr()
                }
            }
            Err(_) => ptr::null(),
        });
    }
    let var = crate::pg::settings::lookup(0);
    if var.is_null() {
        return ptr::null();
    }
    // SAFETY: a live setting; the spec path only reads it.
    unsafe {
        if crate::gucs::tenant_scope_transaction() && !transaction_scoped(var) {
            return ptr::null();
        }
        let value = value_of(var);
        if value.is_null() || !crate::gucs::tenant_setting_has_path() {
            return value;
        }
        found_for_log(value)
    }
}
