//! What the policies compare the tenant column with: `tenant_uuid(setting)` and its siblings, C
//! functions that keep the parsed setting per backend and parse again only when its text changes.

use crate::pg::raw;
use pgrx::prelude::*;
use std::ffi::{CStr, CString};
use std::ptr;

/// The type a policy compares the tenant column with, and what parses the setting into it.
#[derive(Clone, Copy, PartialEq)]
enum Parsed {
    Uuid,
    Int8,
    Int4,
    Int2,
    Text,
}

// The policy functions call the server through crate::raw: an error (a bad tenant value, a
// setting the role may not read) passes through them as it is, like a cast in SQL would, without
// the Rust backtrace pgrx's boundary adds to the DETAIL when RUST_BACKTRACE is set.

/// One setting read as one type: its name, and the last text seen with the value it parsed to.
struct ParseCache {
    kind: Parsed,
    name: Vec<u8>,
    cname: CString,
    text: Option<Vec<u8>>,
    value: [u8; 16],
}

/// Entries kept at most. Policies name one or two settings; only a caller passing ever new setting
/// names to tenant_uuid() and its siblings gets near it, and the cache then starts over.
const MAX_PARSED: usize = 64;

thread_local! {
    // (setting, type) entries; emptied only when MAX_PARSED is reached.
    static PARSED: std::cell::RefCell<Vec<ParseCache>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The cache entry for the call's setting (its one text argument) read as `kind`, and the
/// setting's current value, or None when it is unset or empty. Reading a superuser-only setting
/// needs the privilege current_setting() needs.
///
/// # Safety
/// `fcinfo` must be a call with one non-null text argument; the returned bytes are valid until the
/// setting changes.
unsafe fn setting_of_call<'a>(
    fcinfo: pg_sys::FunctionCallInfo,
    kind: Parsed,
) -> (usize, Option<&'a [u8]>) {
    let arg = pgrx::fcinfo::pg_getarg_datum_raw(fcinfo, 0);
    let text = raw::pg_detoast_datum_packed(arg.cast_mut_ptr());
    let name = pgrx::varlena::varlena_to_byte_slice(text);
    let (index, cname) = PARSED.with(|c| {
        let mut c = c.borrow_mut();
        let index = match c.iter().position(|e| e.kind == kind && e.name == name) {
            Some(i) => i,
            None => {
                let Ok(cname) = CString::new(name) else {
                    return (usize::MAX, ptr::null());
                };
                if c.len() >= MAX_PARSED {
                    c.clear();
                }
                c.push(ParseCache {
                    kind,
                    name: name.to_vec(),
                    cname,
                    text: None,
                    value: [0; 16],
                });
                c.len() - 1
            }
        };
        // The CString's buffer stays put until the cache is emptied, which happens only in this
        // function: the pointer is used before the next call.
        (index, c[index].cname.as_ptr())
    });
    if cname.is_null() {
        return (index, None); // a name with a NUL byte names no setting
    }
    let raw = raw::GetConfigOption(cname, true, true);
    if raw.is_null() || *raw == 0 {
        return (index, None);
    }
    (index, Some(CStr::from_ptr(raw).to_bytes()))
}

/// The tenant setting parsed as `kind`, or NULL when it is unset or empty. The parse is kept per
/// setting and type and redone only when the setting's text changes, so a policy pays a lookup
/// and a comparison of a few bytes per query. Bad text fails like a cast would (22P02, 22003).
///
/// # Safety
/// `fcinfo` must be the call's FunctionCallInfo, with one non-null text argument.
unsafe fn parsed_setting(fcinfo: pg_sys::FunctionCallInfo, kind: Parsed) -> pg_sys::Datum {
    let (index, Some(text)) = setting_of_call(fcinfo, kind) else {
        return pgrx::fcinfo::pg_return_null(fcinfo);
    };
    let known = PARSED.with(|c| {
        let e = &c.borrow()[index];
        (e.text.as_deref() == Some(text)).then_some(e.value)
    });
    let value = match known {
        Some(v) => v,
        None => {
            let input: unsafe extern "C-unwind" fn(pg_sys::FunctionCallInfo) -> pg_sys::Datum =
                match kind {
                    Parsed::Uuid => raw::uuid_in,
                    Parsed::Int8 => raw::int8in,
                    Parsed::Int4 => raw::int4in,
                    Parsed::Int2 | Parsed::Text => raw::int2in, // text is never parsed
                };
            // The setting's own string is NUL-terminated; the input function may raise.
            let d = raw::DirectFunctionCall1Coll(
                Some(input),
                pg_sys::InvalidOid,
                pg_sys::Datum::from(text.as_ptr()),
            );
            let mut v = [0u8; 16];
            match kind {
                Parsed::Uuid => {
                    v.copy_from_slice(std::slice::from_raw_parts(d.cast_mut_ptr::<u8>(), 16))
                }
                _ => v[..8].copy_from_slice(&(d.value() as i64).to_ne_bytes()),
            }
            PARSED.with(|c| {
                let e = &mut c.borrow_mut()[index];
                e.text = Some(text.to_vec());
                e.value = v;
            });
            v
        }
    };
    if kind == Parsed::Uuid {
        let p = raw::palloc(16) as *mut u8;
        ptr::copy_nonoverlapping(value.as_ptr(), p, 16);
        pg_sys::Datum::from(p)
    } else {
        let mut b = [0u8; 8];
        b.copy_from_slice(&value[..8]);
        pg_sys::Datum::from(i64::from_ne_bytes(b))
    }
}

macro_rules! tenant_value_fn {
    ($finfo:ident, $name:ident, $kind:expr) => {
        crate::pg_finfo_v1!($finfo);
        /// A policy's tenant value: the named setting, parsed and cached (see `parsed_setting`).
        /// Not #[pg_guard]: nothing in it can panic, and server errors pass through (see `raw`).
        #[no_mangle]
        pub extern "C-unwind" fn $name(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
            // SAFETY: declared in SQL as STRICT with one text argument.
            unsafe { parsed_setting(fcinfo, $kind) }
        }
    };
}

tenant_value_fn!(
    pg_finfo_tenantguard_tenant_uuid,
    tenantguard_tenant_uuid,
    Parsed::Uuid
);
tenant_value_fn!(
    pg_finfo_tenantguard_tenant_bigint,
    tenantguard_tenant_bigint,
    Parsed::Int8
);
tenant_value_fn!(
    pg_finfo_tenantguard_tenant_integer,
    tenantguard_tenant_integer,
    Parsed::Int4
);
tenant_value_fn!(
    pg_finfo_tenantguard_tenant_smallint,
    tenantguard_tenant_smallint,
    Parsed::Int2
);

crate::pg_finfo_v1!(pg_finfo_tenantguard_tenant_text);
/// A policy's tenant value for text columns: the named setting, NULL when unset or empty.
/// Not #[pg_guard], like the others.
#[no_mangle]
pub extern "C-unwind" fn tenantguard_tenant_text(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    // SAFETY: declared in SQL as STRICT with one text argument.
    unsafe {
        match setting_of_call(fcinfo, Parsed::Text).1 {
            Some(t) => pg_sys::Datum::from(raw::cstring_to_text_with_len(
                t.as_ptr() as *const std::ffi::c_char,
                t.len() as i32,
            )),
            None => pgrx::fcinfo::pg_return_null(fcinfo),
        }
    }
}
