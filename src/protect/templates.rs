//! Policy templates: the policy shapes multi-tenant teams write by hand on every table, generated
//! from protect()'s named arguments.
//!
//! Combination rules (PostgreSQL's own): permissive policies are OR-ed, restrictive ones are AND-ed
//! with that result. Tenant isolation, admin override and shared read are permissive; the time
//! window and role-based access are restrictive, so they only ever narrow what is visible, and they
//! bind every role, the admin role included. No permissive template grants a write to anyone but
//! the tenant itself or the admin role.

use crate::catalog::{kept_first, TEXT};
use crate::catalog::{RelInfo, TenantColumn};
use crate::errors::Error;
use pgrx::pg_sys::panic::CaughtError;
use pgrx::prelude::*;
use pgrx::spi::OwnedPreparedStatement;
use pgrx::spi::{quote_identifier, quote_literal};
use serde::{Deserialize, Serialize};
use std::cell::OnceCell;

pub const POLICY_PREFIX: &str = "tenantguard_";
pub const TENANT_COMMANDS: [&str; 4] = ["SELECT", "INSERT", "UPDATE", "DELETE"];

/// The resolved options a table was protected with, kept in the registry as JSON.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
#[serde(default)]
pub struct ProtectOptions {
    pub tenant_column: String,
    pub tenant_setting: String,
    pub admin_role: Option<String>,
    pub time_window: Option<String>,
    pub time_column: Option<String>,
    pub app_roles: Option<Vec<String>>,
    pub app_roles_commands: Vec<String>,
    pub role_setting: Option<String>,
    pub shared_read: Option<String>,
    pub extra_policies: Vec<ExtraPolicy>,
    /// Attach the audit trigger.
    pub audit: bool,
    /// Columns the audit trigger leaves out of old_values and new_values.
    pub audit_exclude: Vec<String>,
    /// Attach the updated_at trigger: Some(true) requires the column, None attaches it when the
    /// table has one, Some(false) never.
    pub updated_at: Option<bool>,
    /// An UPDATE that changes nothing writes no audit row and keeps updated_at.
    pub skip_noop_updates: bool,
    /// The tenant setting holds a list of tenants: reads see every one, writes may use any.
    pub tenant_list: bool,
    /// A tenant also reads its descendants' rows, by this tenants table.
    pub hierarchy: Option<Hierarchy>,
    /// The tenant column's DEFAULT is the session's tenant.
    pub tenant_default: bool,
}

/// A tenants table: its key (the tenant ids) and the column naming each tenant's parent.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Hierarchy {
    /// Schema-qualified and quoted, as regclass prints it.
    pub table: String,
    pub key: String,
    pub parent: String,
}

/// One entry of `extra_policies`: a custom predicate for a shape the templates do not cover.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExtraPolicy {
    pub name: String,
    #[serde(default = "all_command")]
    pub command: String,
    #[serde(default = "permissive_default")]
    pub permissive: bool,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub using: Option<String>,
    #[serde(default)]
    pub check: Option<String>,
}

fn all_command() -> String {
    "ALL".into()
}
fn permissive_default() -> bool {
    true
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

/// `ALL` or one of the four commands, upper-cased; anything else is a coded error.
pub fn normalize_command(argument: &str, command: &str) -> String {
    let c = command.trim().to_uppercase();
    if c == "ALL" || TENANT_COMMANDS.contains(&c.as_str()) {
        c
    } else {
        Error::UnknownCommand { argument, command }.raise()
    }
}

/// The value of a custom setting as the policy reads it: NULL when unset or empty.
fn setting_value(setting: &str) -> String {
    format!(
        "NULLIF(pg_catalog.current_setting({}, true), '')",
        quote_literal(setting)
    )
}

/// The suffix of the tenant functions for a tenant column's type.
pub fn tenant_function(column: &TenantColumn) -> &'static str {
    match column.base_type.as_str() {
        "uuid" => "uuid",
        "int8" => "bigint",
        "int4" => "integer",
        "int2" => "smallint",
        _ => "text",
    }
}

/// The tenant match: true only for rows of the tenant in the setting. An unset or empty setting
/// gives NULL, which matches no row (and never reaches a cast, so no `invalid input syntax` error).
/// The right-hand side is one STABLE call of a tenantguard function that keeps the parsed setting
/// (src/tenant/values.rs), so it is computed once per index scan and costs less than
/// `NULLIF(current_setting(...), '')::type`, which parses the text again in every query.
///
/// Returns (what reads match, what writes match). With `tenant_list` both compare with the list
/// (`= ANY` of a STABLE function, index-usable); with a hierarchy, reads also
/// match the tenants' descendants.
pub fn tenant_predicates(column: &TenantColumn, options: &ProtectOptions) -> (String, String) {
    let t = tenant_function(column);
    let col = quote_identifier(&column.name);
    let spec = quote_literal(&options.tenant_setting);
    // A list, or a hierarchy's subtree: `= ANY (tenantguard.tenant_bigints(...))`, a STABLE call
    // an index scan evaluates once; in a sequential scan each call returns the array its call site
    // kept (src/tenant/values.rs, src/tenant/subtree.rs).
    let write = if options.tenant_list {
        format!("{col} OPERATOR(pg_catalog.=) ANY (tenantguard.tenant_{t}s({spec}))")
    } else {
        format!("{col} OPERATOR(pg_catalog.=) tenantguard.tenant_{t}({spec})")
    };
    let read = match &options.hierarchy {
        None => write.clone(),
        Some(h) => format!(
            "{col} OPERATOR(pg_catalog.=) ANY (tenantguard.tenant_subtree_{t}({spec}, {}::regclass, {}, {}, {}))",
            quote_literal(&h.table),
            quote_literal(&h.key),
            quote_literal(&h.parent),
            options.tenant_list
        ),
    };
    (read, write)
}

/// The SQL type name tenant values are cast to for a tenant column.
fn sql_type(column: &TenantColumn) -> &'static str {
    match column.base_type.as_str() {
        "uuid" => "uuid",
        "int8" => "bigint",
        "int4" => "integer",
        "int2" => "smallint",
        _ => "text",
    }
}

/// The tenant setting's text as plain SQL: the setting (NULL when unset or empty), or the text at
/// its JSON path.
fn portable_value(options: &ProtectOptions) -> String {
    let spec =
        crate::tenant::spec::parse(&options.tenant_setting).unwrap_or(crate::tenant::spec::Spec {
            name: options.tenant_setting.clone(),
            path: Vec::new(),
        });
    let raw = format!(
        "NULLIF(pg_catalog.current_setting({}, true), '')",
        quote_literal(&spec.name)
    );
    if spec.path.is_empty() {
        raw
    } else {
        format!("({raw}::jsonb {} {})", "#>>", path_array(&spec.path))
    }
}

fn path_array(path: &[String]) -> String {
    format!(
        "ARRAY[{}]::text[]",
        path.iter()
            .map(quote_literal)
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// The predicates of `tenant_predicates` in plain SQL, for a server without tenantguard: the
/// setting is parsed in every query (slower; see docs/reference.md#export_sql). A list is
/// comma-separated (or, with a JSON path, a JSON array there); a hierarchy is a recursive query
/// over the tenants table, read with the querying role's rights, as deep as
/// tenantguard.hierarchy_max_depth was at export.
pub fn portable_predicates(column: &TenantColumn, options: &ProtectOptions) -> (String, String) {
    let ty = sql_type(column);
    let col = quote_identifier(&column.name);
    let value = portable_value(options);
    let has_path = options.tenant_setting.contains(':');
    let list = if has_path {
        let spec = crate::tenant::spec::parse(&options.tenant_setting).ok();
        let path = spec.map(|s| path_array(&s.path)).unwrap_or_default();
        let name = options.tenant_setting.split(':').next().unwrap_or_default();
        format!(
            "ARRAY(SELECT pg_catalog.jsonb_array_elements_text(NULLIF(pg_catalog.current_setting({}, true), '')::jsonb #> {path}))::{ty}[]",
            quote_literal(name)
        )
    } else {
        format!("pg_catalog.regexp_split_to_array(pg_catalog.btrim({value}), '\\s*,\\s*')::{ty}[]")
    };
    let write = if options.tenant_list {
        format!("{col} OPERATOR(pg_catalog.=) ANY ({list})")
    } else {
        format!("{col} OPERATOR(pg_catalog.=) ({value})::{ty}")
    };
    let read = match &options.hierarchy {
        None => write.clone(),
        Some(h) => {
            let roots = if options.tenant_list {
                list
            } else {
                format!("ARRAY[({value})::{ty}]")
            };
            format!(
                "{col} OPERATOR(pg_catalog.=) ANY (ARRAY(WITH RECURSIVE t(id, depth) AS (\
                 SELECT r, 0 FROM pg_catalog.unnest({roots}) AS r \
                 UNION SELECT c.{k}, t.depth + 1 FROM {table} c JOIN t ON c.{p} = t.id \
                 WHERE t.depth < {depth}) SELECT t.id FROM t))",
                k = quote_identifier(&h.key),
                p = quote_identifier(&h.parent),
                table = h.table,
                depth = crate::gucs::hierarchy_max_depth()
            )
        }
    };
    (read, write)
}

/// The tenant column's DEFAULT in plain SQL.
pub fn portable_default_expr(column: &TenantColumn, options: &ProtectOptions) -> String {
    format!("({})::{}", portable_value(options), sql_type(column))
}

/// The tenant column's DEFAULT with `tenant_default`: the session's tenant, of the column's type.
pub fn tenant_default_expr(column: &TenantColumn, options: &ProtectOptions) -> String {
    format!(
        "tenantguard.tenant_{}({}::text)",
        tenant_function(column),
        quote_literal(&options.tenant_setting)
    )
}

/// Resolves `hierarchy => 'schema.tenants(parent_column)'`: the table, its one-column primary key
/// (the tenant ids), and the parent column, which must be of the key's type.
pub fn resolve_hierarchy(text: &str) -> Hierarchy {
    let bad = |message: String| -> ! {
        Error::InvalidArgument {
            message,
            hint: "For example hierarchy => 'public.orgs(parent_id)': the tenants table, whose \
                   one-column primary key holds the tenant ids, and the column naming each \
                   tenant's parent.",
        }
        .raise()
    };
    let t = text.trim();
    let (table, parent) = match (t.rfind('('), t.ends_with(')')) {
        (Some(i), true) => (t[..i].trim(), t[i + 1..t.len() - 1].trim()),
        _ => bad(format!("hierarchy \"{text}\" is not table(parent_column)")),
    };
    let parent = parent.trim_matches('"').to_string();
    if table.is_empty() || parent.is_empty() {
        bad(format!("hierarchy \"{text}\" is not table(parent_column)"));
    }
    let oid = crate::errors::spi(Spi::get_one_with_args::<pg_sys::Oid>(
        "SELECT pg_catalog.to_regclass($1)::pg_catalog.oid",
        &[table.into()],
    ));
    let Some(oid) = oid else {
        Error::NoSuchTable { table }.raise();
    };
    let rel = RelInfo::load(oid);
    let key = crate::errors::spi(Spi::get_one_with_args::<String>(
        "SELECT (SELECT a.attname::text FROM pg_catalog.pg_index i
                   JOIN pg_catalog.pg_attribute a
                     ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
                  WHERE i.indrelid = $1 AND i.indisprimary AND i.indnatts = 1)",
        &[oid.into()],
    ));
    let Some(key) = key else {
        bad(format!(
            "hierarchy table \"{}\" has no one-column primary key to hold the tenant ids",
            rel.display()
        ));
    };
    let key_type = crate::catalog::column_base_type(&rel, &key).unwrap_or_default();
    match crate::catalog::column_base_type(&rel, &parent) {
        None => Error::NoColumn {
            table: &rel.display(),
            column: &parent,
        }
        .raise(),
        Some(t) if t != key_type => Error::HierarchyType {
            table: &rel.display(),
            column: &parent,
            shown: &t,
            wanted: &key_type,
        }
        .raise(),
        Some(_) => {}
    }
    Hierarchy {
        table: rel.qualified(),
        key,
        parent,
    }
}

/// The hierarchy's key must be of the tenant column's type (the policy compares them).
pub fn check_hierarchy(column: &TenantColumn, rel: &RelInfo, h: &Hierarchy) {
    let oid = crate::errors::spi(Spi::get_one_with_args::<pg_sys::Oid>(
        "SELECT pg_catalog.to_regclass($1)::pg_catalog.oid",
        &[h.table.as_str().into()],
    ));
    let Some(oid) = oid else {
        Error::NoSuchTable { table: &h.table }.raise();
    };
    let tenants = RelInfo::load(oid);
    let key_type = crate::catalog::column_base_type(&tenants, &h.key).unwrap_or_default();
    let same = key_type == column.base_type
        || (["text", "varchar"].contains(&key_type.as_str())
            && ["text", "varchar"].contains(&column.base_type.as_str()));
    if !same {
        Error::HierarchyType {
            table: &rel.display(),
            column: &column.name,
            shown: &column.base_type,
            wanted: &key_type,
        }
        .raise();
    }
}

fn policy(
    name: String,
    template: &str,
    command: &str,
    permissive: bool,
    roles: Vec<String>,
    predicate: &str,
) -> PolicySpec {
    let (using, check) = clauses_for(command, predicate);
    PolicySpec {
        name,
        template: template.into(),
        command: command.into(),
        permissive,
        roles,
        using,
        check,
    }
}

/// Which of USING / WITH CHECK a command takes.
fn clauses_for(command: &str, predicate: &str) -> (Option<String>, Option<String>) {
    let p = Some(predicate.to_string());
    match command {
        "SELECT" | "DELETE" => (p, None),
        "INSERT" => (None, p),
        _ => (p.clone(), p),
    }
}

/// The policies the options ask for, in creation order. `rel` is used to validate predicates.
pub fn desired_policies(
    rel: &RelInfo,
    column: &TenantColumn,
    options: &ProtectOptions,
) -> Vec<PolicySpec> {
    desired_policies_with(rel, column, options, false)
}

/// The same policies, with `portable`: expressions that call no tenantguard function (for
/// export_sql(): a server without the extension).
pub fn desired_policies_with(
    rel: &RelInfo,
    column: &TenantColumn,
    options: &ProtectOptions,
    portable: bool,
) -> Vec<PolicySpec> {
    if let Some(h) = &options.hierarchy {
        check_hierarchy(column, rel, h);
    }
    // Reads match the tenant's descendants too (hierarchy); writes only the tenant (or the list).
    let (read, write) = if portable {
        portable_predicates(column, options)
    } else {
        tenant_predicates(column, options)
    };
    let mut out: Vec<PolicySpec> = TENANT_COMMANDS
        .iter()
        .map(|cmd| {
            policy(
                format!("{POLICY_PREFIX}tenant_{}", cmd.to_lowercase()),
                "tenant",
                cmd,
                true,
                Vec::new(),
                if *cmd == "SELECT" { &read } else { &write },
            )
        })
        .collect();

    if let Some(role) = &options.admin_role {
        out.push(policy(
            format!("{POLICY_PREFIX}admin"),
            "admin",
            "ALL",
            true,
            vec![role.clone()],
            "true",
        ));
    }

    if let Some(pred) = &options.shared_read {
        validate_predicate(rel, "shared_read", pred);
        out.push(policy(
            format!("{POLICY_PREFIX}shared_read"),
            "shared_read",
            "SELECT",
            true,
            Vec::new(),
            pred,
        ));
    }

    if let (Some(window), Some(time_column)) = (&options.time_window, &options.time_column) {
        check_time_column(rel, time_column);
        let pred = format!(
            "{} OPERATOR(pg_catalog.>=) (pg_catalog.now() OPERATOR(pg_catalog.-) {}::pg_catalog.interval)",
            quote_identifier(time_column),
            quote_literal(window)
        );
        out.push(policy(
            format!("{POLICY_PREFIX}time_window"),
            "time_window",
            "SELECT",
            false,
            Vec::new(),
            &pred,
        ));
    }

    if let (Some(roles), Some(setting)) = (&options.app_roles, &options.role_setting) {
        let list = roles
            .iter()
            .map(quote_literal)
            .collect::<Vec<_>>()
            .join(", ");
        let pred = format!(
            "{} OPERATOR(pg_catalog.=) ANY (ARRAY[{list}]::pg_catalog.text[])",
            setting_value(setting)
        );
        for cmd in &options.app_roles_commands {
            out.push(policy(
                format!("{POLICY_PREFIX}app_roles_{}", cmd.to_lowercase()),
                "app_roles",
                cmd,
                false,
                Vec::new(),
                &pred,
            ));
        }
    }

    for extra in &options.extra_policies {
        for (what, pred) in [("using", &extra.using), ("check", &extra.check)] {
            if let Some(p) = pred {
                validate_predicate(rel, &format!("extra_policies \"{}\" {what}", extra.name), p);
            }
        }
        out.push(PolicySpec {
            name: format!("{POLICY_PREFIX}x_{}", extra.name),
            template: "extra".into(),
            command: extra.command.clone(),
            permissive: extra.permissive,
            roles: extra.roles.clone(),
            using: extra.using.clone(),
            check: extra.check.clone(),
        });
    }
    out
}

/// The time column must exist and hold a point in time.
fn check_time_column(rel: &RelInfo, column: &str) {
    let base = crate::catalog::column_base_type(rel, column);
    match base.as_deref() {
        None => Error::NoTimeColumn {
            table: &rel.display(),
            column,
        }
        .raise(),
        Some("timestamptz" | "timestamp" | "date") => {}
        Some(shown) => Error::TimeColumnType {
            table: &rel.display(),
            column,
            shown,
        }
        .raise(),
    }
}

/// A user-supplied predicate must be one boolean expression over this table's columns (it may use
/// subqueries on other tables). It is checked by preparing `SELECT 1 FROM ONLY <table> WHERE (...)`,
/// which parses and analyses it without running it; anything that is not a single expression
/// (a `;`, an unbalanced parenthesis, a comment swallowing the rest) fails there.
pub fn validate_predicate(rel: &RelInfo, argument: &str, predicate: &str) {
    if predicate.trim().is_empty() {
        Error::EmptyPredicate {
            argument,
            table: &rel.display(),
        }
        .raise();
    }
    let sql = format!("SELECT 1 FROM ONLY {} WHERE ({predicate})", rel.qualified());
    let table = &rel.display();
    let result = PgTryBuilder::new(|| {
        if !crate::protect::sqlcheck::is_single_expression(predicate) {
            Error::NotOneExpression.raise();
        }
        Spi::connect(|client| client.prepare(&*sql, &[]).map(|_| ()))
    })
    .catch_others(|caught| {
        let report = match &caught {
            CaughtError::PostgresError(r) | CaughtError::ErrorReport(r) => r,
            CaughtError::RustPanic { ereport, .. } => ereport,
        };
        let code = match report.sql_error_code() {
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR => PgSqlErrorCode::ERRCODE_SYNTAX_ERROR,
            c => c,
        };
        Error::BadPredicate {
            code,
            argument,
            table,
            reason: report.message().to_string(),
        }
        .raise()
    })
    .execute();
    if let Err(e) = result {
        Error::BadPredicate {
            code: PgSqlErrorCode::ERRCODE_SYNTAX_ERROR,
            argument,
            table,
            reason: e.to_string(),
        }
        .raise();
    }
}

/// Checks that a database role exists.
pub fn check_role(argument: &str, role: &str) {
    thread_local! {
        static PLAN: OnceCell<OwnedPreparedStatement> = const { OnceCell::new() };
    }
    let exists = kept_first::<bool>(
        &PLAN,
        "SELECT true FROM pg_catalog.pg_roles WHERE rolname = $1",
        &[TEXT],
        &[role.into()],
    )
    .unwrap_or(false);
    if !exists {
        Error::UnknownRole { argument, role }.raise();
    }
}
