//! Reading the tenant and application-user settings on hot paths (every timed statement, every
//! audited row) without a lookup by name each time.
//!
//! `GetConfigOption` binary-searches the server's sorted array of settings, comparing names
//! case-insensitively: about 600 instructions per call through pgrx's error boundary (callgrind);
//! the two calls per statement were a quarter of what slow-query capture cost a `pgbench -S`
//! statement.
//! On PostgreSQL 14 and 15 each of the two settings remembers where it sits in that array and
//! checks, in a few instructions, that it still does before reading its value directly. From 16
//! on the settings live in a hash table, and one hash lookup (`find_option`) finds the setting.

use crate::gucs;
use crate::pg::raw;
use pgrx::pg_sys;
use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};
use std::ptr;

#[cfg(any(feature = "pg14", feature = "pg15"))]
/// Where one named setting was last found in the server's array of settings (PostgreSQL 14 and 15), which PostgreSQL
/// keeps sorted by name (case-insensitively) and changes only by inserting a setting, removing a
/// placeholder, or replacing a placeholder in place by the real definition.
struct Slot {
    name: CString,
    /// False until the first lookup, and after the name changes.
    known: bool,
    /// The setting, or null when no setting of that name exists.
    var: *mut pg_sys::config_generic,
    /// The setting's index; when it does not exist, the index it would be inserted at.
    index: usize,
    /// When it does not exist: the settings just before and after where it would be (null at the
    /// ends of the array).
    before: *mut pg_sys::config_generic,
    after: *mut pg_sys::config_generic,
}

#[cfg(any(feature = "pg14", feature = "pg15"))]
impl Slot {
    fn new() -> Slot {
        Slot {
            name: CString::default(),
            known: false,
            var: ptr::null_mut(),
            index: 0,
            before: ptr::null_mut(),
            after: ptr::null_mut(),
        }
    }

    /// Is the remembered position still right for the array `vars` of `n` settings?
    ///
    /// # Safety
    /// `vars` is the server's array of settings and `n` its length.
    unsafe fn still_right(&self, vars: *mut *mut pg_sys::config_generic, n: usize) -> bool {
        if !self.known {
            return false;
        }
        if !self.var.is_null() {
            // Live if it is still at its index; a placeholder replaced by the real definition
            // is a different pointer.
            return self.index < n && *vars.add(self.index) == self.var;
        }
        // Absent: still absent if the two settings that bracket the name are still adjacent.
        let before = self.index == 0 || *vars.add(self.index - 1) == self.before;
        let after = if self.after.is_null() {
            self.index == n
        } else {
            self.index < n && *vars.add(self.index) == self.after
        };
        self.index <= n && before && after
    }

    /// Binary search by name, as PostgreSQL's own lookup does.
    ///
    /// # Safety
    /// `vars` is the server's array of settings and `n` its length.
    unsafe fn find(&mut self, vars: *mut *mut pg_sys::config_generic, n: usize) {
        let key = self.name.as_bytes();
        let (mut lo, mut hi) = (0, n);
        self.known = true;
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let var = *vars.add(mid);
            match guc_name_compare(CStr::from_ptr((*var).name).to_bytes(), key) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => {
                    self.var = var;
                    self.index = mid;
                    return;
                }
            }
        }
        self.var = ptr::null_mut();
        self.index = lo;
        self.before = if lo > 0 {
            *vars.add(lo - 1)
        } else {
            ptr::null_mut()
        };
        self.after = if lo < n {
            *vars.add(lo)
        } else {
            ptr::null_mut()
        };
    }
}

#[cfg(any(feature = "pg14", feature = "pg15"))]
/// PostgreSQL's order of setting names: ASCII letters folded to lower case, bytes compared as the
/// platform's `char` (signed on x86-64), a prefix first.
fn guc_name_compare(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    let fold = |c: &u8| c.to_ascii_lowercase() as c_char;
    a.iter().map(fold).cmp(b.iter().map(fold))
}

/// Finds one setting by name, and finds it again cheaply while the name stays the same: on
/// PostgreSQL 14 and 15 by remembering where it sits in the sorted array, from 16 by one hash
/// lookup. Never raises.
pub(crate) struct Finder {
    #[cfg(any(feature = "pg14", feature = "pg15"))]
    slot: Slot,
    #[cfg(not(any(feature = "pg14", feature = "pg15")))]
    name: CString,
}

impl Finder {
    pub(crate) fn new() -> Finder {
        Finder {
            #[cfg(any(feature = "pg14", feature = "pg15"))]
            slot: Slot::new(),
            #[cfg(not(any(feature = "pg14", feature = "pg15")))]
            name: CString::default(),
        }
    }

    /// The setting called `name`, or null when there is none (or the name holds a NUL byte).
    ///
    /// # Safety
    /// Reads the server's settings; the pointer is valid until settings are added or removed.
    #[cfg(any(feature = "pg14", feature = "pg15"))]
    pub(crate) unsafe fn find(&mut self, name: &[u8]) -> *mut pg_sys::config_generic {
        let slot = &mut self.slot;
        // Compared by content (a few bytes): the slot starts over only when the name changes.
        if slot.name.as_bytes() != name {
            let Ok(c) = CString::new(name) else {
                return ptr::null_mut();
            };
            slot.name = c;
            slot.known = false;
        }
        let vars = raw::get_guc_variables();
        let n = raw::GetNumConfigOptions().max(0) as usize;
        if vars.is_null() {
            return ptr::null_mut();
        }
        // A placeholder replaced by the real definition is a different pointer, which the slot
        // notices (still_right compares pointers).
        if !slot.still_right(vars, n) {
            slot.find(vars, n);
        }
        slot.var
    }

    /// # Safety
    /// Reads the server's settings; the pointer is valid until settings are added or removed.
    #[cfg(not(any(feature = "pg14", feature = "pg15")))]
    pub(crate) unsafe fn find(&mut self, name: &[u8]) -> *mut pg_sys::config_generic {
        if self.name.as_bytes() != name {
            let Ok(c) = CString::new(name) else {
                return ptr::null_mut();
            };
            self.name = c;
        }
        // Cannot fail with create_placeholders = false and skip_errors = true.
        raw::find_option(self.name.as_ptr(), false, true, pg_sys::DEBUG5 as i32)
    }
}

/// A setting's current value as GetConfigOption would return it (NULL or the string), without
/// the privilege check: callers check `superuser_only` first.
///
/// # Safety
/// `var` is a live setting.
pub(crate) unsafe fn value_of(var: *mut pg_sys::config_generic) -> *const c_char {
    // A string setting's variable holds NULL or its current value, as GetConfigOption would
    // return it; other types (a custom placeholder is always a string) go through GetConfigOption,
    // which cannot fail for an existing setting with missing_ok = true and
    // restrict_privileged = false.
    if (*var).vartype == pg_sys::config_type::PGC_STRING {
        *(*(var as *mut pg_sys::config_string)).variable
    } else {
        raw::GetConfigOption((*var).name, true, false)
    }
}

/// May only superusers (and pg_read_all_settings) read it?
///
/// # Safety
/// `var` is a live setting.
pub(crate) unsafe fn superuser_only(var: *mut pg_sys::config_generic) -> bool {
    (*var).flags & pg_sys::GUC_SUPERUSER_ONLY as i32 != 0
}

/// Does the setting's current value end with the transaction (or the function call) that set it:
/// SET LOCAL, `set_config(..., true)`, a function's SET clause? A value set for the session
/// (SET, `set_config(..., false)`, ALTER ROLE, the configuration) stays on the server connection
/// after the transaction, where a transaction-mode pooler hands it to the next client.
///
/// # Safety
/// `var` is a live setting.
pub(crate) unsafe fn transaction_scoped(var: *mut pg_sys::config_generic) -> bool {
    let top = (*var).stack;
    // The newest entry says what the current value is: GUC_SET is a session-level SET made in
    // this transaction (it survives the commit); GUC_LOCAL, GUC_SET_LOCAL and GUC_SAVE end with
    // the transaction or the function.
    !top.is_null() && (*top).state != pg_sys::GucStackState::GUC_SET
}

thread_local! {
    static FINDERS: RefCell<[Finder; 2]> = RefCell::new([Finder::new(), Finder::new()]);
}

/// The name of the setting that tenantguard.tenant_setting (0) or tenantguard.user_setting (1)
/// names, as the bytes of that setting's current value (before a `:` JSON path).
///
/// # Safety
/// Reads the string setting's own storage, which holds NULL or its current value.
unsafe fn name_of(which: usize) -> &'static [u8] {
    let (guc, default) = if which == 0 {
        (&gucs::TENANT_SETTING, gucs::DEFAULT_TENANT_SETTING)
    } else {
        (&gucs::USER_SETTING, gucs::DEFAULT_USER_SETTING)
    };
    let name = *guc.as_ptr();
    let spec = if name.is_null() || *name == 0 {
        default.as_bytes()
    } else {
        CStr::from_ptr(name).to_bytes()
    };
    match spec.iter().position(|b| *b == b':') {
        Some(i) => &spec[..i],
        None => spec,
    }
}

/// The definition of the setting that tenantguard.tenant_setting (0) or tenantguard.user_setting
/// (1) names, or null when no setting of that name exists. Never raises.
pub(crate) fn lookup(which: usize) -> *mut pg_sys::config_generic {
    // SAFETY: name_of gives the current name; Finder::find never raises.
    unsafe {
        let name = name_of(which);
        FINDERS.with(|f| match f.try_borrow_mut() {
            Ok(mut f) => f[which].find(name),
            Err(_) => ptr::null_mut(),
        })
    }
}

/// The current value of the setting that tenantguard.tenant_setting (0) or
/// tenantguard.user_setting (1) names; NULL when unset. Never raises an ERROR and never panics, so
/// the executor hooks can call it outside an error boundary.
pub(crate) fn named_setting(which: usize) -> *const c_char {
    let var = lookup(which);
    if var.is_null() {
        return ptr::null();
    }
    // SAFETY: a live setting.
    unsafe { value_of(var) }
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;
    use std::ffi::CStr;

    fn tenant() -> Option<String> {
        let value = super::named_setting(0);
        // SAFETY: NULL or the setting's current string.
        (!value.is_null()).then(|| {
            // SAFETY: non-null: the setting's current NUL-terminated string.
            unsafe { CStr::from_ptr(value) }
                .to_string_lossy()
                .into_owned()
        })
    }

    /// The remembered slot agrees with the server's own lookup as settings appear around it and
    /// the name changes (case-insensitively, as PostgreSQL compares setting names).
    #[pg_test]
    fn named_setting_follows_the_server() {
        Spi::run("SET tenantguard.tenant_setting = 'zz.tenant_probe'").unwrap();
        assert_eq!(tenant(), None);
        Spi::run("SET zz.tenant_probe = 'a'").unwrap();
        assert_eq!(tenant(), Some("a".into()));
        // Settings inserted before and just after it move it in the array.
        Spi::run("SET aa.before_probe = 'x'").unwrap();
        Spi::run("SET zz.tenant_probf = 'y'").unwrap();
        assert_eq!(tenant(), Some("a".into()));
        Spi::run("SET zz.tenant_probe = 'b'").unwrap();
        assert_eq!(tenant(), Some("b".into()));
        Spi::run("SET tenantguard.tenant_setting = 'ZZ.Tenant_Probe'").unwrap();
        assert_eq!(tenant(), Some("b".into()));
        // Absent, then created between two neighbours the slot remembered.
        Spi::run("SET tenantguard.tenant_setting = 'zz.tenant_probd'").unwrap();
        assert_eq!(tenant(), None);
        Spi::run("SET zz.tenant_probd = 'c'").unwrap();
        assert_eq!(tenant(), Some("c".into()));
        Spi::run("RESET zz.tenant_probd").unwrap();
        assert_eq!(tenant().unwrap_or_default(), "");
    }
}
