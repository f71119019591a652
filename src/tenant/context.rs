//! The session's tenant: `set_tenant()` and `current_tenant()`.
//!
//! Both go through the setting named by `tenantguard.tenant_setting`, so applications that already
//! `SET app.current_tenant_id` (or `SET LOCAL` it behind a transaction-mode pooler) keep working.

use crate::catalog::{kept_first, TEXT};
use crate::gucs;
use pgrx::prelude::*;
use pgrx::spi::OwnedPreparedStatement;
use pgrx::{PgBuiltInOids, PgOid};
use std::cell::OnceCell;

/// The session's tenant: the tenant setting's value (or what its JSON path finds), `None` when
/// there is none, or when tenantguard.tenant_scope = transaction and it was set for the session.
pub fn tenant_value() -> Option<String> {
    crate::tenant::values::tenant_text(&gucs::tenant_setting())
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
    if name.contains(':') {
        crate::errors::Error::TenantFromClaims { setting: &name }.raise();
    }
    kept_first::<String>(
        &PLAN,
        "SELECT pg_catalog.set_config($1, $2, $3)",
        &[TEXT, TEXT, PgOid::BuiltIn(PgBuiltInOids::BOOLOID)],
        &[name.into(), tenant.unwrap_or("").into(), is_local.into()],
    );
    tenant_value()
}

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
