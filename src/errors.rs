//! Every error tenantguard raises, in one place: its SQLSTATE, a message that names the object,
//! and a hint (written once when several errors share it). A user's mistake or a refusal always
//! gets a specific code; `Internal` (XX000) is kept for tenantguard's own bugs.

use crate::session::was_allowed_earlier;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;

use PgSqlErrorCode::*;

/// What a refused change to a protected table may do instead.
pub fn unprotect_hint(qualified: &str) -> String {
    format!(
        "To remove the protection first, call SELECT tenantguard.unprotect('{}').",
        qualified.replace('\'', "''")
    )
}

/// The hint for a refused change: the usual one, or, when an earlier transaction of this session
/// ran `_allow_change` for the table (a dry-run or unprotect_sql() script run statement by
/// statement in autocommit), how to run that script.
pub fn refusal_hint(oid: pg_sys::Oid, usual: String) -> String {
    if was_allowed_earlier(oid) {
        "tenantguard._allow_change() ran in an earlier transaction: run the whole script from \
         protect(..., dry_run => true) or unprotect_sql() in one transaction (BEGIN; ... COMMIT; \
         or psql --single-transaction -f)."
            .to_string()
    } else {
        usual
    }
}

const OWNER_HINT: &str =
    "Run it as the table's owner \"{owner}\", a member of that role, or a superuser.";
const REASON_HINT: &str =
    "Say why the table stays unprotected, e.g. 'shared lookup data, no tenant rows'.";
const PREDICATE_HINT: &str = "Give one boolean SQL expression over the table's columns, for \
                              example tenant_id IN (SELECT id FROM tenants WHERE status = 'active').";
const ATTACHED_BY_PROTECT: &str = "tenantguard.protect() attaches it; do not attach it by hand.";
const PRELOAD_HINT: &str = "Add tenantguard to shared_preload_libraries in postgresql.conf (e.g. \
                            shared_preload_libraries = 'tenantguard') and restart the server.";
const PROTECTED_DETAIL: &str = "tenantguard refuses DDL that switches a protected table's row \
                                level security off or changes its policies or triggers.";

/// One error tenantguard raises. Table names are given as `schema.table` for messages; hints that
/// contain SQL take the quoted, qualified name.
pub enum Error<'a> {
    // The table protect() and friends were given.
    NoSuchRelation {
        oid: u32,
    },
    /// A column named in an option (the hierarchy's parent column).
    NoColumn {
        table: &'a str,
        column: &'a str,
    },
    /// A table named in an option (the hierarchy's tenants table).
    NoSuchTable {
        table: &'a str,
    },
    /// The hierarchy's parent column, or the tenant column, is not of the tenants' key type.
    HierarchyType {
        table: &'a str,
        column: &'a str,
        shown: &'a str,
        wanted: &'a str,
    },
    NotATable {
        verb: &'a str,
        table: &'a str,
        what: &'a str,
    },
    SystemCatalog {
        verb: &'a str,
        table: &'a str,
    },
    OwnObject {
        verb: &'a str,
        table: &'a str,
    },
    TemporaryTable {
        verb: &'a str,
        table: &'a str,
    },
    /// `action` completes "must be owner of table X ...", e.g. "to protect it".
    NotOwner {
        table: &'a str,
        action: &'a str,
        owner: &'a str,
    },
    NoTenantColumn {
        table: &'a str,
        column: &'a str,
    },
    UnsupportedTenantType {
        table: &'a str,
        column: &'a str,
        shown: &'a str,
        supported: &'a str,
    },
    // Arguments.
    InvalidArgument {
        message: String,
        hint: &'a str,
    },
    InvalidProtectArguments {
        reason: String,
    },
    InvalidPolicyList {
        reason: String,
    },
    UnknownCommand {
        argument: &'a str,
        command: &'a str,
    },
    UnknownRole {
        argument: &'a str,
        role: &'a str,
    },
    NoTimeColumn {
        table: &'a str,
        column: &'a str,
    },
    TimeColumnType {
        table: &'a str,
        column: &'a str,
        shown: &'a str,
    },
    TimeColumnWithoutWindow {
        column: &'a str,
    },
    EmptyPredicate {
        argument: &'a str,
        table: &'a str,
    },
    NotOneExpression,
    BadPredicate {
        code: PgSqlErrorCode,
        argument: &'a str,
        table: &'a str,
        reason: String,
    },
    NulInSql,
    AuditExcludeColumn {
        table: &'a str,
        column: &'a str,
    },
    NoUpdatedAtColumn {
        table: &'a str,
        column: &'a str,
    },
    UpdatedAtType {
        table: &'a str,
        column: &'a str,
        shown: &'a str,
    },
    ExemptWithoutReason {
        table: &'a str,
        null: bool,
    },
    BadSettingName {
        guc: &'a str,
        name: &'a str,
    },
    // The guard.
    Protected {
        table: &'a str,
        problem: &'a str,
        hint: String,
    },
    ProtectedPolicy {
        table: &'a str,
        policy: &'a str,
        hint: String,
    },
    ProtectedDrop {
        table: &'a str,
        what: &'a str,
        hint: String,
    },
    TenantColumnChange {
        table: &'a str,
        column: &'a str,
        retype: bool,
        hint: String,
    },
    RegistryLocked {
        table: &'a str,
        what: &'a str,
        hint: String,
    },
    /// A WARNING (auto_protect = warn), not an ERROR.
    UnprotectedTenantTable {
        table: &'a str,
        column: &'a str,
        hint: String,
    },
    // Triggers and event triggers.
    CalledOutsideTrigger {
        function: &'a str,
    },
    WrongTriggerKind {
        message: &'a str,
    },
    CalledOutsideEventTrigger,
    NotAudited {
        table: &'a str,
    },
    AuditLogMissing,
    AuditLogShape,
    // Slow queries.
    NeedsPreload {
        what: &'a str,
    },
    /// What only those who read all statistics may read (42501).
    NotStatsReader {
        what: &'a str,
    },
    /// "permission denied to {verb} {object}".
    NotAdmin {
        verb: &'a str,
        object: &'a str,
    },
    /// export_sql() and the like for a table tenantguard does not protect.
    NotProtected {
        table: &'a str,
    },
    /// A token set_tenant_token() refuses (28000). `reason` never holds key material.
    BadTenantToken {
        reason: &'a str,
    },
    /// set_tenant_token() with no keys configured.
    NoTokenKeys,
    /// tenantguard.token_keys does not parse.
    BadTokenKeys {
        reason: &'a str,
    },
    /// set_tenant() when the tenant setting is a JSON path.
    TenantFromClaims {
        setting: &'a str,
    },
    /// A tenant set for the session under tenantguard.tenant_scope = transaction (a WARNING).
    SessionTenant {
        setting: &'a str,
    },
    // Citus.
    /// protect() and friends on a Citus worker, for a distributed or reference table or a shard.
    CitusNotCoordinator {
        verb: &'a str,
        table: &'a str,
    },
    /// protect() and friends on a shard, on any node.
    CitusShard {
        verb: &'a str,
        shard: &'a str,
        table: &'a str,
    },
    /// Triggers on a distributed or reference table with citus.enable_unsafe_triggers off.
    CitusTriggers {
        table: &'a str,
    },
    /// A bug in tenantguard.
    Internal {
        message: String,
        hint: &'a str,
    },
}

impl Error<'_> {
    pub fn code(&self) -> PgSqlErrorCode {
        use Error::*;
        match self {
            NoSuchRelation { .. } | NoSuchTable { .. } | AuditLogMissing => ERRCODE_UNDEFINED_TABLE,
            HierarchyType { .. } => ERRCODE_DATATYPE_MISMATCH,
            NoColumn { .. } => ERRCODE_UNDEFINED_COLUMN,
            NotATable { .. } | SystemCatalog { .. } | OwnObject { .. } => ERRCODE_WRONG_OBJECT_TYPE,
            TemporaryTable { .. } | CitusShard { .. } | CitusTriggers { .. } => {
                ERRCODE_FEATURE_NOT_SUPPORTED
            }
            CitusNotCoordinator { .. } => ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            SessionTenant { .. } => ERRCODE_WARNING,
            TenantFromClaims { .. } => ERRCODE_FEATURE_NOT_SUPPORTED,
            BadTenantToken { .. } => ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION,
            NotProtected { .. } => ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            NoTokenKeys => ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            BadTokenKeys { .. } => ERRCODE_INVALID_PARAMETER_VALUE,
            NotOwner { .. } | NotAdmin { .. } | NotStatsReader { .. } => {
                ERRCODE_INSUFFICIENT_PRIVILEGE
            }
            NoTenantColumn { .. }
            | NoTimeColumn { .. }
            | AuditExcludeColumn { .. }
            | NoUpdatedAtColumn { .. } => ERRCODE_UNDEFINED_COLUMN,
            UnsupportedTenantType { .. } | TimeColumnType { .. } | UpdatedAtType { .. } => {
                ERRCODE_DATATYPE_MISMATCH
            }
            InvalidArgument { .. }
            | InvalidProtectArguments { .. }
            | InvalidPolicyList { .. }
            | UnknownCommand { .. }
            | EmptyPredicate { .. }
            | BadSettingName { .. } => ERRCODE_INVALID_PARAMETER_VALUE,
            ExemptWithoutReason { null: false, .. } => ERRCODE_INVALID_PARAMETER_VALUE,
            ExemptWithoutReason { null: true, .. } | TimeColumnWithoutWindow { .. } => {
                ERRCODE_NULL_VALUE_NOT_ALLOWED
            }
            UnknownRole { .. } => ERRCODE_UNDEFINED_OBJECT,
            NotOneExpression => ERRCODE_SYNTAX_ERROR,
            BadPredicate { code, .. } => *code,
            NulInSql => ERRCODE_CHARACTER_NOT_IN_REPERTOIRE,
            Protected { .. }
            | ProtectedPolicy { .. }
            | RegistryLocked { .. }
            | NotAudited { .. }
            | AuditLogShape
            | NeedsPreload { .. } => ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            TenantColumnChange { retype: true, .. } => ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            ProtectedDrop { .. } | TenantColumnChange { retype: false, .. } => {
                ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST
            }
            UnprotectedTenantTable { .. } => ERRCODE_WARNING,
            CalledOutsideTrigger { .. } | WrongTriggerKind { .. } => {
                ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED
            }
            CalledOutsideEventTrigger => ERRCODE_E_R_I_E_EVENT_TRIGGER_PROTOCOL_VIOLATED,
            Internal { .. } => ERRCODE_INTERNAL_ERROR,
        }
    }

    pub fn message(&self) -> String {
        use Error::*;
        match self {
            NoSuchRelation { oid } => format!("relation with OID {oid} does not exist"),
            NoSuchTable { table } => format!("relation \"{table}\" does not exist"),
            NoColumn { table, column } => {
                format!("column \"{column}\" of relation \"{table}\" does not exist")
            }
            HierarchyType {
                table,
                column,
                shown,
                wanted,
            } => format!(
                "column \"{column}\" of table \"{table}\" is of type {shown}, but the tenants \
                 table's ids are of type {wanted}"
            ),
            NotATable { verb, table, what } => format!("cannot {verb} \"{table}\": it is {what}"),
            SystemCatalog { verb, table } => {
                format!("cannot {verb} \"{table}\": it is a system catalog")
            }
            OwnObject { verb, table } => {
                format!("cannot {verb} \"{table}\": it belongs to tenantguard")
            }
            TemporaryTable { verb, table } => {
                format!("cannot {verb} \"{table}\": it is a temporary table")
            }
            NotOwner { table, action, .. } => format!("must be owner of table \"{table}\" {action}"),
            NoTenantColumn { table, column } => {
                format!("table \"{table}\" has no tenant column \"{column}\"")
            }
            UnsupportedTenantType {
                table,
                column,
                shown,
                ..
            } => format!(
                "tenant column \"{column}\" of table \"{table}\" has unsupported type {shown}"
            ),
            InvalidArgument { message, .. } => message.clone(),
            InvalidProtectArguments { reason } => format!("invalid protect() arguments: {reason}"),
            InvalidPolicyList { reason } => format!("invalid policy list: {reason}"),
            UnknownCommand { argument, command } => {
                format!("{argument}: unknown command \"{command}\"")
            }
            UnknownRole { argument, role } => format!("{argument}: role \"{role}\" does not exist"),
            NoTimeColumn { table, column } => {
                format!("table \"{table}\" has no time column \"{column}\"")
            }
            TimeColumnType {
                table,
                column,
                shown,
            } => format!("time column \"{column}\" of table \"{table}\" has type {shown}"),
            TimeColumnWithoutWindow { column } => {
                format!("time_column \"{column}\" was given but time_window is NULL")
            }
            EmptyPredicate { argument, table } => {
                format!("{argument} for table \"{table}\" is empty")
            }
            NotOneExpression => "it is not a single expression".into(),
            BadPredicate {
                argument,
                table,
                reason,
                ..
            } => format!("{argument} for table \"{table}\" is not a valid predicate: {reason}"),
            NulInSql => "SQL text contains a NUL byte".into(),
            AuditExcludeColumn { table, column } => {
                format!("audit_exclude: table \"{table}\" has no column \"{column}\"")
            }
            NoUpdatedAtColumn { table, column } => {
                format!("table \"{table}\" has no column \"{column}\"")
            }
            UpdatedAtType {
                table,
                column,
                shown,
            } => format!("column \"{column}\" of table \"{table}\" is {shown}, not a timestamp"),
            ExemptWithoutReason { table, .. } => {
                format!("exempting table \"{table}\" needs a reason")
            }
            BadSettingName { guc, name } => {
                format!("{guc} \"{name}\" is not a custom setting name")
            }
            Protected { table, problem, .. } => {
                format!("table \"{table}\" is protected by tenantguard: {problem}")
            }
            ProtectedPolicy { table, policy, .. } => format!(
                "cannot alter policy \"{policy}\" of table \"{table}\": the table is protected by tenantguard"
            ),
            ProtectedDrop { table, what, .. } => format!(
                "cannot drop {what} of table \"{table}\": the table is protected by tenantguard"
            ),
            TenantColumnChange {
                table,
                column,
                retype,
                ..
            } => format!(
                "cannot {} tenant column \"{column}\" of table \"{table}\": the table is protected by tenantguard",
                if *retype { "change the type of" } else { "drop" }
            ),
            RegistryLocked { table, what, .. } => format!(
                "cannot {what} the registry entry of table \"{table}\": the table is protected by tenantguard"
            ),
            UnprotectedTenantTable { table, column, .. } => {
                format!("table \"{table}\" has a tenant column \"{column}\" but is not protected")
            }
            CalledOutsideTrigger { function } => {
                format!("tenantguard.{function}() was called outside a trigger")
            }
            WrongTriggerKind { message } => message.to_string(),
            CalledOutsideEventTrigger => {
                "tenantguard event trigger function called outside an event trigger".into()
            }
            NotAudited { table } => format!("table \"{table}\" is not audited by tenantguard"),
            AuditLogMissing => "tenantguard._audit_log does not exist".into(),
            AuditLogShape => "tenantguard._audit_log does not accept audit rows".into(),
            NeedsPreload { what } => {
                format!("{what} needs tenantguard in shared_preload_libraries")
            }
            NotAdmin { verb, object } => format!("permission denied to {verb} {object}"),
            NotStatsReader { what } => format!("permission denied to read {what}"),
            BadTenantToken { reason } => format!("tenant token refused: {reason}"),
            NotProtected { table } => format!("table \"{table}\" is not protected by tenantguard"),
            NoTokenKeys => "no tenant token keys are configured".into(),
            BadTokenKeys { reason } => format!("tenantguard.token_keys: {reason}"),
            TenantFromClaims { setting } => format!(
                "set_tenant() cannot set the tenant: tenantguard.tenant_setting \"{setting}\" \
                 reads it from a JSON value"
            ),
            SessionTenant { setting } => format!(
                "the tenant in \"{setting}\" was set for the session, and counts as unset: \
                 tenantguard.tenant_scope is transaction"
            ),
            CitusNotCoordinator { verb, table } => format!(
                "cannot {verb} \"{table}\" on a Citus worker: it is a distributed or reference table"
            ),
            CitusShard { verb, shard, table } => {
                format!("cannot {verb} \"{shard}\": it is a Citus shard of \"{table}\"")
            }
            CitusTriggers { table } => format!(
                "cannot attach tenantguard's triggers to \"{table}\": Citus refuses triggers on \
                 distributed and reference tables while citus.enable_unsafe_triggers is off"
            ),
            Internal { message, .. } => message.clone(),
        }
    }

    pub fn hint(&self) -> Option<String> {
        use Error::*;
        Some(match self {
            NoColumn { .. } => "Name the tenants table's parent column: hierarchy => \
                                'public.orgs(parent_id)'."
                .into(),
            NoSuchTable { .. } => "Create the tenants table first, or name it with its schema, \
                                   e.g. hierarchy => 'public.orgs(parent_id)'."
                .into(),
            HierarchyType { .. } => "The tenants table's one-column primary key, its parent \
                                     column and the tenant column must share one type."
                .into(),
            NoSuchRelation { .. } => {
                "Pass the table by name, for example tenantguard.protect('public.products').".into()
            }
            NotATable { .. } => "tenantguard protects ordinary and partitioned tables. Protect the \
                                 tables a view reads, and create the view WITH (security_invoker = true)."
                .into(),
            SystemCatalog { .. } => "tenantguard protects user tables only.".into(),
            OwnObject { .. } => "tenantguard's own tables carry their own policies.".into(),
            TemporaryTable { .. } => "A temporary table is private to its session; protect the \
                                      permanent table the data comes from."
                .into(),
            NotOwner { owner, .. } => OWNER_HINT.replace("{owner}", owner),
            NoTenantColumn { .. } => {
                "Pass the tenant column with tenant_column => 'name', or add the column first."
                    .into()
            }
            UnsupportedTenantType { supported, .. } => {
                format!("The tenant column must be of type {supported}.")
            }
            InvalidArgument { hint, .. } | Internal { hint, .. } => hint.to_string(),
            InvalidProtectArguments { .. } => "See docs/reference.md for protect()'s arguments.".into(),
            InvalidPolicyList { .. } => "_register() takes the policy list protect() generates.".into(),
            UnknownCommand { .. } => "Use SELECT, INSERT, UPDATE, DELETE or ALL.".into(),
            UnknownRole { .. } => "Create the role first, or pass NULL for no such policy.".into(),
            NoTimeColumn { .. } => "Name the column with time_column => 'name'.".into(),
            TimeColumnType { .. } => {
                "The time window needs a column of type timestamptz, timestamp or date.".into()
            }
            TimeColumnWithoutWindow { .. } => {
                "Pass time_window => '90 days' (or another positive interval) with time_column."
                    .into()
            }
            EmptyPredicate { .. } => "Give a boolean SQL expression over the table's columns.".into(),
            NotOneExpression | BadPredicate { .. } => PREDICATE_HINT.into(),
            NulInSql => "Remove the NUL byte.".into(),
            AuditExcludeColumn { .. } => {
                "List columns of the table, e.g. audit_exclude => ARRAY['password_hash'].".into()
            }
            NoUpdatedAtColumn { .. } => "Add the column (updated_at timestamptz NOT NULL DEFAULT \
                                         now()), or pass updated_at => false."
                .into(),
            UpdatedAtType { .. } => "updated_at => true needs an updated_at column of type \
                                     timestamptz or timestamp."
                .into(),
            ExemptWithoutReason { .. } => REASON_HINT.into(),
            BadSettingName { .. } => "Use a dotted name made of letters, digits and underscores, \
                                      such as app.current_tenant_id."
                .into(),
            Protected { hint, .. }
            | ProtectedPolicy { hint, .. }
            | ProtectedDrop { hint, .. }
            | TenantColumnChange { hint, .. }
            | RegistryLocked { hint, .. }
            | UnprotectedTenantTable { hint, .. } => hint.clone(),
            CalledOutsideTrigger { .. } => {
                "tenantguard.protect() attaches it; do not call it directly.".into()
            }
            WrongTriggerKind { .. } => ATTACHED_BY_PROTECT.into(),
            CalledOutsideEventTrigger => {
                "It is attached by CREATE EXTENSION tenantguard; do not call it directly.".into()
            }
            NotAudited { .. } => "The audit trigger is attached by tenantguard.protect(tbl, audit \
                                  => true); drop this trigger."
                .into(),
            AuditLogMissing => "Reinstall the extension, or unprotect() the table to detach its \
                                audit trigger."
                .into(),
            AuditLogShape => {
                "Its columns must keep the names and types CREATE EXTENSION gave them.".into()
            }
            NeedsPreload { .. } => PRELOAD_HINT.into(),
            NotAdmin { verb, .. } => {
                format!("Only superusers and members of tenantguard_admin may {verb} it.")
            }
            NotStatsReader { .. } => "Only superusers and members of tenantguard_admin or \
                                      pg_read_all_stats may read it."
                .into(),
            NotProtected { table } => format!(
                "Protect it first: SELECT tenantguard.protect('{}').",
                table.replace('\'', "''")
            ),
            BadTenantToken { .. } => "Mint a new token for this request, signed with a \
                                       configured key; the tenant stays as it was."
                .into(),
            NoTokenKeys => "A superuser sets tenantguard.token_keys (a JWK set) in postgresql.conf \
                            or with ALTER SYSTEM, then reloads."
                .into(),
            BadTokenKeys { .. } => "Give a JWK set: {\"keys\": [{\"kty\": ..., \"kid\": ..., \
                                    \"alg\": \"HS256\" | \"RS256\" | \"EdDSA\", ...}]}."
                .into(),
            TenantFromClaims { setting } => format!(
                "Set the setting before the colon, with the claims as JSON (as PostgREST sets \
                 request.jwt.claims), or point tenantguard.tenant_setting at a plain setting \
                 instead of \"{setting}\"."
            ),
            SessionTenant { setting } => format!(
                "Set it for the transaction: SET LOCAL {setting} = ..., \
                 SELECT tenantguard.set_tenant(...), or set_config('{setting}', ..., true)."
            ),
            CitusNotCoordinator { .. } => "Run it on the coordinator: Citus copies the policies \
                                           to every shard."
                .into(),
            CitusShard { verb, table, .. } => format!(
                "Run tenantguard.{verb}('{}') on the coordinator; Citus copies it to every shard.",
                table.replace('\'', "''")
            ),
            CitusTriggers { .. } => "Set citus.enable_unsafe_triggers = on on every node (ALTER \
                                     SYSTEM, or ALTER DATABASE), or protect with audit => false, \
                                     updated_at => false."
                .into(),
        })
    }

    pub fn detail(&self) -> Option<&'static str> {
        match self {
            Error::Protected { .. } => Some(PROTECTED_DETAIL),
            _ => None,
        }
    }

    fn report(&self, level: PgLogLevel) {
        let mut report = ErrorReport::new(self.code(), self.message(), "tenantguard");
        if let Some(detail) = self.detail() {
            report = report.set_detail(detail);
        }
        if let Some(hint) = self.hint() {
            report = report.set_hint(hint);
        }
        report.report(level);
    }

    /// Raises the ERROR. Never returns: PostgreSQL unwinds the statement, so nothing half-done
    /// stays.
    #[track_caller]
    pub fn raise(&self) -> ! {
        self.report(PgLogLevel::ERROR);
        unreachable!("ERROR does not return")
    }

    /// Reports it as a WARNING and goes on.
    pub fn warn(&self) {
        self.report(PgLogLevel::WARNING);
    }
}

/// Unwrap an SPI result. An SPI failure here is a bug in tenantguard, not a user mistake.
#[track_caller]
pub fn spi<T>(result: Result<T, pgrx::spi::Error>) -> T {
    match result {
        Ok(v) => v,
        Err(e) => Error::Internal {
            message: format!("tenantguard: internal query failed: {e}"),
            hint: "This is a bug in tenantguard; please report it.",
        }
        .raise(),
    }
}
