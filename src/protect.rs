//! protect() and unprotect(): plan the SQL that brings a table to the wanted policy set, then run
//! it (or, for a dry run, return it).
//!
//! Every change goes through SQL statements that are collected first, so the dry run shows exactly
//! what a real run executes, and a failure on any statement rolls back all of them.

use crate::catalog::{RelInfo, TenantColumn};
use crate::errors::spi;
use crate::gucs;
use pgrx::prelude::*;
use pgrx::spi::{quote_identifier, quote_literal};
use pgrx::JsonB;
use serde::{Deserialize, Serialize};

/// Arguments of protect() as the SQL wrapper passes them (a jsonb object).
#[derive(Deserialize, Debug, Default)]
#[serde(default)]
struct ProtectArgs {
    tenant_column: Option<String>,
    dry_run: bool,
}

/// The resolved options a table was protected with, kept in the registry.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ProtectOptions {
    pub tenant_column: String,
    pub tenant_setting: String,
}

/// One policy tenantguard creates.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct PolicySpec {
    pub name: String,
    pub template: String,
    pub command: String,
    pub permissive: bool,
    /// Role names; empty means PUBLIC.
    pub roles: Vec<String>,
    pub using: Option<String>,
    pub check: Option<String>,
}

/// A policy as the registry recorded it: the spec plus the expressions as PostgreSQL deparsed them.
#[derive(Deserialize, Debug, Clone)]
struct RecordedPolicy {
    #[serde(flatten)]
    spec: PolicySpec,
    using_expr: Option<String>,
    check_expr: Option<String>,
}

/// A registry row.
struct Registration {
    options: Option<ProtectOptions>,
    policies: Vec<RecordedPolicy>,
    rls_was_enabled: bool,
    rls_was_forced: bool,
}

/// A policy as it is in pg_policy now.
struct LivePolicy {
    name: String,
    command: String,
    permissive: bool,
    roles: Vec<String>,
    using_expr: Option<String>,
    check_expr: Option<String>,
}

pub const POLICY_PREFIX: &str = "tenantguard_";
const COMMANDS: [&str; 4] = ["SELECT", "INSERT", "UPDATE", "DELETE"];

fn command_code(command: &str) -> &'static str {
    match command {
        "SELECT" => "r",
        "INSERT" => "a",
        "UPDATE" => "w",
        "DELETE" => "d",
        _ => "*",
    }
}

/// The tenant match: true only for rows of the tenant in the setting. An unset or empty setting
/// gives NULL, which matches no row (and never reaches a cast, so no `invalid input syntax` error).
/// The right-hand side is a stable expression, so it is computed once per index scan.
pub fn tenant_predicate(column: &TenantColumn, setting: &str) -> String {
    let value = format!(
        "NULLIF(pg_catalog.current_setting({}, true), '')",
        quote_literal(setting)
    );
    let rhs = match column.base_type.as_str() {
        "uuid" => format!("({value})::pg_catalog.uuid"),
        "int8" => format!("({value})::pg_catalog.int8"),
        "int4" => format!("({value})::pg_catalog.int4"),
        "int2" => format!("({value})::pg_catalog.int2"),
        _ => value,
    };
    format!(
        "{} OPERATOR(pg_catalog.=) {rhs}",
        quote_identifier(&column.name)
    )
}

/// The policies the options ask for, in creation order.
fn desired_policies(column: &TenantColumn, options: &ProtectOptions) -> Vec<PolicySpec> {
    let pred = tenant_predicate(column, &options.tenant_setting);
    COMMANDS
        .iter()
        .map(|cmd| {
            let (using, check) = match *cmd {
                "SELECT" | "DELETE" => (Some(pred.clone()), None),
                "INSERT" => (None, Some(pred.clone())),
                _ => (Some(pred.clone()), Some(pred.clone())),
            };
            PolicySpec {
                name: format!("{POLICY_PREFIX}tenant_{}", cmd.to_lowercase()),
                template: "tenant".into(),
                command: cmd.to_string(),
                permissive: true,
                roles: Vec::new(),
                using,
                check,
            }
        })
        .collect()
}

fn create_policy_sql(rel: &RelInfo, p: &PolicySpec) -> String {
    let roles = if p.roles.is_empty() {
        "PUBLIC".to_string()
    } else {
        p.roles
            .iter()
            .map(quote_identifier)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut sql = format!(
        "CREATE POLICY {} ON {} AS {} FOR {} TO {}",
        quote_identifier(&p.name),
        rel.qualified(),
        if p.permissive {
            "PERMISSIVE"
        } else {
            "RESTRICTIVE"
        },
        p.command,
        roles
    );
    if let Some(u) = &p.using {
        sql.push_str(&format!(" USING ({u})"));
    }
    if let Some(c) = &p.check {
        sql.push_str(&format!(" WITH CHECK ({c})"));
    }
    sql
}

fn drop_policy_sql(rel: &RelInfo, name: &str) -> String {
    format!(
        "DROP POLICY IF EXISTS {} ON {}",
        quote_identifier(name),
        rel.qualified()
    )
}

fn load_registration(rel: &RelInfo) -> Option<Registration> {
    spi(Spi::connect(|client| {
        let rows = client.select(
            "SELECT options, policies, rls_was_enabled, rls_was_forced
               FROM tenantguard.registry WHERE relid = $1",
            None,
            &[rel.oid.into()],
        )?;
        let mut out = None;
        for row in rows {
            let options = row
                .get::<JsonB>(1)?
                .and_then(|j| serde_json::from_value::<ProtectOptions>(j.0).ok());
            let policies = row
                .get::<JsonB>(2)?
                .and_then(|j| serde_json::from_value::<Vec<RecordedPolicy>>(j.0).ok())
                .unwrap_or_default();
            out = Some(Registration {
                options,
                policies,
                rls_was_enabled: row.get::<bool>(3)?.unwrap_or(false),
                rls_was_forced: row.get::<bool>(4)?.unwrap_or(false),
            });
        }
        Ok::<_, pgrx::spi::Error>(out)
    }))
}

fn live_policies(rel: &RelInfo) -> Vec<LivePolicy> {
    spi(Spi::connect(|client| {
        let rows = client.select(
            "SELECT p.polname::text, p.polcmd::text, p.polpermissive,
                    ARRAY(SELECT CASE WHEN r = 0 THEN 'public' ELSE pg_catalog.pg_get_userbyid(r)::text END
                            FROM pg_catalog.unnest(p.polroles) AS r ORDER BY 1),
                    pg_catalog.pg_get_expr(p.polqual, p.polrelid),
                    pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid)
               FROM pg_catalog.pg_policy p WHERE p.polrelid = $1",
            None,
            &[rel.oid.into()],
        )?;
        rows.map(|row| {
            Ok(LivePolicy {
                name: row.get::<String>(1)?.unwrap_or_default(),
                command: row.get::<String>(2)?.unwrap_or_default(),
                permissive: row.get::<bool>(3)?.unwrap_or(true),
                roles: row.get::<Vec<String>>(4)?.unwrap_or_default(),
                using_expr: row.get::<String>(5)?,
                check_expr: row.get::<String>(6)?,
            })
        })
        .collect::<Result<Vec<_>, pgrx::spi::Error>>()
    }))
}

/// True when the live policy is still exactly what tenantguard created for this spec.
fn is_intact(spec: &PolicySpec, live: &LivePolicy, recorded: Option<&RecordedPolicy>) -> bool {
    let mut want_roles: Vec<String> = if spec.roles.is_empty() {
        vec!["public".into()]
    } else {
        spec.roles.clone()
    };
    want_roles.sort();
    let Some(rec) = recorded else { return false };
    rec.spec == *spec
        && live.command == command_code(&spec.command)
        && live.permissive == spec.permissive
        && live.roles == want_roles
        && live.using_expr == rec.using_expr
        && live.check_expr == rec.check_expr
}

/// What protect() will do to one table: statements in order, and a line for the account.
struct TablePlan {
    sql: Vec<String>,
    account: String,
}

fn plan_protect(rel: &RelInfo, column: &TenantColumn, options: &ProtectOptions) -> TablePlan {
    let desired = desired_policies(column, options);
    let registration = load_registration(rel);
    let live = live_policies(rel);
    let recorded = |name: &str| {
        registration
            .as_ref()
            .and_then(|r| r.policies.iter().find(|p| p.spec.name == name))
    };

    let mut sql = Vec::new();
    let mut did = Vec::new();
    if !rel.rls_enabled {
        sql.push(format!(
            "ALTER TABLE {} ENABLE ROW LEVEL SECURITY",
            rel.qualified()
        ));
        did.push("enabled row level security".to_string());
    }
    if !rel.rls_forced {
        sql.push(format!(
            "ALTER TABLE {} FORCE ROW LEVEL SECURITY",
            rel.qualified()
        ));
        did.push("forced row level security".to_string());
    }

    // Policies tenantguard made before that the options no longer ask for.
    let mut dropped = Vec::new();
    if let Some(reg) = &registration {
        for old in &reg.policies {
            let still_wanted = desired.iter().any(|d| d.name == old.spec.name);
            let exists = live.iter().any(|l| l.name == old.spec.name);
            if !still_wanted && exists {
                sql.push(drop_policy_sql(rel, &old.spec.name));
                dropped.push(old.spec.name.clone());
            }
        }
    }

    let mut created = Vec::new();
    let mut replaced = Vec::new();
    for spec in &desired {
        match live.iter().find(|l| l.name == spec.name) {
            Some(l) if is_intact(spec, l, recorded(&spec.name)) => {}
            Some(_) => {
                sql.push(drop_policy_sql(rel, &spec.name));
                sql.push(create_policy_sql(rel, spec));
                replaced.push(spec.name.clone());
            }
            None => {
                sql.push(create_policy_sql(rel, spec));
                created.push(spec.name.clone());
            }
        }
    }
    if !created.is_empty() {
        did.push(format!("created policies {}", created.join(", ")));
    }
    if !replaced.is_empty() {
        did.push(format!("replaced policies {}", replaced.join(", ")));
    }
    if !dropped.is_empty() {
        did.push(format!("dropped policies {}", dropped.join(", ")));
    }

    let registry_current = registration.as_ref().is_some_and(|r| {
        r.options.as_ref() == Some(options)
            && r.policies.len() == desired.len()
            && r.policies.iter().zip(&desired).all(|(a, b)| a.spec == *b)
    });
    if !sql.is_empty() || !registry_current {
        let (was_enabled, was_forced) = registration
            .as_ref()
            .map_or((rel.rls_enabled, rel.rls_forced), |r| {
                (r.rls_was_enabled, r.rls_was_forced)
            });
        let options_json = serde_json::to_string(options).expect("options serialize");
        let policies_json = serde_json::to_string(&desired).expect("policies serialize");
        sql.push(format!(
            "SELECT tenantguard._register({}::regclass, {}, {}::jsonb, {}::jsonb, {}, {})",
            quote_literal(rel.qualified()),
            quote_literal(&column.name),
            quote_literal(options_json),
            quote_literal(policies_json),
            was_enabled,
            was_forced
        ));
        did.push(if registration.is_some() {
            "updated its registry entry".to_string()
        } else {
            "registered it".to_string()
        });
    }

    let account = if sql.is_empty() {
        format!("{}: already protected, nothing changed", rel.display())
    } else {
        format!("{}: {}", rel.display(), did.join("; "))
    };
    TablePlan { sql, account }
}

fn plan_unprotect(rel: &RelInfo, registration: &Registration) -> TablePlan {
    let live = live_policies(rel);
    let mut sql = Vec::new();
    let mut dropped = Vec::new();
    for p in &registration.policies {
        if live.iter().any(|l| l.name == p.spec.name) {
            sql.push(drop_policy_sql(rel, &p.spec.name));
            dropped.push(p.spec.name.clone());
        }
    }
    let mut did = Vec::new();
    if !dropped.is_empty() {
        did.push(format!("dropped policies {}", dropped.join(", ")));
    }
    if rel.rls_forced && !registration.rls_was_forced {
        sql.push(format!(
            "ALTER TABLE {} NO FORCE ROW LEVEL SECURITY",
            rel.qualified()
        ));
        did.push("no longer forces row level security".to_string());
    }
    if rel.rls_enabled && !registration.rls_was_enabled {
        sql.push(format!(
            "ALTER TABLE {} DISABLE ROW LEVEL SECURITY",
            rel.qualified()
        ));
        did.push("disabled row level security".to_string());
    }
    sql.push(format!(
        "SELECT tenantguard._unregister({}::regclass)",
        quote_literal(rel.qualified())
    ));
    did.push("removed from the registry".to_string());
    TablePlan {
        sql,
        account: format!("{}: {}", rel.display(), did.join("; ")),
    }
}

fn render_script(plans: &[TablePlan]) -> String {
    let mut out = String::new();
    for p in plans {
        for s in &p.sql {
            out.push_str(s);
            out.push_str(";\n");
        }
    }
    out
}

fn execute(plans: &[TablePlan]) -> String {
    for p in plans {
        for s in &p.sql {
            spi(Spi::run(s));
        }
    }
    plans
        .iter()
        .map(|p| p.account.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

#[pg_extern(volatile, parallel_unsafe)]
fn _protect(tbl: pg_sys::Oid, args: JsonB) -> String {
    let args: ProtectArgs = serde_json::from_value(args.0).unwrap_or_default();
    let column_name = args
        .tenant_column
        .filter(|c| !c.is_empty())
        .unwrap_or_else(gucs::tenant_column);
    let options = ProtectOptions {
        tenant_column: column_name.clone(),
        tenant_setting: gucs::tenant_setting(),
    };

    // Check every table first (the table, then each partition below it): nothing changes unless
    // all of them can be protected.
    let root = RelInfo::load(tbl);
    root.check_protectable("protect");
    let mut targets = vec![root.clone()];
    targets.extend(root.partitions());
    let checked: Vec<(RelInfo, TenantColumn)> = targets
        .into_iter()
        .map(|rel| {
            rel.check_protectable("protect");
            let col = TenantColumn::load(&rel, &column_name);
            (rel, col)
        })
        .collect();

    let plans: Vec<TablePlan> = checked
        .iter()
        .map(|(rel, col)| plan_protect(rel, col, &options))
        .collect();
    if args.dry_run {
        let script = render_script(&plans);
        return if script.is_empty() {
            format!(
                "-- {} is already protected; nothing to do\n",
                root.display()
            )
        } else {
            script
        };
    }
    execute(&plans)
}

fn unprotect_plans(tbl: pg_sys::Oid) -> Option<Vec<TablePlan>> {
    let root = RelInfo::load(tbl);
    let registration = load_registration(&root)?;
    root.check_protectable("unprotect");
    let mut plans = vec![plan_unprotect(&root, &registration)];
    for part in root.partitions() {
        if let Some(reg) = load_registration(&part) {
            part.check_protectable("unprotect");
            plans.push(plan_unprotect(&part, &reg));
        }
    }
    Some(plans)
}

#[pg_extern(volatile, parallel_unsafe)]
fn _unprotect(tbl: pg_sys::Oid, dry_run: bool) -> String {
    match unprotect_plans(tbl) {
        Some(plans) if dry_run => render_script(&plans),
        Some(plans) => execute(&plans),
        None => {
            let rel = RelInfo::load(tbl);
            let msg = format!(
                "table \"{}\" is not protected by tenantguard; nothing to do",
                rel.display()
            );
            notice!("{msg}");
            if dry_run {
                format!("-- {msg}\n")
            } else {
                msg
            }
        }
    }
}

extension_sql!(
    r#"
CREATE FUNCTION tenantguard.protect(
    tbl regclass,
    tenant_column name DEFAULT NULL,
    dry_run boolean DEFAULT false)
RETURNS text
LANGUAGE sql VOLATILE
AS $$
  SELECT tenantguard._protect(tbl, pg_catalog.jsonb_build_object(
           'tenant_column', tenant_column,
           'dry_run', dry_run))
$$;
COMMENT ON FUNCTION tenantguard.protect(regclass, name, boolean) IS
  'Enable and force row level security on a table (and its partitions) with per-command tenant isolation policies. Idempotent.';

CREATE FUNCTION tenantguard.unprotect(tbl regclass) RETURNS text
LANGUAGE sql VOLATILE
AS $$ SELECT tenantguard._unprotect(tbl, false) $$;
COMMENT ON FUNCTION tenantguard.unprotect(regclass) IS
  'Remove exactly what protect() created; policies written by users stay.';

CREATE FUNCTION tenantguard.unprotect_sql(tbl regclass) RETURNS text
LANGUAGE sql VOLATILE
AS $$ SELECT tenantguard._unprotect(tbl, true) $$;
COMMENT ON FUNCTION tenantguard.unprotect_sql(regclass) IS
  'The SQL unprotect() would run, for the rollback half of a migration.';
"#,
    name = "protect_api",
    requires = [_protect, _unprotect, "bootstrap"],
);

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    fn count(sql: &str) -> i64 {
        Spi::get_one::<i64>(sql).unwrap().unwrap()
    }

    fn setup_two_tenants(key_type: &str, a: &str, b: &str) {
        Spi::run("CREATE ROLE tg_unit_app NOSUPERUSER NOBYPASSRLS").unwrap();
        Spi::run(&format!(
            "CREATE TABLE t (id int PRIMARY KEY, tenant_id {key_type} NOT NULL);
             INSERT INTO t VALUES (1, '{a}'), (2, '{a}'), (3, '{b}');
             GRANT SELECT, INSERT, UPDATE, DELETE ON t TO tg_unit_app;"
        ))
        .unwrap();
    }

    #[pg_test]
    fn protect_isolates_each_key_type() {
        for (ty, a, b) in [
            (
                "uuid",
                "aaaaaaaa-0000-0000-0000-000000000001",
                "bbbbbbbb-0000-0000-0000-000000000002",
            ),
            ("text", "acme", "globex"),
            ("bigint", "1", "2"),
            ("integer", "1", "2"),
        ] {
            setup_two_tenants(ty, a, b);
            Spi::run("SELECT tenantguard.protect('t')").unwrap();
            Spi::run("SET ROLE tg_unit_app").unwrap();
            assert_eq!(
                count("SELECT count(*) FROM t"),
                0,
                "{ty}: unset tenant sees nothing"
            );
            Spi::run(&format!("SET app.current_tenant_id = '{a}'")).unwrap();
            assert_eq!(
                count("SELECT count(*) FROM t"),
                2,
                "{ty}: tenant a sees its rows"
            );
            Spi::run(&format!("SET app.current_tenant_id = '{b}'")).unwrap();
            assert_eq!(
                count("SELECT count(*) FROM t"),
                1,
                "{ty}: tenant b sees its row"
            );
            Spi::run("DELETE FROM t WHERE id = 1").unwrap();
            Spi::run("SET app.current_tenant_id = ''").unwrap();
            assert_eq!(
                count("SELECT count(*) FROM t"),
                0,
                "{ty}: empty tenant sees nothing"
            );
            Spi::run("RESET ROLE").unwrap();
            assert_eq!(
                count("SELECT count(*) FROM t"),
                3,
                "{ty}: b could not delete a's row"
            );
            Spi::run("DROP TABLE t; DROP ROLE tg_unit_app; RESET app.current_tenant_id").unwrap();
        }
    }

    #[pg_test]
    fn protect_twice_changes_nothing() {
        setup_two_tenants("text", "acme", "globex");
        let first = Spi::get_one::<String>("SELECT tenantguard.protect('t')")
            .unwrap()
            .unwrap();
        assert!(first.contains("created policies"), "{first}");
        let second = Spi::get_one::<String>("SELECT tenantguard.protect('t')")
            .unwrap()
            .unwrap();
        assert!(second.contains("nothing changed"), "{second}");
        let dry = Spi::get_one::<String>("SELECT tenantguard.protect('t', dry_run => true)")
            .unwrap()
            .unwrap();
        assert!(dry.starts_with("-- "), "{dry}");
        assert_eq!(
            count("SELECT count(*) FROM pg_policy WHERE polrelid = 't'::regclass"),
            4
        );
    }

    #[pg_test]
    fn dry_run_changes_nothing() {
        setup_two_tenants("text", "acme", "globex");
        let sql = Spi::get_one::<String>("SELECT tenantguard.protect('t', dry_run => true)")
            .unwrap()
            .unwrap();
        assert!(
            sql.contains("CREATE POLICY tenantguard_tenant_select ON public.t"),
            "{sql}"
        );
        assert_eq!(
            count("SELECT count(*) FROM pg_policy WHERE polrelid = 't'::regclass"),
            0
        );
        assert_eq!(count("SELECT count(*) FROM tenantguard.registry"), 0);
        // Running the dry-run script gives the same state as protect().
        Spi::run(&sql).unwrap();
        let again = Spi::get_one::<String>("SELECT tenantguard.protect('t')")
            .unwrap()
            .unwrap();
        assert!(again.contains("nothing changed"), "{again}");
    }

    #[pg_test(error = "table \"public.t\" has no tenant column \"tenant_id\"")]
    fn protect_without_tenant_column() {
        Spi::run("CREATE TABLE t (id int)").unwrap();
        Spi::run("SELECT tenantguard.protect('t')").unwrap();
    }

    #[pg_test(
        error = "tenant column \"tenant_id\" of table \"public.t\" has unsupported type real"
    )]
    fn protect_unsupported_type() {
        Spi::run("CREATE TABLE t (tenant_id real)").unwrap();
        Spi::run("SELECT tenantguard.protect('t')").unwrap();
    }

    #[pg_test(error = "cannot protect \"public.v\": it is a view")]
    fn protect_view() {
        Spi::run("CREATE VIEW v AS SELECT 1 AS tenant_id").unwrap();
        Spi::run("SELECT tenantguard.protect('v')").unwrap();
    }

    #[pg_test]
    fn predicate_is_null_safe_and_typed() {
        let col = |t: &str| crate::catalog::TenantColumn {
            name: "tenant_id".into(),
            base_type: t.into(),
            not_null: true,
        };
        let p = super::tenant_predicate(&col("uuid"), "app.current_tenant_id");
        assert_eq!(
            p,
            "tenant_id OPERATOR(pg_catalog.=) (NULLIF(pg_catalog.current_setting('app.current_tenant_id', true), ''))::pg_catalog.uuid"
        );
        let p = super::tenant_predicate(&col("text"), "x.y");
        assert!(!p.contains("::"), "{p}");
    }
}
