//! The SQL that brings a table to the wanted policy set (protect) or back to how it was
//! (unprotect), planned first and then run, or returned for a dry run: the dry run shows exactly
//! what a real run executes, and a failure on any statement rolls back all of them.

use crate::catalog::{probe_select, RelInfo, TenantColumn, OID};
use crate::errors::{spi, Error};
use crate::protect::registry::{
    is_exempt, live_policies, load_registration, LivePolicy, RecordedPolicy, Registration,
};
use crate::protect::templates::{self, PolicySpec, ProtectOptions};
use crate::protect::triggers;
use pgrx::prelude::*;
use pgrx::spi::OwnedPreparedStatement;
use pgrx::spi::{quote_identifier, quote_literal};
use std::cell::OnceCell;

pub(crate) fn command_code(command: &str) -> &'static str {
    match command {
        "SELECT" => "r",
        "INSERT" => "a",
        "UPDATE" => "w",
        "DELETE" => "d",
        _ => "*",
    }
}

pub(crate) fn create_policy_sql(rel: &RelInfo, p: &PolicySpec) -> String {
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

pub(crate) fn drop_policy_sql(rel: &RelInfo, name: &str) -> String {
    format!(
        "DROP POLICY IF EXISTS {} ON {}",
        quote_identifier(name),
        rel.qualified()
    )
}

/// True when the live policy is still exactly what tenantguard created for this spec.
pub(crate) fn is_intact(
    spec: &PolicySpec,
    live: &LivePolicy,
    recorded: Option<&RecordedPolicy>,
) -> bool {
    let mut want_roles: Vec<String> = if spec.roles.is_empty() {
        vec!["public".into()]
    } else {
        spec.roles.clone()
    };
    want_roles.sort();
    let Some(rec) = recorded else { return false };
    // Recorded on this major: the expression trees must be the same. On another major (after
    // pg_upgrade, or a restore on a newer server) the trees' text has changed form, so the
    // expressions as PostgreSQL deparses them are compared; an entry without them (0.1.0, which
    // ran on 15 only) cannot be checked there and counts as changed.
    let same_expressions = if rec.major.unwrap_or(15) == crate::protect::registry::server_major() {
        live.using_hash == rec.using_hash && live.check_hash == rec.check_hash
    } else {
        (rec.using_text.is_some() || rec.check_text.is_some())
            && live.using_text == rec.using_text
            && live.check_text == rec.check_text
    };
    rec.spec == *spec
        && live.command == command_code(&spec.command)
        && live.permissive == spec.permissive
        && live.roles == want_roles
        && same_expressions
}

/// What protect() will do to one table: statements in order, and a line for the account.
pub(crate) struct TablePlan {
    pub(crate) sql: Vec<String>,
    pub(crate) account: String,
}

/// Was the tenant column's live DEFAULT set by protect(..., tenant_default => true)?
fn registered_default_is_live(
    registered: Option<&ProtectOptions>,
    column: &TenantColumn,
    default_now: &Option<String>,
) -> bool {
    registered.is_some_and(|o| {
        o.tenant_default
            && default_now.as_deref() == Some(templates::tenant_default_expr(column, o).as_str())
    })
}

/// The CREATE TRIGGER for a hierarchy's tenants table, when it lacks the trigger and the caller
/// may add it (as its owner); None otherwise.
fn tenants_trigger_sql(h: &templates::Hierarchy) -> Option<String> {
    let oid = spi(Spi::get_one_with_args::<pg_sys::Oid>(
        "SELECT pg_catalog.to_regclass($1)::pg_catalog.oid",
        &[h.table.as_str().into()],
    ))?;
    let exists = spi(Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger WHERE tgrelid = $1 AND tgname = $2)",
        &[oid.into(), crate::tenant::subtree::TENANTS_TRIGGER.into()],
    ))
    .unwrap_or(false);
    let tenants = RelInfo::load(oid);
    (!exists && tenants.is_owner).then(|| {
        format!(
            "CREATE TRIGGER {} AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {} \
             FOR EACH STATEMENT EXECUTE FUNCTION tenantguard._tenants_changed()",
            quote_identifier(crate::tenant::subtree::TENANTS_TRIGGER),
            tenants.qualified()
        )
    })
}

fn drop_default_sql(rel: &RelInfo, column: &TenantColumn) -> String {
    format!(
        "ALTER TABLE {} ALTER COLUMN {} DROP DEFAULT",
        rel.qualified(),
        quote_identifier(&column.name)
    )
}

pub(crate) fn plan_protect(
    rel: &RelInfo,
    column: &TenantColumn,
    options: &ProtectOptions,
) -> TablePlan {
    let desired = templates::desired_policies(rel, column, options);
    let registration = load_registration(rel);
    let live = live_policies(rel.oid);
    let recorded = |name: &str| {
        registration
            .as_ref()
            .and_then(|r| r.policies.iter().find(|p| p.spec.name == name))
    };

    let mut sql = Vec::new();
    let mut did = Vec::new();
    // One ALTER TABLE for both flags: each DDL statement costs a catalog update and a relcache
    // invalidation.
    let mut flags = Vec::new();
    if !rel.rls_enabled {
        flags.push("ENABLE ROW LEVEL SECURITY");
        did.push("enabled row level security".to_string());
    }
    if !rel.rls_forced {
        flags.push("FORCE ROW LEVEL SECURITY");
        did.push("forced row level security".to_string());
    }
    if !flags.is_empty() {
        sql.push(format!(
            "ALTER TABLE {} {}",
            rel.qualified(),
            flags.join(", ")
        ));
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

    // Triggers: tenantguard's own names only; one not asked for any more is dropped.
    let wanted_triggers = triggers::desired_triggers(rel, options);
    let live_triggers = triggers::live_triggers(rel.oid);
    let mut attached = Vec::new();
    let mut detached = Vec::new();
    for t in &live_triggers {
        let ours = registration
            .as_ref()
            .is_some_and(|r| r.triggers.contains(&t.name));
        if ours && !wanted_triggers.iter().any(|w| w.name == t.name) {
            sql.push(triggers::drop_sql(rel, &t.name));
            detached.push(t.name.clone());
        }
    }
    for spec in &wanted_triggers {
        match live_triggers.iter().find(|l| l.name == spec.name) {
            Some(l) if triggers::is_intact(spec, l) => {}
            Some(_) => {
                sql.push(triggers::drop_sql(rel, spec.name));
                sql.push(triggers::create_sql(rel, spec));
                attached.push(spec.name.to_string());
            }
            None => {
                sql.push(triggers::create_sql(rel, spec));
                attached.push(spec.name.to_string());
            }
        }
    }
    if !attached.is_empty() {
        did.push(format!("attached triggers {}", attached.join(", ")));
    }
    if !detached.is_empty() {
        did.push(format!("dropped triggers {}", detached.join(", ")));
    }
    let trigger_names: Vec<String> = wanted_triggers.iter().map(|t| t.name.to_string()).collect();

    // A hierarchy's tenants table gets the trigger that tells every backend to compute subtrees
    // again when it changes (src/tenant/subtree.rs); without it they are kept per transaction.
    if let Some(h) = &options.hierarchy {
        if let Some(sql_text) = tenants_trigger_sql(h) {
            sql.push(sql_text);
            did.push(format!(
                "attached trigger {} to {}",
                crate::tenant::subtree::TENANTS_TRIGGER,
                h.table
            ));
        }
    }

    // The tenant column's DEFAULT (tenant_default): set to the session's tenant, or taken back when
    // the option is dropped and the default is still the one protect() set.
    let default_now = crate::catalog::column_default(rel, &column.name);
    let ours = templates::tenant_default_expr(column, options);
    if options.tenant_default && default_now.as_deref() != Some(ours.as_str()) {
        sql.push(format!(
            "ALTER TABLE {} ALTER COLUMN {} SET DEFAULT {ours}",
            rel.qualified(),
            quote_identifier(&column.name)
        ));
        did.push(format!(
            "set the default of {} to the session's tenant",
            column.name
        ));
    } else if !options.tenant_default
        && registered_default_is_live(
            registration.as_ref().and_then(|r| r.options.as_ref()),
            column,
            &default_now,
        )
    {
        sql.push(drop_default_sql(rel, column));
        did.push(format!("dropped the default of {}", column.name));
    }

    // Row level security does not cover TRUNCATE, and REFERENCES lets a role build foreign keys
    // that probe other tenants' keys: nobody but the owner keeps either.
    let grantees = truncate_or_references_grantees(rel);
    if !grantees.is_empty() {
        sql.push(revoke_truncate_references_sql(rel, &grantees));
        did.push(format!(
            "revoked TRUNCATE and REFERENCES from {}",
            grantees.join(", ")
        ));
    }

    if is_exempt(rel) {
        sql.push(format!(
            "DELETE FROM tenantguard.exemptions WHERE relid = {}::regclass",
            quote_literal(rel.qualified())
        ));
        did.push("removed its exemption".to_string());
    }

    let registry_current = registration.as_ref().is_some_and(|r| {
        r.options.as_ref() == Some(options)
            && r.policies.len() == desired.len()
            && r.policies.iter().zip(&desired).all(|(a, b)| a.spec == *b)
            && r.triggers == trigger_names
    });
    if !sql.is_empty() || !registry_current {
        let (was_enabled, was_forced) = registration
            .as_ref()
            .map_or((rel.rls_enabled, rel.rls_forced), |r| {
                (r.rls_was_enabled, r.rls_was_forced)
            });
        let options_json = crate::protect::registry::options_to_registry(options);
        let policies_json = serde_json::to_string(&desired).expect("policies serialize");
        let triggers_array = format!(
            "ARRAY[{}]::text[]",
            trigger_names
                .iter()
                .map(quote_literal)
                .collect::<Vec<_>>()
                .join(", ")
        );
        sql.push(format!(
            "SELECT tenantguard._register({}::regclass, {}, {}::jsonb, {}::jsonb, {}, {}, {})",
            quote_literal(rel.qualified()),
            quote_literal(&column.name),
            quote_literal(options_json),
            quote_literal(policies_json),
            triggers_array,
            was_enabled,
            was_forced
        ));
        did.push(if registration.is_some() {
            "updated its registry entry".to_string()
        } else {
            "registered it".to_string()
        });
    }

    // A protected table is guarded: the script declares the change first, as its owner.
    if registration.is_some() && !sql.is_empty() {
        sql.insert(0, allow_change_sql(rel));
    }
    let account = if sql.is_empty() {
        format!("{}: already protected, nothing changed", rel.display())
    } else {
        format!("{}: {}", rel.display(), did.join("; "))
    };
    TablePlan { sql, account }
}

/// Roles other than the owner that hold TRUNCATE or REFERENCES on the table ("public" for PUBLIC).
pub fn truncate_or_references_grantees(rel: &RelInfo) -> Vec<String> {
    thread_local! {
        static PLAN: OnceCell<OwnedPreparedStatement> = const { OnceCell::new() };
    }
    probe_select(
        &PLAN,
        "SELECT DISTINCT CASE WHEN a.grantee = 0 THEN 'public'
                              ELSE pg_catalog.pg_get_userbyid(a.grantee)::text END
           FROM pg_catalog.pg_class c, pg_catalog.aclexplode(c.relacl) a
          WHERE c.oid = $1 AND a.privilege_type IN ('TRUNCATE', 'REFERENCES')
            AND a.grantee <> c.relowner
          ORDER BY 1",
        &[OID],
        &[rel.oid.into()],
        |rows| {
            rows.map(|r| r.get::<String>(1).map(|g| g.unwrap_or_default()))
                .collect()
        },
    )
}

/// `REVOKE TRUNCATE, REFERENCES` on the table from the given grantees ("public" for PUBLIC).
pub fn revoke_truncate_references_sql(rel: &RelInfo, grantees: &[String]) -> String {
    let list = grantees
        .iter()
        .map(|g| {
            if g == "public" {
                "PUBLIC".to_string()
            } else {
                quote_identifier(g)
            }
        })
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "REVOKE TRUNCATE, REFERENCES ON {} FROM {list}",
        rel.qualified()
    )
}

const ALLOW_CHANGE_PREFIX: &str = "SELECT tenantguard._allow_change(";

pub(crate) fn allow_change_sql(rel: &RelInfo) -> String {
    format!(
        "{ALLOW_CHANGE_PREFIX}{}::regclass)",
        quote_literal(rel.qualified())
    )
}

pub(crate) fn plan_unprotect(rel: &RelInfo, registration: &Registration) -> TablePlan {
    let live = live_policies(rel.oid);
    let mut sql = vec![allow_change_sql(rel)];
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
    let live_triggers = triggers::live_triggers(rel.oid);
    let detached: Vec<&String> = registration
        .triggers
        .iter()
        .filter(|t| live_triggers.iter().any(|l| &l.name == *t))
        .collect();
    for t in &detached {
        sql.push(triggers::drop_sql(rel, t));
    }
    if !detached.is_empty() {
        did.push(format!(
            "dropped triggers {}",
            detached
                .iter()
                .map(|t| t.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if let Some(base_type) = crate::catalog::column_base_type(rel, &registration.tenant_column) {
        let column = TenantColumn {
            name: registration.tenant_column.clone(),
            base_type,
            not_null: false,
        };
        let default_now = crate::catalog::column_default(rel, &column.name);
        if registered_default_is_live(registration.options.as_ref(), &column, &default_now) {
            sql.push(drop_default_sql(rel, &column));
            did.push(format!("dropped the default of {}", column.name));
        }
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

pub(crate) fn render_script(plans: &[TablePlan]) -> String {
    let mut out = String::new();
    for p in plans {
        for s in &p.sql {
            out.push_str(s);
            out.push_str(";\n");
        }
    }
    out
}

pub(crate) fn execute(plans: &[TablePlan]) -> String {
    let _busy = crate::session::Busy::enter();
    for p in plans {
        // The scripts' `_allow_change` is for running them by hand: here the guard stands aside
        // anyway, and recording the allowance would make a later refusal in this session say
        // that a script ran half (`refusal_hint`).
        for s in p.sql.iter().filter(|s| !s.starts_with(ALLOW_CHANGE_PREFIX)) {
            // Each generated statement must be exactly one statement: SPI would run them all.
            if crate::protect::sqlcheck::statement_count(s) != 1 {
                Error::Internal {
                    message: format!("tenantguard generated SQL that is not one statement: {s}"),
                    hint: "This is a bug in tenantguard; please report it with the protect() call.",
                }
                .raise();
            }
            spi(Spi::run(s));
        }
    }
    plans
        .iter()
        .map(|p| p.account.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

pub(crate) fn unprotect_plans(tbl: pg_sys::Oid) -> Option<Vec<TablePlan>> {
    let root = RelInfo::load(tbl);
    let registration = load_registration(&root)?;
    crate::protect::check_target(&root, "unprotect");
    let mut plans = vec![plan_unprotect(&root, &registration)];
    for part in root.partitions() {
        if let Some(reg) = load_registration(&part) {
            crate::protect::check_target(&part, "unprotect");
            plans.push(plan_unprotect(&part, &reg));
        }
    }
    Some(plans)
}
