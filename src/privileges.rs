//! Who the current role is, for what tenantguard shows: superusers and members of
//! `tenantguard_admin` see every tenant's audit rows and slow queries; members of
//! `pg_read_all_stats` see every slow query and its text, as `pg_stat_statements` shows them.

use pgrx::pg_sys;

/// The admin role's name, created by CREATE EXTENSION.
pub const ADMIN_ROLE: &std::ffi::CStr = c"tenantguard_admin";

/// True for a superuser or a role with the privileges of `tenantguard_admin`.
pub fn is_admin() -> bool {
    // SAFETY: the current user's OID.
    is_admin_role(unsafe { pg_sys::GetUserId() })
}

/// True when `role` is a superuser or has the privileges of `tenantguard_admin`.
pub fn is_admin_role(role: pg_sys::Oid) -> bool {
    // SAFETY: role lookups; get_role_oid with missing_ok never raises.
    unsafe {
        if pg_sys::superuser_arg(role) {
            return true;
        }
        let admin = pg_sys::get_role_oid(ADMIN_ROLE.as_ptr(), true);
        admin != pg_sys::InvalidOid && pg_sys::has_privs_of_role(role, admin)
    }
}

/// True for a superuser, an admin, or a role with the privileges of `pg_read_all_stats`.
pub fn reads_all_stats() -> bool {
    // SAFETY: a role check for the current user.
    is_admin()
        || unsafe {
            pg_sys::has_privs_of_role(
                pg_sys::GetUserId(),
                pg_sys::Oid::from(pg_sys::ROLE_PG_READ_ALL_STATS),
            )
        }
}
