//! The session's tenant: `set_tenant()` and `current_tenant()`.
//!
//! Both go through the setting named by `tenantguard.tenant_setting`, so applications that already
//! `SET app.current_tenant_id` (or `SET LOCAL` it behind a transaction-mode pooler) keep working.

use crate::catalog::{kept_first, TEXT};
use crate::gucs;
use crate::raw;
use pgrx::prelude::*;
use pgrx::spi::OwnedPreparedStatement;
use pgrx::{PgBuiltInOids, PgOid};
use std::cell::OnceCell;
use std::ffi::{CStr, CString};
use std::ptr;

/// The tenant setting's value, or `None` when it is unset or empty.
pub fn tenant_value() -> Option<String> {
    let name = CString::new(gucs::tenant_setting()).expect("validated setting name has no NUL");
    // SAFETY: GetConfigOption returns NULL or a pointer into GUC memory that stays valid until the
    // next change of the setting; we copy it out at once.
    let raw = unsafe { pg_sys::GetConfigOption(name.as_ptr(), true, false) };
    if raw.is_null() {
        return None;
    }
    // SAFETY: non-null, NUL-terminated, valid until the setting changes; copied at once.
    let value = unsafe { CStr::from_ptr(raw) }
        .to_string_lossy()
        .into_owned();
    (!value.is_empty()).then_some(value)
}

#[pg_extern(stable, parallel_safe)]
fn current_tenant() -> Option<String> {
    tenant_value()
}

/// Sets the tenant for the transaction (`is_local`, the default) or the session. NULL or '' clears it.
#[pg_extern(volatile, parallel_unsafe)]
fn set_tenant(tenant: Option<&str>, is_local: default!(bool, true)) -> Option<String> {
    let _internal = crate::session::Internal::enter();
    // Applications call this once per request: the plan is kept per backend, not re-planned.
    thread_local! {
        static PLAN: OnceCell<OwnedPreparedStatement> = const { OnceCell::new() };
    }
    let name = gucs::tenant_setting();
    kept_first::<String>(
        &PLAN,
        "SELECT pg_catalog.set_config($1, $2, $3)",
        &[TEXT, TEXT, PgOid::BuiltIn(PgBuiltInOids::BOOLOID)],
        &[name.into(), tenant.unwrap_or("").into(), is_local.into()],
    );
    tenant_value()
}

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

extension_sql!(
    r#"
-- What tenantguard's policies compare the tenant column with: the named setting, NULL when it is
-- unset or empty (so it matches no row), parsed once per change of the setting rather than once
-- per query. STABLE, like current_setting(): evaluated once per scan, so an index serves it.
CREATE FUNCTION tenantguard.tenant_uuid(setting text) RETURNS uuid
LANGUAGE c STABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'tenantguard_tenant_uuid';
CREATE FUNCTION tenantguard.tenant_bigint(setting text) RETURNS bigint
LANGUAGE c STABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'tenantguard_tenant_bigint';
CREATE FUNCTION tenantguard.tenant_integer(setting text) RETURNS integer
LANGUAGE c STABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'tenantguard_tenant_integer';
CREATE FUNCTION tenantguard.tenant_smallint(setting text) RETURNS smallint
LANGUAGE c STABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'tenantguard_tenant_smallint';
CREATE FUNCTION tenantguard.tenant_text(setting text) RETURNS text
LANGUAGE c STABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'tenantguard_tenant_text';
"#,
    name = "tenant_values",
    requires = ["bootstrap"]
);

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn set_and_read_tenant() {
        assert_eq!(
            Spi::get_one::<String>("SELECT tenantguard.current_tenant()").unwrap(),
            None
        );
        Spi::run("SELECT tenantguard.set_tenant('acme')").unwrap();
        assert_eq!(
            Spi::get_one::<String>("SELECT current_setting('app.current_tenant_id')").unwrap(),
            Some("acme".into())
        );
        assert_eq!(
            Spi::get_one::<String>("SELECT tenantguard.current_tenant()").unwrap(),
            Some("acme".into())
        );
        Spi::run("SELECT tenantguard.set_tenant('')").unwrap();
        assert_eq!(
            Spi::get_one::<String>("SELECT tenantguard.current_tenant()").unwrap(),
            None
        );
        Spi::run("SET app.current_tenant_id = 'globex'").unwrap();
        assert_eq!(
            Spi::get_one::<String>("SELECT tenantguard.current_tenant()").unwrap(),
            Some("globex".into())
        );
    }

    #[pg_test]
    fn tenant_setting_name_follows_the_guc() {
        Spi::run("SET tenantguard.tenant_setting = 'myapp.org'").unwrap();
        Spi::run("SELECT tenantguard.set_tenant('o1')").unwrap();
        assert_eq!(
            Spi::get_one::<String>("SELECT current_setting('myapp.org')").unwrap(),
            Some("o1".into())
        );
        assert_eq!(
            Spi::get_one::<String>("SELECT tenantguard.current_tenant()").unwrap(),
            Some("o1".into())
        );
    }

    fn one<T: IntoDatum + FromDatum>(sql: &str) -> Option<T> {
        Spi::get_one::<T>(sql).unwrap()
    }

    #[pg_test]
    fn tenant_values_follow_the_setting() {
        let u = |s: &str| {
            pgrx::Uuid::from_slice(&uuid::Uuid::parse_str(s).unwrap().into_bytes()).unwrap()
        };
        let get = || one::<pgrx::Uuid>("SELECT tenantguard.tenant_uuid('app.t')");
        assert_eq!(get(), None, "never set");
        Spi::run("SET app.t = ''").unwrap();
        assert_eq!(get(), None, "empty");
        Spi::run("SET app.t = '00000000-0000-0000-0000-000000000001'").unwrap();
        assert_eq!(get(), Some(u("00000000-0000-0000-0000-000000000001")));
        // The kept parse must follow a change of the setting.
        Spi::run("SET app.t = '00000000-0000-0000-0000-000000000002'").unwrap();
        assert_eq!(get(), Some(u("00000000-0000-0000-0000-000000000002")));
        Spi::run("SET app.n = '42'").unwrap();
        assert_eq!(
            one::<i64>("SELECT tenantguard.tenant_bigint('app.n')"),
            Some(42)
        );
        assert_eq!(
            one::<i32>("SELECT tenantguard.tenant_integer('app.n')"),
            Some(42)
        );
        assert_eq!(
            one::<i16>("SELECT tenantguard.tenant_smallint('app.n')"),
            Some(42)
        );
        Spi::run("SET app.n = '-7'").unwrap();
        assert_eq!(
            one::<i64>("SELECT tenantguard.tenant_bigint('app.n')"),
            Some(-7)
        );
        assert_eq!(
            one::<i16>("SELECT tenantguard.tenant_smallint('app.n')"),
            Some(-7)
        );
        assert_eq!(
            one::<String>("SELECT tenantguard.tenant_text('app.n')"),
            Some("-7".into())
        );
        Spi::run("SET app.n = ''").unwrap();
        assert_eq!(
            one::<String>("SELECT tenantguard.tenant_text('app.n')"),
            None
        );
        assert_eq!(
            one::<i64>("SELECT tenantguard.tenant_bigint('app.n')"),
            None
        );
    }

    #[pg_test(error = "invalid input syntax for type uuid: \"acme\"")]
    fn tenant_uuid_rejects_text_that_is_no_uuid() {
        Spi::run("SET app.t = 'acme'").unwrap();
        one::<pgrx::Uuid>("SELECT tenantguard.tenant_uuid('app.t')");
    }

    #[pg_test(error = "value \"70000\" is out of range for type smallint")]
    fn tenant_smallint_rejects_out_of_range() {
        Spi::run("SET app.n = '70000'").unwrap();
        one::<i16>("SELECT tenantguard.tenant_smallint('app.n')");
    }
}
