//! `export_sql()`: the protection of a table as plain SQL for a server without tenantguard: row
//! level security enabled and forced, the same policies with expressions that call no tenantguard
//! function, the REVOKEs, and the tenant column's default.

use crate::catalog::{RelInfo, TenantColumn};
use crate::errors::Error;
use crate::protect::planner::{create_policy_sql, drop_policy_sql};
use crate::protect::registry::load_registration;
use crate::protect::templates;
use pgrx::prelude::*;
use pgrx::spi::quote_identifier;

#[pg_extern(stable, parallel_safe)]
fn _export_sql(tbl: pg_sys::Oid) -> String {
    let rel = RelInfo::load(tbl);
    let Some(options) = load_registration(&rel).and_then(|r| r.options) else {
        Error::NotProtected {
            table: &rel.display(),
        }
        .raise();
    };
    let column = TenantColumn::load(&rel, &options.tenant_column);
    let mut sql = vec![format!(
        "ALTER TABLE {} ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;",
        rel.qualified()
    )];
    let policies = templates::desired_policies_with(&rel, &column, &options, true);
    // The roles the policies name (tenantguard_admin above all) may not exist on the other
    // server: CREATE POLICY would fail there. Made NOLOGIN when missing; who is a member is the
    // DBA's choice there.
    let mut roles: Vec<&String> = policies.iter().flat_map(|p| p.roles.iter()).collect();
    roles.sort();
    roles.dedup();
    for role in roles {
        sql.push(format!(
            "DO $tenantguard$ BEGIN IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = {lit}) \
             THEN CREATE ROLE {ident} NOLOGIN; END IF; END $tenantguard$;",
            lit = pgrx::spi::quote_literal(role),
            ident = quote_identifier(role)
        ));
    }
    for p in &policies {
        sql.push(format!("{};", drop_policy_sql(&rel, &p.name)));
        sql.push(format!("{};", create_policy_sql(&rel, p)));
    }
    // TRUNCATE and REFERENCES from everyone but the owner, as protect() does, found when the
    // script runs (the roles there may differ). Later GRANTs are not taken back: no event trigger.
    sql.push(format!(
        "DO $tenantguard$ DECLARE g oid; BEGIN \
         FOR g IN SELECT DISTINCT a.grantee FROM pg_catalog.pg_class c, \
         pg_catalog.aclexplode(c.relacl) a WHERE c.oid = {t}::regclass \
         AND a.privilege_type IN ('TRUNCATE', 'REFERENCES') AND a.grantee <> c.relowner LOOP \
         EXECUTE pg_catalog.format('REVOKE TRUNCATE, REFERENCES ON %s FROM %s', {t}::regclass, \
         CASE WHEN g = 0 THEN 'PUBLIC' ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(g)) END); \
         END LOOP; END $tenantguard$;",
        t = pgrx::spi::quote_literal(rel.qualified())
    ));
    if options.tenant_default {
        sql.push(format!(
            "ALTER TABLE {} ALTER COLUMN {} SET DEFAULT {};",
            rel.qualified(),
            quote_identifier(&column.name),
            templates::portable_default_expr(&column, &options)
        ));
    }
    sql.join("\n")
}
