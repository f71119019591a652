//! tenantguard: multi-tenant row-level security for PostgreSQL.
//!
//! `protect()` turns a table into a tenant-isolated one, `coverage()` says which tables are, and
//! the modules below hold one capability each.

#![warn(clippy::undocumented_unsafe_blocks)]

use pgrx::prelude::*;

/// Declares the version-1 calling convention record for a C function the SQL declares directly.
#[macro_export]
macro_rules! pg_finfo_v1 {
    ($finfo:ident) => {
        #[no_mangle]
        #[doc(hidden)]
        pub extern "C" fn $finfo() -> &'static pgrx::pg_sys::Pg_finfo_record {
            const V1: pgrx::pg_sys::Pg_finfo_record =
                pgrx::pg_sys::Pg_finfo_record { api_version: 1 };
            &V1
        }
    };
}

mod audit;
mod audit_read;
mod catalog;
mod context;
mod errors;
mod guard;
mod gucs;
mod privileges;
mod protect;
mod raw;
mod session;
mod settings;
mod slowlog;
mod sqlcheck;
mod templates;
mod triggers;

::pgrx::pg_module_magic!(name, version);

extension_sql_file!("../sql/bootstrap.sql", name = "bootstrap", bootstrap);
extension_sql_file!(
    "../sql/coverage.sql",
    name = "coverage",
    requires = ["bootstrap"]
);
extension_sql_file!(
    "../sql/audit.sql",
    name = "audit",
    requires = ["bootstrap", current_tenant, _audit_sees_all, _reader]
);
extension_sql_file!("../sql/lint.sql", name = "lint", requires = ["bootstrap"]);

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
