//! Reading parse trees the server hands to the event triggers, and tuple descriptors.

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

/// A `String` node's text (PostgreSQL 15 and later; a `Value` node with `T_String` in 14).
///
/// # Safety
/// `node` must be a node tagged `T_String`.
pub unsafe fn string_node_text(node: *mut pg_sys::Node) -> *const std::ffi::c_char {
    #[cfg(feature = "pg14")]
    {
        (*(node as *mut pg_sys::Value)).val.str_
    }
    #[cfg(not(feature = "pg14"))]
    {
        (*(node as *mut pg_sys::String)).sval
    }
}

/// Attribute `i` (0-based) of a tuple descriptor. PostgreSQL 18 keeps compact attributes in front
/// of the full ones, so only its `TupleDescAttr` finds them.
///
/// # Safety
/// `desc` must be a valid tuple descriptor and `i` less than its `natts`.
pub unsafe fn tuple_desc_attr(
    desc: pg_sys::TupleDesc,
    i: usize,
) -> *const pg_sys::FormData_pg_attribute {
    #[cfg(feature = "pg18")]
    {
        pg_sys::TupleDescAttr(desc, i as i32)
    }
    #[cfg(not(feature = "pg18"))]
    {
        (*desc).attrs.as_ptr().add(i)
    }
}
