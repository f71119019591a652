//! protect() and unprotect(): plan the SQL that brings a table to the wanted policy set, then run
//! it (or, for a dry run, return it).
//!
//! Every change goes through SQL statements that are collected first, so the dry run shows exactly
//! what a real run executes, and a failure on any statement rolls back all of them.

use crate::catalog::{kept_first, kept_select, kept_update, RelInfo, TenantColumn, OID, TEXT};
use crate::errors::{raise, spi};
use crate::gucs;
use crate::templates::{self, ExtraPolicy, PolicySpec, ProtectOptions};
use crate::triggers;
use pgrx::prelude::*;
use pgrx::spi::OwnedPreparedStatement;
use pgrx::spi::{quote_identifier, quote_literal};
use pgrx::JsonB;
use pgrx::{PgBuiltInOids, PgOid};
use serde::{Deserialize, Serialize};
use std::cell::OnceCell;

/// Arguments of protect() as the SQL wrapper passes them (a jsonb object).
#[derive(Deserialize, Debug, Default)]
#[serde(default)]
struct ProtectArgs {
    tenant_column: Option<String>,
    admin_role: Option<String>,
    time_window: Option<String>,
    time_column: Option<String>,
    app_roles: Option<Vec<Option<String>>>,
    app_roles_commands: Option<Vec<Option<String>>>,
    shared_read: Option<String>,
    extra_policies: Option<serde_json::Value>,
    audit: Option<bool>,
    audit_exclude: Option<Vec<Option<String>>>,
    updated_at: Option<bool>,
    skip_noop_updates: Option<bool>,
    dry_run: bool,
}

/// A policy as the registry recorded it: the spec, plus a hash of each expression's node tree as
/// PostgreSQL stored it (locations stripped). Node trees do not depend on session settings, so a
/// later protect() can tell a policy someone altered from one left as it was made.
#[derive(Serialize, Deserialize, Debug, Clone)]
struct RecordedPolicy {
    #[serde(flatten)]
    spec: PolicySpec,
    #[serde(default)]
    using_hash: Option<String>,
    #[serde(default)]
    check_hash: Option<String>,
}

/// A registry row.
struct Registration {
    tenant_column: String,
    options: Option<ProtectOptions>,
    policies: Vec<RecordedPolicy>,
    triggers: Vec<String>,
    rls_was_enabled: bool,
    rls_was_forced: bool,
}

/// A policy as it is in pg_policy now.
struct LivePolicy {
    name: String,
    command: String,
    permissive: bool,
    roles: Vec<String>,
    using_hash: Option<String>,
    check_hash: Option<String>,
}

fn command_code(command: &str) -> &'static str {
    match command {
        "SELECT" => "r",
        "INSERT" => "a",
        "UPDATE" => "w",
        "DELETE" => "d",
        _ => "*",
    }
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
    thread_local! {
        static PLAN: OnceCell<OwnedPreparedStatement> = const { OnceCell::new() };
    }
    kept_select(
        &PLAN,
        "SELECT options, policies, rls_was_enabled, rls_was_forced, tenant_column::text,
                triggers::text[]
           FROM tenantguard.registry WHERE relid = $1",
        &[OID],
        &[rel.oid.into()],
        |rows| {
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
                    tenant_column: row.get::<String>(5)?.unwrap_or_default(),
                    options,
                    policies,
                    triggers: row.get::<Vec<String>>(6)?.unwrap_or_default(),
                    rls_was_enabled: row.get::<bool>(3)?.unwrap_or(false),
                    rls_was_forced: row.get::<bool>(4)?.unwrap_or(false),
                });
            }
            Ok(out)
        },
    )
}

fn live_policies(relid: pg_sys::Oid) -> Vec<LivePolicy> {
    thread_local! {
        static PLAN: OnceCell<OwnedPreparedStatement> = const { OnceCell::new() };
    }
    kept_select(
        &PLAN,
        "SELECT p.polname::text, p.polcmd::text, p.polpermissive,
                ARRAY(SELECT CASE WHEN r = 0 THEN 'public' ELSE pg_catalog.pg_get_userbyid(r)::text END
                        FROM pg_catalog.unnest(p.polroles) AS r),
                p.polqual::text, p.polwithcheck::text
           FROM pg_catalog.pg_policy p WHERE p.polrelid = $1",
        &[OID],
        &[relid.into()],
        |rows| {
            rows.map(|row| {
                Ok(LivePolicy {
                    name: row.get::<String>(1)?.unwrap_or_default(),
                    command: row.get::<String>(2)?.unwrap_or_default(),
                    permissive: row.get::<bool>(3)?.unwrap_or(true),
                    roles: {
                        // Sorted here, like the spec's roles, not by the database's collation.
                        let mut roles = row.get::<Vec<String>>(4)?.unwrap_or_default();
                        roles.sort();
                        roles
                    },
                    using_hash: row.get::<String>(5)?.as_deref().map(tree_hash),
                    check_hash: row.get::<String>(6)?.as_deref().map(tree_hash),
                })
            })
            .collect()
        },
    )
}

/// A stable hash of a stored expression tree (pg_node_tree text) with its `:location` fields
/// removed: the same expression parsed from different SQL text gives the same hash, and the tree
/// does not depend on session settings the way deparsed text does. Functions that are not built in
/// (tenantguard's own tenant functions) are hashed by their qualified signature, not their oid,
/// which changes when a dump is restored. FNV-1a, 64 bits.
fn tree_hash(tree: &str) -> String {
    const LOCATION: &str = " :location ";
    const FUNCID: &str = " :funcid ";
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    let mut rest = tree;
    loop {
        let next = [LOCATION, FUNCID]
            .into_iter()
            .filter_map(|mark| rest.find(mark).map(|at| (at, mark)))
            .min();
        let Some((at, mark)) = next else { break };
        feed(&rest.as_bytes()[..at]);
        let tail = &rest[at + mark.len()..];
        let end = tail
            .char_indices()
            .find(|&(i, c)| !(c.is_ascii_digit() || (i == 0 && c == '-')))
            .map_or(tail.len(), |(i, _)| i);
        if mark == FUNCID {
            feed(mark.as_bytes());
            feed(function_identity(&tail[..end]).as_bytes());
        }
        rest = &tail[end..];
    }
    feed(rest.as_bytes());
    format!("{hash:016x}")
}

/// A function oid as text: built-in ones as they are, others as their qualified signature.
fn function_identity(oid: &str) -> String {
    match oid.parse::<u32>() {
        Ok(n) if n >= pg_sys::FirstNormalObjectId => {
            // SAFETY: returns a palloc'd string; an unknown oid gives its number, not an error.
            unsafe {
                std::ffi::CStr::from_ptr(pg_sys::format_procedure_qualified(n.into()))
                    .to_string_lossy()
                    .into_owned()
            }
        }
        _ => oid.to_string(),
    }
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
        && live.using_hash == rec.using_hash
        && live.check_hash == rec.check_hash
}

/// What protect() will do to one table: statements in order, and a line for the account.
struct TablePlan {
    sql: Vec<String>,
    account: String,
}

fn plan_protect(rel: &RelInfo, column: &TenantColumn, options: &ProtectOptions) -> TablePlan {
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
        let options_json = serde_json::to_string(options).expect("options serialize");
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
    kept_select(
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

fn allow_change_sql(rel: &RelInfo) -> String {
    format!(
        "SELECT tenantguard._allow_change({}::regclass)",
        quote_literal(rel.qualified())
    )
}

fn is_exempt(rel: &RelInfo) -> bool {
    thread_local! {
        static PLAN: OnceCell<OwnedPreparedStatement> = const { OnceCell::new() };
    }
    kept_first::<bool>(
        &PLAN,
        "SELECT true FROM tenantguard.exemptions WHERE relid = $1",
        &[OID],
        &[rel.oid.into()],
    )
    .unwrap_or(false)
}

fn plan_unprotect(rel: &RelInfo, registration: &Registration) -> TablePlan {
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
    let _busy = crate::session::Busy::enter();
    for p in plans {
        for s in &p.sql {
            // Each generated statement must be exactly one statement: SPI would run them all.
            if crate::sqlcheck::statement_count(s) != 1 {
                raise(
                    PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                    format!("tenantguard generated SQL that is not one statement: {s}"),
                    "This is a bug in tenantguard; please report it with the protect() call.",
                );
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

/// `extra_policies` entries may say restrictive as PostgreSQL does (`"as": "restrictive"`) or as
/// `"restrictive": true`, and `"with_check"` for `"check"`: rewritten to the stored form
/// (`"permissive"`, `"check"`). Contradicting or repeated keys are an error.
fn extra_policy_aliases(v: serde_json::Value) -> Result<serde_json::Value, String> {
    let serde_json::Value::Array(items) = v else {
        return Ok(v);
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let serde_json::Value::Object(mut o) = item else {
            out.push(item);
            continue;
        };
        let mut permissive: Vec<bool> = Vec::new();
        if let Some(p) = o.remove("permissive") {
            permissive.push(
                p.as_bool()
                    .ok_or("extra_policies: \"permissive\" must be true or false")?,
            );
        }
        if let Some(r) = o.remove("restrictive") {
            permissive.push(
                !r.as_bool()
                    .ok_or("extra_policies: \"restrictive\" must be true or false")?,
            );
        }
        if let Some(a) = o.remove("as") {
            match a.as_str().map(str::to_ascii_lowercase).as_deref() {
                Some("permissive") => permissive.push(true),
                Some("restrictive") => permissive.push(false),
                _ => {
                    return Err(
                        "extra_policies: \"as\" must be \"permissive\" or \"restrictive\"".into(),
                    )
                }
            }
        }
        if permissive.windows(2).any(|w| w[0] != w[1]) {
            return Err("extra_policies: permissive and restrictive contradict each other".into());
        }
        if let Some(&p) = permissive.first() {
            o.insert("permissive".into(), serde_json::Value::Bool(p));
        }
        if let Some(c) = o.remove("with_check") {
            if o.contains_key("check") {
                return Err("extra_policies: give \"check\" or \"with_check\", not both".into());
            }
            o.insert("check".into(), c);
        }
        out.push(serde_json::Value::Object(o));
    }
    Ok(serde_json::Value::Array(out))
}

/// Checks protect()'s arguments that do not depend on the table, and fills in the defaults.
fn resolve_options(args: ProtectArgs) -> ProtectOptions {
    let invalid = |msg: String, hint: &str| -> ! {
        raise(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, msg, hint)
    };
    let tenant_column = args
        .tenant_column
        .filter(|c| !c.is_empty())
        .unwrap_or_else(gucs::tenant_column);

    if let Some(role) = &args.admin_role {
        templates::check_role("admin_role", role);
    }

    let time_column = match (&args.time_window, args.time_column) {
        (Some(window), column) => {
            let positive = spi(Spi::get_one_with_args::<bool>(
                "SELECT $1::pg_catalog.interval OPERATOR(pg_catalog.>) '0'::pg_catalog.interval",
                &[window.as_str().into()],
            ));
            if positive != Some(true) {
                invalid(
                    format!("time_window must be a positive interval, not \"{window}\""),
                    "For example time_window => '90 days'.",
                );
            }
            Some(column.unwrap_or_else(|| "created_at".into()))
        }
        (None, Some(column)) => raise(
            PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            format!("time_column \"{column}\" was given but time_window is NULL"),
            "Pass time_window => '90 days' (or another positive interval) with time_column.",
        ),
        (None, None) => None,
    };

    let (app_roles, app_roles_commands, role_setting) = match args.app_roles {
        None => (None, Vec::new(), None),
        Some(roles) => {
            let roles: Vec<String> = roles
                .into_iter()
                .flatten()
                .filter(|r| !r.is_empty())
                .collect();
            if roles.is_empty() {
                invalid(
                    "app_roles must name at least one application role".into(),
                    "For example app_roles => ARRAY['admin', 'finance_manager'], or NULL for no role check.",
                );
            }
            let mut commands: Vec<String> = Vec::new();
            for c in args
                .app_roles_commands
                .unwrap_or_else(|| vec![Some("SELECT".into())])
                .into_iter()
                .flatten()
            {
                let c = templates::normalize_command("app_roles_commands", &c);
                if !commands.contains(&c) {
                    commands.push(c);
                }
            }
            if commands.is_empty() {
                invalid(
                    "app_roles_commands must name at least one command".into(),
                    "For example app_roles_commands => ARRAY['SELECT', 'UPDATE'].",
                );
            }
            if commands.iter().any(|c| c == "ALL") {
                commands = vec!["ALL".into()];
            }
            (Some(roles), commands, Some(gucs::role_setting()))
        }
    };

    let extra_policies = match args.extra_policies {
        None | Some(serde_json::Value::Null) => Vec::new(),
        Some(v) => {
            let v = extra_policy_aliases(v).unwrap_or_else(|msg| {
                invalid(
                    msg,
                    "Give either \"permissive\": true|false, \"restrictive\": true|false or \"as\": \"permissive\"|\"restrictive\", once.",
                )
            });
            let list: Vec<ExtraPolicy> = serde_json::from_value(v).unwrap_or_else(|e| {
                invalid(
                    format!("extra_policies is not a list of policies: {e}"),
                    "Pass a jsonb array of objects with name, command, permissive, roles, using and check.",
                )
            });
            let mut seen = Vec::new();
            list.into_iter()
                .map(|mut x| {
                    let name_ok = !x.name.is_empty()
                        && x.name.len() <= 40
                        && x.name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
                    if !name_ok || seen.contains(&x.name) {
                        invalid(
                            format!("extra_policies: invalid or repeated policy name \"{}\"", x.name),
                            "Names are 1 to 40 characters of a-z, 0-9 and _, each used once.",
                        );
                    }
                    seen.push(x.name.clone());
                    x.command = templates::normalize_command("extra_policies", &x.command);
                    for r in &x.roles {
                        templates::check_role("extra_policies", r);
                    }
                    let takes_using = x.command != "INSERT";
                    let takes_check = x.command != "SELECT" && x.command != "DELETE";
                    if (x.using.is_none() && x.check.is_none())
                        || (x.using.is_some() && !takes_using)
                        || (x.check.is_some() && !takes_check)
                    {
                        invalid(
                            format!("extra_policies \"{}\": a {} policy needs {}", x.name, x.command,
                                match (takes_using, takes_check) {
                                    (true, true) => "using, check or both",
                                    (true, false) => "using and no check",
                                    _ => "check and no using",
                                }),
                            "SELECT and DELETE take using; INSERT takes check; UPDATE and ALL take either or both.",
                        );
                    }
                    x
                })
                .collect()
        }
    };

    let mut audit_exclude: Vec<String> = Vec::new();
    for c in args.audit_exclude.unwrap_or_default().into_iter().flatten() {
        if c.is_empty() {
            invalid(
                "audit_exclude must not contain an empty column name".into(),
                "For example audit_exclude => ARRAY['password_hash'].",
            );
        }
        if !audit_exclude.contains(&c) {
            audit_exclude.push(c);
        }
    }

    ProtectOptions {
        tenant_column,
        tenant_setting: gucs::tenant_setting(),
        admin_role: args.admin_role,
        time_window: args.time_window,
        time_column,
        app_roles,
        app_roles_commands,
        role_setting,
        shared_read: args.shared_read,
        extra_policies,
        audit: args.audit.unwrap_or(true),
        audit_exclude,
        updated_at: args.updated_at,
        skip_noop_updates: args.skip_noop_updates.unwrap_or(true),
    }
}

#[pg_extern(volatile, parallel_unsafe)]
fn _protect(tbl: pg_sys::Oid, args: JsonB) -> String {
    let _internal = crate::session::Internal::enter();
    let args: ProtectArgs = match serde_json::from_value(args.0) {
        Ok(a) => a,
        Err(e) => raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("invalid protect() arguments: {e}"),
            "See the README for protect()'s arguments.",
        ),
    };
    let dry_run = args.dry_run;
    let options = resolve_options(args);
    protect_with(tbl, &options, dry_run)
}

/// Protects a table and every partition below it with resolved options. Every table is checked
/// before anything changes.
fn protect_with(tbl: pg_sys::Oid, options: &ProtectOptions, dry_run: bool) -> String {
    let root = RelInfo::load(tbl);
    root.check_protectable("protect");
    let mut targets = vec![root.clone()];
    targets.extend(root.partitions());
    let checked: Vec<(RelInfo, TenantColumn)> = targets
        .into_iter()
        .map(|rel| {
            rel.check_protectable("protect");
            let col = TenantColumn::load(&rel, &options.tenant_column);
            (rel, col)
        })
        .collect();

    let plans: Vec<TablePlan> = checked
        .iter()
        .map(|(rel, col)| plan_protect(rel, col, options))
        .collect();
    if dry_run {
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

/// Auto-protect (event trigger): a partition or inheritance child takes its protected parent's
/// options; any other table gets the default templates.
pub fn auto_protect(tbl: pg_sys::Oid) -> String {
    thread_local! {
        static PARENT_PLAN: OnceCell<OwnedPreparedStatement> = const { OnceCell::new() };
        static ADMIN_PLAN: OnceCell<OwnedPreparedStatement> = const { OnceCell::new() };
    }
    let inherited = kept_first::<JsonB>(
        &PARENT_PLAN,
        "SELECT r.options FROM pg_catalog.pg_inherits i
           JOIN tenantguard.registry r ON r.relid = i.inhparent
          WHERE i.inhrelid = $1 ORDER BY i.inhseqno LIMIT 1",
        &[OID],
        &[tbl.into()],
    )
    .and_then(|j| serde_json::from_value::<ProtectOptions>(j.0).ok());
    let options = inherited.unwrap_or_else(|| {
        let admin_exists = kept_first::<bool>(
            &ADMIN_PLAN,
            "SELECT true FROM pg_catalog.pg_roles WHERE rolname = 'tenantguard_admin'",
            &[],
            &[],
        )
        .unwrap_or(false);
        resolve_options(ProtectArgs {
            admin_role: admin_exists.then(|| "tenantguard_admin".to_string()),
            ..Default::default()
        })
    });
    protect_with(tbl, &options, false)
}

/// After `ALTER TABLE ... RENAME COLUMN old TO new` on a protected table: the options that name
/// the column by name follow it. audit_exclude above all (the audit trigger names excluded
/// columns, and would otherwise start writing the renamed column's values), and time_column (its
/// policy follows the column by itself, but a later protect() with the stale name would fail).
/// Re-protects with the registered options so changed; None when the table is not registered or
/// no option names `old`.
pub fn follow_column_rename(tbl: pg_sys::Oid, old: &str, new: &str) -> Option<String> {
    let rel = RelInfo::load(tbl);
    let mut options = load_registration(&rel)?.options?;
    let excluded = options.audit_exclude.iter().any(|c| c == old);
    let timed = options.time_column.as_deref() == Some(old);
    if !excluded && !timed {
        return None;
    }
    for c in options.audit_exclude.iter_mut() {
        if c == old {
            *c = new.to_string();
        }
    }
    if timed {
        options.time_column = Some(new.to_string());
    }
    Some(protect_with(tbl, &options, false))
}

/// `ALTER TABLE ... ATTACH PARTITION` of a table that is protected already: a partition takes its
/// protected parent's options (templates included), as one created in place would, so that direct
/// access to it is limited exactly as access through the parent. None when nothing changes.
pub fn adopt_parent_options(tbl: pg_sys::Oid) -> Option<String> {
    thread_local! {
        static PLAN: OnceCell<OwnedPreparedStatement> = const { OnceCell::new() };
    }
    let parent = kept_first::<JsonB>(
        &PLAN,
        "SELECT r.options FROM pg_catalog.pg_inherits i
           JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid AND c.relispartition
           JOIN tenantguard.registry r ON r.relid = i.inhparent
          WHERE i.inhrelid = $1",
        &[OID],
        &[tbl.into()],
    )
    .and_then(|j| serde_json::from_value::<ProtectOptions>(j.0).ok())?;
    let rel = RelInfo::load(tbl);
    let own = load_registration(&rel)?.options?;
    if own == parent {
        return None;
    }
    Some(protect_with(tbl, &parent, false))
}

/// What a command left broken on a protected table (the guard's end-state check): row level
/// security off or not forced, the tenant column gone or renamed, a policy gone. Policy
/// expressions are not compared here: the guard refuses ALTER POLICY on them outright.
pub fn drift(rel: &RelInfo) -> Vec<String> {
    let Some(reg) = load_registration(rel) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if !rel.rls_enabled {
        out.push("row level security would be disabled".to_string());
    }
    if !rel.rls_forced {
        out.push("row level security would no longer be forced".to_string());
    }
    thread_local! {
        static COLUMN_PLAN: OnceCell<OwnedPreparedStatement> = const { OnceCell::new() };
    }
    let has_column = kept_first::<bool>(
        &COLUMN_PLAN,
        "SELECT true FROM pg_catalog.pg_attribute
          WHERE attrelid = $1 AND attname = $2 AND attnum > 0 AND NOT attisdropped",
        &[OID, TEXT],
        &[rel.oid.into(), reg.tenant_column.as_str().into()],
    )
    .unwrap_or(false);
    if !has_column {
        out.push(format!(
            "its tenant column \"{}\" would be renamed or dropped",
            reg.tenant_column
        ));
    }
    let live = live_policies(rel.oid);
    for p in &reg.policies {
        if !live.iter().any(|l| l.name == p.spec.name) {
            out.push(format!("its policy \"{}\" would be gone", p.spec.name));
        }
    }
    if !reg.triggers.is_empty() {
        let live = triggers::live_triggers(rel.oid);
        for t in &reg.triggers {
            match live.iter().find(|l| &l.name == t) {
                None => out.push(format!("its trigger \"{t}\" would be gone")),
                Some(l) if !l.enabled => out.push(format!("its trigger \"{t}\" would be disabled")),
                Some(_) => {}
            }
        }
    }
    out
}

/// True when `policy` is one tenantguard recorded for the table.
pub fn is_recorded_policy(relid: pg_sys::Oid, policy: &str) -> bool {
    thread_local! {
        static PLAN: OnceCell<OwnedPreparedStatement> = const { OnceCell::new() };
    }
    kept_first::<bool>(
        &PLAN,
        "SELECT true FROM tenantguard.registry
          WHERE relid = $1
            AND policies @> pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object('name', $2))",
        &[OID, TEXT],
        &[relid.into(), policy.into()],
    )
    .unwrap_or(false)
}

/// The registered tenant column of a protected table.
pub fn registered_tenant_column(tbl: pg_sys::Oid) -> Option<String> {
    thread_local! {
        static PLAN: OnceCell<OwnedPreparedStatement> = const { OnceCell::new() };
    }
    kept_first::<String>(
        &PLAN,
        "SELECT tenant_column::text FROM tenantguard.registry WHERE relid = $1",
        &[OID],
        &[tbl.into()],
    )
}

fn is_registered(tbl: pg_sys::Oid) -> bool {
    registered_tenant_column(tbl).is_some()
}

/// Drops the table's registry row: the last statement of unprotect() and its script.
#[pg_extern(volatile, parallel_unsafe)]
fn _unregister(tbl: pg_sys::Oid) {
    let _internal = crate::session::Internal::enter();
    crate::raw::with_row_security(|| {
        if !is_registered(tbl) {
            return;
        }
        crate::guard::require_allowance(tbl, "drop");
        spi(Spi::run_with_args(
            "DELETE FROM tenantguard.registry WHERE relid = $1",
            &[tbl.into()],
        ));
    })
}

/// Records a table after protect() created its policies (the last statement of protect()'s plan
/// and of its dry-run script). Runs as the caller: the registry's own row level security lets only
/// the table's owner write its row. rls_was_* keep the flags from before the first protect(), for
/// unprotect().
#[pg_extern(volatile, parallel_unsafe)]
fn _register(
    tbl: pg_sys::Oid,
    tenant_column: &str,
    options: JsonB,
    policies: JsonB,
    triggers: Vec<String>,
    rls_was_enabled: bool,
    rls_was_forced: bool,
) {
    let _internal = crate::session::Internal::enter();
    crate::raw::with_row_security(|| {
        register(
            tbl,
            tenant_column,
            options,
            policies,
            triggers,
            rls_was_enabled,
            rls_was_forced,
        )
    })
}

fn register(
    tbl: pg_sys::Oid,
    tenant_column: &str,
    options: JsonB,
    policies: JsonB,
    triggers: Vec<String>,
    rls_was_enabled: bool,
    rls_was_forced: bool,
) {
    if is_registered(tbl) {
        crate::guard::require_allowance(tbl, "rewrite");
    }
    let specs: Vec<PolicySpec> = serde_json::from_value(policies.0).unwrap_or_else(|e| {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("invalid policy list: {e}"),
            "_register() takes the policy list protect() generates.",
        )
    });
    let live = live_policies(tbl);
    let recorded: Vec<RecordedPolicy> = specs
        .into_iter()
        .map(|spec| {
            let l = live.iter().find(|l| l.name == spec.name);
            RecordedPolicy {
                using_hash: l.and_then(|l| l.using_hash.clone()),
                check_hash: l.and_then(|l| l.check_hash.clone()),
                spec,
            }
        })
        .collect();
    let recorded = serde_json::to_value(&recorded).expect("policies serialize");
    thread_local! {
        static PLAN: OnceCell<OwnedPreparedStatement> = const { OnceCell::new() };
    }
    let jsonb = PgOid::BuiltIn(PgBuiltInOids::JSONBOID);
    let boolean = PgOid::BuiltIn(PgBuiltInOids::BOOLOID);
    kept_update(
        &PLAN,
        "INSERT INTO tenantguard.registry AS r
                (relid, tenant_column, options, policies, triggers, rls_was_enabled, rls_was_forced)
         VALUES ($1::pg_catalog.regclass, $2, $3, $4, $5::pg_catalog.name[], $6, $7)
         ON CONFLICT (relid) DO UPDATE
            SET tenant_column = EXCLUDED.tenant_column,
                options       = EXCLUDED.options,
                policies      = EXCLUDED.policies,
                triggers      = EXCLUDED.triggers,
                protected_at  = pg_catalog.now(),
                protected_by  = CURRENT_USER",
        &[
            OID,
            TEXT,
            jsonb,
            jsonb,
            PgOid::BuiltIn(PgBuiltInOids::TEXTARRAYOID),
            boolean,
            boolean,
        ],
        &[
            tbl.into(),
            tenant_column.into(),
            options.into(),
            JsonB(recorded).into(),
            triggers.into(),
            rls_was_enabled.into(),
            rls_was_forced.into(),
        ],
    );
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
    let _internal = crate::session::Internal::enter();
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

#[pg_extern(volatile, parallel_unsafe)]
fn _exempt(tbl: pg_sys::Oid, reason: Option<&str>) -> String {
    let _internal = crate::session::Internal::enter();
    let rel = RelInfo::load(tbl);
    rel.check_protectable("exempt");
    let Some(reason) = reason else {
        raise(
            PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            format!("exempting table \"{}\" needs a reason", rel.display()),
            "Say why the table stays unprotected, e.g. 'shared lookup data, no tenant rows'.",
        );
    };
    if reason.trim().is_empty() {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("exempting table \"{}\" needs a reason", rel.display()),
            "Say why the table stays unprotected, e.g. 'shared lookup data, no tenant rows'.",
        );
    }
    let mut account = Vec::new();
    if let Some(plans) = unprotect_plans(tbl) {
        account.push(execute(&plans));
    }
    spi(Spi::run_with_args(
        "INSERT INTO tenantguard.exemptions AS x (relid, reason) VALUES ($1::oid::regclass, $2)
         ON CONFLICT (relid) DO UPDATE
            SET reason = EXCLUDED.reason, exempted_at = pg_catalog.now(), exempted_by = CURRENT_USER",
        &[tbl.into(), reason.into()],
    ));
    account.push(format!("{}: exempt ({reason})", rel.display()));
    account.join("\n")
}

#[pg_extern(volatile, parallel_unsafe)]
fn _unexempt(tbl: pg_sys::Oid) -> String {
    let _internal = crate::session::Internal::enter();
    let rel = RelInfo::load(tbl);
    rel.check_protectable("unexempt");
    let removed = spi(Spi::connect_mut(|client| {
        client
            .update(
                "DELETE FROM tenantguard.exemptions WHERE relid = $1::oid::regclass",
                None,
                &[tbl.into()],
            )
            .map(|t| !t.is_empty())
    }));
    if removed {
        format!("{}: no longer exempt", rel.display())
    } else {
        let msg = format!("table \"{}\" is not exempt; nothing to do", rel.display());
        notice!("{msg}");
        msg
    }
}

extension_sql!(
    r#"
CREATE FUNCTION tenantguard.exempt(tbl regclass, reason text) RETURNS text
LANGUAGE sql VOLATILE
SET row_security = on
AS $$ SELECT tenantguard._exempt(tbl, reason) $$;
COMMENT ON FUNCTION tenantguard.exempt(regclass, text) IS
  'Record a deliberate exception: the table stays unprotected, auto-protect skips it, coverage() shows it as exempt.';

CREATE FUNCTION tenantguard.unexempt(tbl regclass) RETURNS text
LANGUAGE sql VOLATILE
SET row_security = on
AS $$ SELECT tenantguard._unexempt(tbl) $$;

CREATE FUNCTION tenantguard.protect(
    tbl regclass,
    tenant_column name DEFAULT NULL,
    admin_role name DEFAULT 'tenantguard_admin',
    time_window interval DEFAULT NULL,
    time_column name DEFAULT NULL,
    app_roles text[] DEFAULT NULL,
    app_roles_commands text[] DEFAULT ARRAY['SELECT'],
    shared_read text DEFAULT NULL,
    extra_policies jsonb DEFAULT NULL,
    dry_run boolean DEFAULT false,
    audit boolean DEFAULT true,
    audit_exclude text[] DEFAULT NULL,
    updated_at boolean DEFAULT NULL,
    skip_noop_updates boolean DEFAULT true)
RETURNS text
LANGUAGE sql VOLATILE
SET intervalstyle = 'postgres'
SET row_security = on
AS $$
  SELECT tenantguard._protect(tbl, pg_catalog.jsonb_build_object(
           'tenant_column', tenant_column,
           'admin_role', admin_role,
           'time_window', time_window,
           'time_column', time_column,
           'app_roles', app_roles,
           'app_roles_commands', app_roles_commands,
           'shared_read', shared_read,
           'extra_policies', extra_policies,
           'audit', audit,
           'audit_exclude', audit_exclude,
           'updated_at', updated_at,
           'skip_noop_updates', skip_noop_updates,
           'dry_run', dry_run))
$$;
COMMENT ON FUNCTION tenantguard.protect(regclass, name, name, interval, name, text[], text[], text, jsonb, boolean, boolean, text[], boolean, boolean) IS
  'Enable and force row level security on a table (and its partitions) with tenant isolation and the asked-for policy templates. Idempotent.';

CREATE FUNCTION tenantguard.policies(tbl regclass)
RETURNS TABLE (policy_name name, template text, command text, kind text, roles name[],
               using_expr text, check_expr text, present boolean)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
SET row_security = on
AS $$
  SELECT (x.p ->> 'name')::name, x.p ->> 'template', x.p ->> 'command',
         CASE WHEN (x.p ->> 'permissive')::boolean THEN 'permissive' ELSE 'restrictive' END,
         CASE WHEN jsonb_array_length(x.p -> 'roles') = 0 THEN ARRAY['public']::name[]
              ELSE ARRAY(SELECT jsonb_array_elements_text(x.p -> 'roles'))::name[] END,
         COALESCE(pg_get_expr(pol.polqual, pol.polrelid), x.p ->> 'using'),
         COALESCE(pg_get_expr(pol.polwithcheck, pol.polrelid), x.p ->> 'check'),
         pol.oid IS NOT NULL
    FROM tenantguard.registry r
   CROSS JOIN LATERAL jsonb_array_elements(r.policies) WITH ORDINALITY AS x(p, ord)
    LEFT JOIN pg_policy pol ON pol.polrelid = r.relid AND pol.polname = (x.p ->> 'name')
   WHERE r.relid = tbl
   ORDER BY x.ord
$$;
COMMENT ON FUNCTION tenantguard.policies(regclass) IS
  'The policies tenantguard generated for a table: template, command, permissive/restrictive, roles, expressions.';

CREATE FUNCTION tenantguard.unprotect(tbl regclass) RETURNS text
LANGUAGE sql VOLATILE
SET row_security = on
AS $$ SELECT tenantguard._unprotect(tbl, false) $$;
COMMENT ON FUNCTION tenantguard.unprotect(regclass) IS
  'Remove exactly what protect() created; policies written by users stay.';

CREATE FUNCTION tenantguard.unprotect_sql(tbl regclass) RETURNS text
LANGUAGE sql VOLATILE
SET row_security = on
AS $$ SELECT tenantguard._unprotect(tbl, true) $$;
COMMENT ON FUNCTION tenantguard.unprotect_sql(regclass) IS
  'The SQL unprotect() would run, for the rollback half of a migration.';
"#,
    name = "protect_api",
    requires = [
        _protect,
        _unprotect,
        _exempt,
        _unexempt,
        _register,
        "bootstrap"
    ],
);

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    fn count(sql: &str) -> i64 {
        Spi::get_one::<i64>(sql).unwrap().unwrap()
    }

    fn setup_two_tenants(key_type: &str, a: &str, b: &str) {
        // These tests call protect() themselves.
        Spi::run("SET LOCAL tenantguard.auto_protect = off").unwrap();
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
        // Four tenant policies and the admin override (TO tenantguard_admin).
        assert_eq!(
            count("SELECT count(*) FROM pg_policy WHERE polrelid = 't'::regclass"),
            5
        );
        assert_eq!(
            count(
                "SELECT count(*) FROM pg_policy WHERE polrelid = 't'::regclass
                    AND polroles = ARRAY['tenantguard_admin'::regrole::oid]"
            ),
            1
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
    fn auto_protect_on_create_table() {
        Spi::run("CREATE TABLE auto_t (id int, tenant_id text)").unwrap();
        Spi::run("CREATE TABLE auto_plain (id int)").unwrap();
        assert_eq!(
            count("SELECT count(*) FROM tenantguard.registry WHERE relid = 'auto_t'::regclass"),
            1
        );
        assert_eq!(
            count("SELECT count(*) FROM tenantguard.registry WHERE relid = 'auto_plain'::regclass"),
            0
        );
    }

    #[pg_test(
        error = "table \"public.guarded\" is protected by tenantguard: row level security would be disabled"
    )]
    fn guard_refuses_disable() {
        Spi::run("CREATE TABLE guarded (id int, tenant_id text)").unwrap();
        Spi::run("ALTER TABLE guarded DISABLE ROW LEVEL SECURITY").unwrap();
    }

    #[pg_test]
    fn tree_hash_ignores_locations_only() {
        let a = "{OPEXPR :opno 98 :args ({VAR :varno 1 :location 7} {CONST :location -1}) :location 17}";
        let b =
            "{OPEXPR :opno 98 :args ({VAR :varno 1 :location 70} {CONST :location 3}) :location 1}";
        let c = "{OPEXPR :opno 99 :args ({VAR :varno 1 :location 7} {CONST :location -1}) :location 17}";
        assert_eq!(super::tree_hash(a), super::tree_hash(b));
        assert_ne!(super::tree_hash(a), super::tree_hash(c));
    }

    #[pg_test]
    fn tree_hash_names_non_builtin_functions_by_signature() {
        // A restore gives tenantguard's functions new oids; the recorded hash must still match.
        let make = |name: &str| {
            Spi::get_one::<pg_sys::Oid>(&format!(
                "CREATE FUNCTION public.{name}(s text) RETURNS text LANGUAGE sql AS 'SELECT s';
                 SELECT 'public.{name}(text)'::regprocedure::oid"
            ))
            .unwrap()
            .unwrap()
        };
        let hash = |oid: pg_sys::Oid| {
            super::tree_hash(&format!(
                "{{FUNCEXPR :funcid {} :location 3}}",
                oid.to_u32()
            ))
        };
        let first = make("tg_f");
        let recorded = hash(first);
        Spi::run("DROP FUNCTION public.tg_f(text)").unwrap();
        let again = make("tg_f");
        assert_ne!(first, again);
        assert_eq!(hash(again), recorded);
        assert_ne!(hash(make("tg_g")), recorded);
        assert_eq!(
            super::function_identity(&again.to_u32().to_string()),
            "public.tg_f(pg_catalog.text)"
        );
        // Built-in functions keep their numbers.
        assert_eq!(super::function_identity("2293"), "2293");
    }

    #[pg_test]
    fn predicate_is_null_safe_and_typed() {
        let col = |t: &str| crate::catalog::TenantColumn {
            name: "tenant_id".into(),
            base_type: t.into(),
            not_null: true,
        };
        let p = crate::templates::tenant_predicate(&col("uuid"), "app.current_tenant_id");
        assert_eq!(
            p,
            "tenant_id OPERATOR(pg_catalog.=) tenantguard.tenant_uuid('app.current_tenant_id')"
        );
        let p = crate::templates::tenant_predicate(&col("int2"), "x.y");
        assert_eq!(
            p,
            "tenant_id OPERATOR(pg_catalog.=) tenantguard.tenant_smallint('x.y')"
        );
        let p = crate::templates::tenant_predicate(&col("varchar"), "x.y");
        assert_eq!(
            p,
            "tenant_id OPERATOR(pg_catalog.=) tenantguard.tenant_text('x.y')"
        );
    }
}
