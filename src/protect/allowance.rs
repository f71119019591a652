//! Writes to a protected table's registry row outside protect()/unprotect() need the allowance of
//! `_allow_change` in the same transaction.

use crate::catalog::RelInfo;
use crate::errors::{refusal_hint, Error};
use crate::session::{busy, is_allowed};
use pgrx::pg_sys;

/// The registry row of a protected table changes only inside protect()/unprotect(), or in the
/// transaction that called `_allow_change` for it: a dry-run or unprotect_sql() script run
/// statement by statement in autocommit fails at each change the guard refuses, and must not then
/// rewrite or drop the registry row at its end (the table would be left half unprotected).
pub fn require_allowance(oid: pg_sys::Oid, what: &str) {
    if busy() || is_allowed(oid) {
        return;
    }
    let rel = RelInfo::load(oid);
    Error::RegistryLocked {
        table: &rel.display(),
        what,
        hint: refusal_hint(
            oid,
            format!(
                "Call tenantguard.protect() or tenantguard.unprotect('{}'), or run the script from \
                 dry_run / unprotect_sql() whole, in one transaction.",
                rel.qualified().replace('\'', "''")
            ),
        ),
    }
    .raise();
}
