//! Reading parse trees the server hands to the event triggers.

use pgrx::pg_sys;

/// The nodes of a parse-tree List (empty for NIL).
///
/// # Safety
/// `l` must be NIL or a valid List of pointers.
pub(crate) unsafe fn list_nodes(l: *mut pg_sys::List) -> Vec<*mut pg_sys::Node> {
    if l.is_null() {
        return Vec::new();
    }
    (0..(*l).length as usize)
        .map(|i| (*(*l).elements.add(i)).ptr_value as *mut pg_sys::Node)
        .collect()
}

/// The OID a RangeVar names now, or `None` when it names nothing.
///
/// # Safety
/// `rv` must be null or a valid RangeVar.
pub(crate) unsafe fn range_var_oid(rv: *mut pg_sys::RangeVar) -> Option<pg_sys::Oid> {
    if rv.is_null() {
        return None;
    }
    let oid = pg_sys::RangeVarGetRelidExtended(
        rv,
        pg_sys::NoLock as pg_sys::LOCKMODE,
        pg_sys::RVROption::RVR_MISSING_OK,
        None,
        std::ptr::null_mut(),
    );
    (oid != pg_sys::InvalidOid).then_some(oid)
}
