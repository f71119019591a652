//! Every tenantguard setting, registered once from `_PG_init`.
//!
//! The "Settings" table in docs/operations.md documents each of these; keep the two in step.

use pgrx::prelude::*;
use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};
use std::ffi::CString;

pub const DEFAULT_TENANT_SETTING: &str = "app.current_tenant_id";
pub const DEFAULT_ROLE_SETTING: &str = "app.user_role";
pub const DEFAULT_TENANT_COLUMN: &str = "tenant_id";
pub const DEFAULT_USER_SETTING: &str = "app.user_id";

pub static TENANT_SETTING: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"app.current_tenant_id"));
pub static ROLE_SETTING: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"app.user_role"));
pub static TENANT_COLUMN: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"tenant_id"));

/// `tenantguard.auto_protect`: what happens when a table gains the tenant column.
#[derive(Clone, Copy, PartialEq, Eq, Debug, PostgresGucEnum)]
pub enum AutoProtect {
    #[name = c"on"]
    On,
    #[name = c"warn"]
    Warn,
    #[name = c"off"]
    Off,
}

pub static USER_SETTING: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"app.user_id"));
pub static AUDIT_WINDOW: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
/// `tenantguard.client_application_name`: on a Citus worker, the application_name of the client
/// session whose statement a shard query carries out (src/citus/propagate.rs).
pub static CLIENT_APPLICATION_NAME: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(None);

/// `tenantguard.tenant_scope`: which tenant values count.
#[derive(Clone, Copy, PartialEq, Eq, Debug, PostgresGucEnum)]
pub enum TenantScope {
    /// A tenant set for the session or for the transaction.
    #[name = c"any"]
    Any,
    /// Only a tenant set for the transaction (SET LOCAL, set_tenant(), set_config(..., true)):
    /// behind a transaction-mode pooler a session-level one belongs to an earlier client.
    #[name = c"transaction"]
    Transaction,
}

pub static TENANT_SCOPE: GucSetting<TenantScope> = GucSetting::<TenantScope>::new(TenantScope::Any);
pub static HIERARCHY_MAX_DEPTH: GucSetting<i32> = GucSetting::<i32>::new(10);
pub static REQUIRE_SIGNED_TENANT: GucSetting<bool> = GucSetting::<bool>::new(false);
pub static TOKEN_KEYS: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static TOKEN_LEEWAY: GucSetting<i32> = GucSetting::<i32>::new(30);
pub static TOKEN_TENANT_CLAIM: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"tenant_id"));
pub static TOKEN_USER_CLAIM: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"sub"));

/// `tenantguard.slow_query_track`: which statements the slow-query hooks time.
#[derive(Clone, Copy, PartialEq, Eq, Debug, PostgresGucEnum)]
pub enum SlowQueryTrack {
    #[name = c"top"]
    Top,
    #[name = c"all"]
    All,
}

pub static SLOW_QUERY_MS: GucSetting<i32> = GucSetting::<i32>::new(100);
pub static SLOW_QUERY_TRACK: GucSetting<SlowQueryTrack> =
    GucSetting::<SlowQueryTrack>::new(SlowQueryTrack::Top);
pub static SLOW_QUERY_MAX: GucSetting<i32> = GucSetting::<i32>::new(1000);
pub static SLOW_QUERY_TEXT_LIMIT: GucSetting<i32> = GucSetting::<i32>::new(1024);
pub static SLOW_QUERY_FLUSH_MS: GucSetting<i32> = GucSetting::<i32>::new(0);
pub static TENANT_STATS: GucSetting<bool> = GucSetting::<bool>::new(true);
pub static TENANT_STATS_MAX: GucSetting<i32> = GucSetting::<i32>::new(10_000);
pub static SLOW_QUERY_FLUSH_DATABASE: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"postgres"));

pub static AUTO_PROTECT: GucSetting<AutoProtect> = GucSetting::<AutoProtect>::new(AutoProtect::On);
pub static GUARD: GucSetting<bool> = GucSetting::<bool>::new(true);
pub static EXCLUDE_SCHEMAS: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);

pub fn init() {
    GucRegistry::define_enum_guc(
        c"tenantguard.auto_protect",
        c"Protect tables that gain the tenant column: on, warn or off.",
        c"on protects them in the same transaction; warn only warns; off does nothing.",
        &AUTO_PROTECT,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"tenantguard.guard",
        c"Refuse DDL that switches a protected table's protection off.",
        c"Turn off only in emergencies; tenantguard.unprotect() is the sanctioned way out.",
        &GUARD,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"tenantguard.exclude_schemas",
        c"Comma-separated schemas auto-protect skips.",
        c"Tables in these schemas are never protected automatically.",
        &EXCLUDE_SCHEMAS,
        GucContext::Suset,
        GucFlags::default(),
    );
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
    GucRegistry::define_string_guc(
        c"tenantguard.user_setting",
        c"Name of the setting that holds the application user.",
        c"The audit trigger writes its value into audit_log.app_user.",
        &USER_SETTING,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_enum_guc(
        c"tenantguard.tenant_scope",
        c"Which tenant values count: any, or only those set for the transaction.",
        c"transaction: a tenant set for the session (SET, set_config(..., false)) counts as unset, so that a transaction-mode pooler cannot hand one client's tenant to the next.",
        &TENANT_SCOPE,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"tenantguard.require_signed_tenant",
        c"The policies take the tenant only from a verified token (set_tenant_token()).",
        c"A tenant set with SET, set_config() or set_tenant() then counts as unset.",
        &REQUIRE_SIGNED_TENANT,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"tenantguard.token_keys",
        c"The keys tenant tokens are verified with, as a JWK set.",
        c"Superusers only: not shown to other roles. Set in postgresql.conf or with ALTER SYSTEM.",
        &TOKEN_KEYS,
        GucContext::Sighup,
        GucFlags::SUPERUSER_ONLY | GucFlags::NO_SHOW_ALL | GucFlags::NO_RESET_ALL,
    );
    GucRegistry::define_int_guc(
        c"tenantguard.token_leeway",
        c"Seconds of clock skew allowed when checking a tenant token's exp and nbf.",
        c"",
        &TOKEN_LEEWAY,
        0,
        3600,
        GucContext::Suset,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_string_guc(
        c"tenantguard.token_tenant_claim",
        c"The path of the tenant claim in a tenant token (keys separated by dots).",
        c"",
        &TOKEN_TENANT_CLAIM,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"tenantguard.token_user_claim",
        c"The path of the application user claim in a tenant token.",
        c"",
        &TOKEN_USER_CLAIM,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"tenantguard.hierarchy_max_depth",
        c"How many levels below a tenant its descendants are looked for (protect(..., hierarchy => ...)).",
        c"Also where a cycle in the tenants table stops.",
        &HIERARCHY_MAX_DEPTH,
        1,
        1000,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"tenantguard.client_application_name",
        c"On a Citus worker: the client's application_name, for the audit rows of shard queries.",
        c"tenantguard sets it with each distributed statement; elsewhere it is empty and unused.",
        &CLIENT_APPLICATION_NAME,
        GucContext::Userset,
        GucFlags::DISALLOW_IN_FILE,
    );
    GucRegistry::define_string_guc(
        c"tenantguard.audit_window",
        c"How far back tenants see their audit rows (an interval; empty means no limit).",
        c"Members of tenantguard_admin see every row regardless.",
        &AUDIT_WINDOW,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"tenantguard.slow_query_ms",
        c"Statements running at least this long are recorded as slow queries; -1 disables.",
        c"Needs tenantguard in shared_preload_libraries.",
        &SLOW_QUERY_MS,
        -1,
        i32::MAX,
        GucContext::Suset,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_enum_guc(
        c"tenantguard.slow_query_track",
        c"Which statements are timed: top (top-level only) or all (also statements inside functions).",
        c"Needs tenantguard in shared_preload_libraries.",
        &SLOW_QUERY_TRACK,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"tenantguard.slow_query_text_limit",
        c"Bytes of query text kept per slow query (cut on a character boundary).",
        c"At most 4096.",
        &SLOW_QUERY_TEXT_LIMIT,
        16,
        4096,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"tenantguard.slow_query_flush_ms",
        c"How often the background worker copies the ring into tenantguard.slow_query_log; 0 never.",
        c"Needs tenantguard in shared_preload_libraries.",
        &SLOW_QUERY_FLUSH_MS,
        0,
        3_600_000,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_bool_guc(
        c"tenantguard.tenant_stats",
        c"Count every top-level statement per database, role and tenant (tenantguard.tenant_stats()).",
        c"Needs tenantguard in shared_preload_libraries.",
        &TENANT_STATS,
        GucContext::Suset,
        GucFlags::default(),
    );
    // Server-start settings can only be defined while shared_preload_libraries is processed
    // (PostgreSQL refuses them later); they only matter then anyway.
    // SAFETY: a plain global of the server.
    if unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        GucRegistry::define_int_guc(
            c"tenantguard.slow_query_max",
            c"Number of slow queries the shared-memory ring keeps.",
            c"Set at server start.",
            &SLOW_QUERY_MAX,
            16,
            20000,
            GucContext::Postmaster,
            GucFlags::default(),
        );
        GucRegistry::define_int_guc(
            c"tenantguard.tenant_stats_max",
            c"Number of (database, role, tenant) entries tenantguard.tenant_stats() keeps.",
            c"Set at server start; when full, the least-called twentieth is evicted.",
            &TENANT_STATS_MAX,
            100,
            1_000_000,
            GucContext::Postmaster,
            GucFlags::default(),
        );
        GucRegistry::define_string_guc(
            c"tenantguard.slow_query_flush_database",
            c"The database whose slow queries the background worker flushes.",
            c"Set at server start.",
            &SLOW_QUERY_FLUSH_DATABASE,
            GucContext::Postmaster,
            GucFlags::default(),
        );
    }
}

pub fn slow_query_ms() -> i32 {
    SLOW_QUERY_MS.get()
}

pub fn slow_query_track_all() -> bool {
    SLOW_QUERY_TRACK.get() == SlowQueryTrack::All
}

pub fn slow_query_max() -> i32 {
    SLOW_QUERY_MAX.get()
}

pub fn slow_query_text_limit() -> i32 {
    SLOW_QUERY_TEXT_LIMIT.get()
}

pub fn slow_query_flush_ms() -> i32 {
    SLOW_QUERY_FLUSH_MS.get()
}

pub fn tenant_stats() -> bool {
    TENANT_STATS.get()
}

pub fn tenant_stats_max() -> i32 {
    TENANT_STATS_MAX.get()
}

pub fn slow_query_flush_database() -> String {
    string_setting(&SLOW_QUERY_FLUSH_DATABASE, "postgres")
}

fn string_setting(setting: &GucSetting<Option<CString>>, default: &str) -> String {
    setting
        .get()
        .and_then(|s| s.into_string().ok())
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| default.to_string())
}

/// A setting name read from one of tenantguard's settings, checked to be a custom (dotted) name so
/// that it can never point at a server setting such as `search_path`; the tenant setting may add
/// a JSON path (src/tenant/spec.rs).
fn custom_setting_name(guc: &str, setting: &GucSetting<Option<CString>>, default: &str) -> String {
    let name = string_setting(setting, default);
    let ok = match crate::tenant::spec::parse(&name) {
        Ok(spec) => spec.path.is_empty() || guc == "tenantguard.tenant_setting",
        Err(_) => false,
    };
    if !ok {
        crate::errors::Error::BadSettingName { guc, name: &name }.raise();
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

pub fn token_leeway() -> i32 {
    TOKEN_LEEWAY.get()
}

pub fn token_tenant_claim() -> String {
    string_setting(&TOKEN_TENANT_CLAIM, "tenant_id")
}

pub fn token_user_claim() -> String {
    string_setting(&TOKEN_USER_CLAIM, "sub")
}

pub fn hierarchy_max_depth() -> i32 {
    HIERARCHY_MAX_DEPTH.get()
}

/// Is tenantguard.tenant_scope 'transaction'? Read on hot paths: a plain global.
pub fn tenant_scope_transaction() -> bool {
    TENANT_SCOPE.get() == TenantScope::Transaction
}

/// Does tenantguard.tenant_setting name a JSON path (`name:path`)? Never raises.
pub fn tenant_setting_has_path() -> bool {
    // SAFETY: the string setting's own storage: NULL or its NUL-terminated value.
    unsafe {
        let p = *TENANT_SETTING.as_ptr();
        !p.is_null() && std::ffi::CStr::from_ptr(p).to_bytes().contains(&b':')
    }
}

pub fn role_setting() -> String {
    custom_setting_name(
        "tenantguard.role_setting",
        &ROLE_SETTING,
        DEFAULT_ROLE_SETTING,
    )
}

pub fn user_setting() -> String {
    custom_setting_name(
        "tenantguard.user_setting",
        &USER_SETTING,
        DEFAULT_USER_SETTING,
    )
}

pub fn tenant_column() -> String {
    string_setting(&TENANT_COLUMN, DEFAULT_TENANT_COLUMN)
}

pub fn auto_protect() -> AutoProtect {
    AUTO_PROTECT.get()
}

pub fn guard_enabled() -> bool {
    GUARD.get()
}

pub fn exclude_schemas() -> Vec<String> {
    EXCLUDE_SCHEMAS
        .get()
        .and_then(|s| s.into_string().ok())
        .unwrap_or_default()
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}
