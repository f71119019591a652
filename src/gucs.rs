//! Every tenantguard setting, registered once from `_PG_init`.
//!
//! The README's "Settings" table documents each of these; keep the two in step.

use pgrx::prelude::*;
use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};
use std::ffi::CString;

pub const DEFAULT_TENANT_SETTING: &str = "app.current_tenant_id";
pub const DEFAULT_ROLE_SETTING: &str = "app.user_role";
pub const DEFAULT_TENANT_COLUMN: &str = "tenant_id";

pub static TENANT_SETTING: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"app.current_tenant_id"));
pub static ROLE_SETTING: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"app.user_role"));
pub static TENANT_COLUMN: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"tenant_id"));

pub fn init() {
    GucRegistry::define_string_guc(
        c"tenantguard.tenant_setting",
        c"Name of the setting that holds the current tenant.",
        c"tenantguard.set_tenant() and current_tenant() use it, and protect() builds its policies on it.",
        &TENANT_SETTING,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"tenantguard.role_setting",
        c"Name of the setting that holds the application role.",
        c"protect(app_roles => ...) builds its role-based policies on it.",
        &ROLE_SETTING,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"tenantguard.tenant_column",
        c"Default name of the tenant column.",
        c"protect() uses it when no tenant_column is given; coverage() looks for tables with it.",
        &TENANT_COLUMN,
        GucContext::Suset,
        GucFlags::default(),
    );
}

fn string_setting(setting: &GucSetting<Option<CString>>, default: &str) -> String {
    setting
        .get()
        .and_then(|s| s.into_string().ok())
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| default.to_string())
}

/// A setting name read from one of tenantguard's settings, checked to be a custom (dotted) name so
/// that it can never point at a server setting such as `search_path`.
fn custom_setting_name(guc: &str, setting: &GucSetting<Option<CString>>, default: &str) -> String {
    let name = string_setting(setting, default);
    let valid = name.contains('.')
        && !name.starts_with('.')
        && !name.ends_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '$');
    if !valid {
        crate::errors::raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("{guc} \"{name}\" is not a custom setting name"),
            "Use a dotted name made of letters, digits and underscores, such as app.current_tenant_id.",
        );
    }
    name
}

pub fn tenant_setting() -> String {
    custom_setting_name(
        "tenantguard.tenant_setting",
        &TENANT_SETTING,
        DEFAULT_TENANT_SETTING,
    )
}

pub fn role_setting() -> String {
    custom_setting_name(
        "tenantguard.role_setting",
        &ROLE_SETTING,
        DEFAULT_ROLE_SETTING,
    )
}

pub fn tenant_column() -> String {
    string_setting(&TENANT_COLUMN, DEFAULT_TENANT_COLUMN)
}
