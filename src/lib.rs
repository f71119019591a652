//! tenantguard: multi-tenant row-level security for PostgreSQL.
//!
//! `protect()` turns a table into a tenant-isolated one, `coverage()` says which tables are, and
//! the modules below hold one capability each.

#![warn(clippy::undocumented_unsafe_blocks)]

use pgrx::prelude::*;

mod audit;
mod catalog;
mod citus;
mod errors;
mod guard;
mod gucs;
mod pg;
mod privileges;
mod protect;
mod session;
mod slowlog;
mod tenant;

::pgrx::pg_module_magic!(name, version);

// Hand-written SQL, one file per subsystem, in the order CREATE EXTENSION runs it.
extension_sql_file!("../sql/bootstrap.sql", name = "bootstrap", bootstrap);
extension_sql_file!(
    "../sql/tenant.sql",
    name = "tenant",
    requires = ["bootstrap"]
);
extension_sql_file!(
    "../sql/protect.sql",
    name = "protect",
    requires = [
        "bootstrap",
        _protect,
        _unprotect,
        _exempt,
        _unexempt,
        _register
    ]
);
extension_sql_file!(
    "../sql/citus.sql",
    name = "citus",
    requires = ["bootstrap", _citus_role, _context]
);
extension_sql_file!(
    "../sql/coverage.sql",
    name = "coverage",
    requires = ["bootstrap", "citus"]
);
extension_sql_file!(
    "../sql/audit.sql",
    name = "audit",
    requires = [
        "bootstrap",
        "citus",
        current_tenant,
        _audit_sees_all,
        _reader
    ]
);
extension_sql_file!(
    "../sql/slowlog.sql",
    name = "slowlog",
    requires = [
        "bootstrap",
        slow_queries,
        reset_slow_queries,
        _flush_slow_queries,
        _reads_all_stats,
        current_tenant,
        tenant_stats,
        top_tenants,
        tenant_stats_info,
        reset_tenant_stats
    ]
);
extension_sql_file!("../sql/lint.sql", name = "lint", requires = ["bootstrap"]);
extension_sql_file!(
    "../sql/prove.sql",
    name = "prove",
    requires = ["bootstrap", "coverage", _export_sql]
);
extension_sql_file!(
    "../sql/adopt.sql",
    name = "adopt",
    requires = ["bootstrap", "coverage", "protect"]
);
// The event triggers last: CREATE EXTENSION's own objects exist before they do.
extension_sql_file!("../sql/guard.sql", name = "guard", finalize);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    session::init();
    gucs::init();
    slowlog::init();
}

#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
