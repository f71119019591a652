//! protect()'s arguments: parsed from the jsonb the SQL wrapper builds, checked, and resolved
//! into the options a table is protected with (and the registry keeps).

use crate::errors::{spi, Error};
use crate::gucs;
use crate::protect::templates::{self, ExtraPolicy, ProtectOptions};
use pgrx::prelude::*;
use serde::Deserialize;

/// Arguments of protect() as the SQL wrapper passes them (a jsonb object).
#[derive(Deserialize, Debug, Default)]
#[serde(default)]
pub(crate) struct ProtectArgs {
    pub(crate) tenant_column: Option<String>,
    pub(crate) admin_role: Option<String>,
    pub(crate) time_window: Option<String>,
    pub(crate) time_column: Option<String>,
    pub(crate) app_roles: Option<Vec<Option<String>>>,
    pub(crate) app_roles_commands: Option<Vec<Option<String>>>,
    pub(crate) shared_read: Option<String>,
    pub(crate) extra_policies: Option<serde_json::Value>,
    pub(crate) audit: Option<bool>,
    pub(crate) audit_exclude: Option<Vec<Option<String>>>,
    pub(crate) updated_at: Option<bool>,
    pub(crate) skip_noop_updates: Option<bool>,
    pub(crate) tenant_list: Option<bool>,
    pub(crate) hierarchy: Option<String>,
    pub(crate) tenant_default: Option<bool>,
    pub(crate) dry_run: bool,
}

/// `extra_policies` entries may say restrictive as PostgreSQL does (`"as": "restrictive"`) or as
/// `"restrictive": true`, and `"with_check"` for `"check"`: rewritten to the stored form
/// (`"permissive"`, `"check"`). Contradicting or repeated keys are an error.
pub(crate) fn extra_policy_aliases(v: serde_json::Value) -> Result<serde_json::Value, String> {
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
pub(crate) fn resolve_options(args: ProtectArgs) -> ProtectOptions {
    let invalid =
        |message: String, hint: &str| -> ! { Error::InvalidArgument { message, hint }.raise() };
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
        (None, Some(column)) => Error::TimeColumnWithoutWindow { column: &column }.raise(),
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

    let tenant_list = args.tenant_list.unwrap_or(false);
    let tenant_default = args.tenant_default.unwrap_or(false);
    if tenant_list && tenant_default {
        invalid(
            "tenant_default needs one tenant, and tenant_list gives several".into(),
            "Name the tenant in each INSERT, or protect without tenant_list.",
        );
    }
    let hierarchy = args
        .hierarchy
        .filter(|h| !h.trim().is_empty())
        .map(|h| templates::resolve_hierarchy(&h));

    ProtectOptions {
        tenant_list,
        hierarchy,
        tenant_default,
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
