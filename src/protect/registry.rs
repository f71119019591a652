//! tenantguard.registry: what protect() recorded for each table (options, policies with a hash of
//! each expression as stored, triggers, the RLS flags from before), how a table's protection
//! drifted from it, and the only ways a row is written (`_register`, `_unregister`).

use crate::catalog::{kept_update, probe_first, probe_select, RelInfo, OID, TEXT};
use crate::errors::{spi, Error};
use crate::protect::templates::{PolicySpec, ProtectOptions};
use crate::protect::triggers;
use pgrx::prelude::*;
use pgrx::spi::OwnedPreparedStatement;
use pgrx::JsonB;
use pgrx::{PgBuiltInOids, PgOid};
use serde::{Deserialize, Serialize};
use std::cell::OnceCell;

/// The format of the options the registry keeps, written into them as `"format"`. Entries
/// without it were written by tenantguard 0.1.0 (format 1). A reader upgrades an older format
/// before using it (`options_from_registry`); 1 and 2 differ only in the marker.
pub(crate) const OPTIONS_FORMAT: u64 = 2;

/// Options as the registry keeps them: the resolved options and their format.
pub(crate) fn options_to_registry(options: &ProtectOptions) -> String {
    // The fields in their declared order, the format first (a dry-run script shows this text).
    let fields = serde_json::to_string(options).expect("options serialize");
    format!("{{\"format\":{OPTIONS_FORMAT},{}", &fields[1..])
}

/// Options read from the registry, whatever format wrote them; None when they cannot be read.
pub(crate) fn options_from_registry(value: serde_json::Value) -> Option<ProtectOptions> {
    let format = value.get("format").and_then(|f| f.as_u64()).unwrap_or(1);
    if format > OPTIONS_FORMAT {
        // Written by a newer tenantguard: not ours to interpret.
        return None;
    }
    serde_json::from_value::<ProtectOptions>(value).ok()
}

/// A policy as the registry recorded it: the spec, plus a hash of each expression's node tree as
/// PostgreSQL stored it (locations stripped). Node trees do not depend on session settings, so a
/// later protect() can tell a policy someone altered from one left as it was made.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub(crate) struct RecordedPolicy {
    #[serde(flatten)]
    pub(crate) spec: PolicySpec,
    #[serde(default)]
    pub(crate) using_hash: Option<String>,
    #[serde(default)]
    pub(crate) check_hash: Option<String>,
    /// The expressions as PostgreSQL deparses them (search_path pinned), and the server major they
    /// were recorded on: a stored expression tree's text changes between majors (pg_upgrade keeps
    /// the policy, a new major writes its tree with new fields), so on another major the
    /// deparsed text is what is compared. None for entries of 0.1.0, which ran on 15 only.
    #[serde(default)]
    pub(crate) using_text: Option<String>,
    #[serde(default)]
    pub(crate) check_text: Option<String>,
    #[serde(default)]
    pub(crate) major: Option<u32>,
}

/// The server's major version (15 for 15.x).
pub(crate) fn server_major() -> u32 {
    pg_sys::PG_VERSION_NUM / 10000
}

/// A registry row.
pub(crate) struct Registration {
    pub(crate) tenant_column: String,
    pub(crate) options: Option<ProtectOptions>,
    pub(crate) policies: Vec<RecordedPolicy>,
    pub(crate) triggers: Vec<String>,
    pub(crate) rls_was_enabled: bool,
    pub(crate) rls_was_forced: bool,
}

/// A policy as it is in pg_policy now.
pub(crate) struct LivePolicy {
    pub(crate) name: String,
    pub(crate) command: String,
    pub(crate) permissive: bool,
    pub(crate) roles: Vec<String>,
    pub(crate) using_hash: Option<String>,
    pub(crate) check_hash: Option<String>,
    pub(crate) using_text: Option<String>,
    pub(crate) check_text: Option<String>,
}

pub(crate) fn load_registration(rel: &RelInfo) -> Option<Registration> {
    thread_local! {
        static PLAN: OnceCell<OwnedPreparedStatement> = const { OnceCell::new() };
    }
    probe_select(
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
                    .and_then(|j| options_from_registry(j.0));
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

pub(crate) fn live_policies(relid: pg_sys::Oid) -> Vec<LivePolicy> {
    thread_local! {
        static PLAN: OnceCell<OwnedPreparedStatement> = const { OnceCell::new() };
    }
    // The deparsed expressions name every object outside pg_catalog with its schema.
    crate::pg::raw::with_setting(c"search_path", c"pg_catalog, pg_temp", || {
        probe_select(
        &PLAN,
        "SELECT p.polname::text, p.polcmd::text, p.polpermissive,
                ARRAY(SELECT CASE WHEN r = 0 THEN 'public' ELSE pg_catalog.pg_get_userbyid(r)::text END
                        FROM pg_catalog.unnest(p.polroles) AS r),
                p.polqual::text, p.polwithcheck::text,
                pg_catalog.pg_get_expr(p.polqual, p.polrelid), pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid)
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
                    using_text: row.get::<String>(7)?,
                    check_text: row.get::<String>(8)?,
                })
            })
            .collect()
        },
    )
    })
}

/// A stable hash of a stored expression tree (pg_node_tree text) with its `:location` fields
/// removed: the same expression parsed from different SQL text gives the same hash, and the tree
/// does not depend on session settings the way deparsed text does. Functions that are not built in
/// (tenantguard's own tenant functions) are hashed by their qualified signature, not their oid,
/// which changes when a dump is restored. FNV-1a, 64 bits.
pub(crate) fn tree_hash(tree: &str) -> String {
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
pub(crate) fn function_identity(oid: &str) -> String {
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

pub(crate) fn is_exempt(rel: &RelInfo) -> bool {
    thread_local! {
        static PLAN: OnceCell<OwnedPreparedStatement> = const { OnceCell::new() };
    }
    probe_first::<bool>(
        &PLAN,
        "SELECT true FROM tenantguard.exemptions WHERE relid = $1",
        &[OID],
        &[rel.oid.into()],
    )
    .unwrap_or(false)
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
    let has_column = probe_first::<bool>(
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
    probe_first::<bool>(
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
    probe_first::<String>(
        &PLAN,
        "SELECT tenant_column::text FROM tenantguard.registry WHERE relid = $1",
        &[OID],
        &[tbl.into()],
    )
}

pub(crate) fn is_registered(tbl: pg_sys::Oid) -> bool {
    registered_tenant_column(tbl).is_some()
}

/// Drops the table's registry row: the last statement of unprotect() and its script.
#[pg_extern(volatile, parallel_unsafe)]
pub(crate) fn _unregister(tbl: pg_sys::Oid) {
    let _internal = crate::session::Internal::enter();
    crate::pg::raw::with_row_security(|| {
        if !is_registered(tbl) {
            return;
        }
        crate::protect::allowance::require_allowance(tbl, "drop");
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
pub(crate) fn _register(
    tbl: pg_sys::Oid,
    tenant_column: &str,
    options: JsonB,
    policies: JsonB,
    triggers: Vec<String>,
    rls_was_enabled: bool,
    rls_was_forced: bool,
) {
    let _internal = crate::session::Internal::enter();
    crate::pg::raw::with_row_security(|| {
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

pub(crate) fn register(
    tbl: pg_sys::Oid,
    tenant_column: &str,
    options: JsonB,
    policies: JsonB,
    triggers: Vec<String>,
    rls_was_enabled: bool,
    rls_was_forced: bool,
) {
    if is_registered(tbl) {
        crate::protect::allowance::require_allowance(tbl, "rewrite");
    }
    let specs: Vec<PolicySpec> = serde_json::from_value(policies.0).unwrap_or_else(|e| {
        Error::InvalidPolicyList {
            reason: e.to_string(),
        }
        .raise()
    });
    let live = live_policies(tbl);
    let recorded: Vec<RecordedPolicy> = specs
        .into_iter()
        .map(|spec| {
            let l = live.iter().find(|l| l.name == spec.name);
            RecordedPolicy {
                using_hash: l.and_then(|l| l.using_hash.clone()),
                check_hash: l.and_then(|l| l.check_hash.clone()),
                using_text: l.and_then(|l| l.using_text.clone()),
                check_text: l.and_then(|l| l.check_text.clone()),
                major: Some(server_major()),
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

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    /// Options written by 0.1.0 (no "format") and by this version read the same; a newer format
    /// is not guessed at.
    #[pg_test]
    fn registry_options_of_every_format() {
        let v1 = serde_json::json!({"tenant_column": "tenant_id", "tenant_setting": "app.t",
                                     "audit": true, "skip_noop_updates": true});
        let read = super::options_from_registry(v1.clone()).expect("format 1 reads");
        assert_eq!(read.tenant_setting, "app.t");
        let written: serde_json::Value =
            serde_json::from_str(&super::options_to_registry(&read)).unwrap();
        assert_eq!(written["format"], super::OPTIONS_FORMAT);
        assert_eq!(super::options_from_registry(written), Some(read));
        let mut v9 = v1;
        v9["format"] = 9.into();
        assert_eq!(super::options_from_registry(v9), None);
    }
}
