//! The triggers protect() attaches: the audit trigger (row and TRUNCATE) and the updated_at
//! trigger. Planned here as SQL, like the policies, so the dry run shows them and unprotect()
//! removes exactly them.

use crate::catalog::{column_base_type, probe_select, RelInfo, OID};
use crate::errors::Error;
use crate::protect::templates::ProtectOptions;
use pgrx::prelude::*;
use pgrx::spi::OwnedPreparedStatement;
use pgrx::spi::{quote_identifier, quote_literal};
use std::cell::OnceCell;

pub const AUDIT: &str = "tenantguard_audit";
pub const AUDIT_TRUNCATE: &str = "tenantguard_audit_truncate";
pub const UPDATED_AT: &str = "tenantguard_updated_at";
pub const UPDATED_AT_COLUMN: &str = "updated_at";

// pg_trigger.tgtype bits.
const ROW: i16 = 1;
const BEFORE: i16 = 2;
const INSERT: i16 = 4;
const DELETE: i16 = 8;
const UPDATE: i16 = 16;
const TRUNCATE: i16 = 32;

/// One trigger tenantguard attaches.
#[derive(Debug, Clone, PartialEq)]
pub struct TriggerSpec {
    pub name: &'static str,
    function: &'static str,
    tgtype: i16,
    timing: &'static str,
    args: Vec<String>,
}

/// A trigger as it is in pg_trigger now.
pub struct LiveTrigger {
    pub name: String,
    function: String,
    tgtype: i16,
    pub enabled: bool,
    args: Vec<String>,
}

fn noop_arg(options: &ProtectOptions) -> String {
    if options.skip_noop_updates {
        "skip_noop".into()
    } else {
        "keep_noop".into()
    }
}

/// The triggers the options ask for on this table. Checks audit_exclude and updated_at against the
/// table's columns (42703 / 42804). A partitioned table gets none: its partitions carry them.
pub fn desired_triggers(rel: &RelInfo, options: &ProtectOptions) -> Vec<TriggerSpec> {
    let mut out = Vec::new();
    for column in &options.audit_exclude {
        if column_base_type(rel, column).is_none() {
            Error::AuditExcludeColumn {
                table: &rel.display(),
                column,
            }
            .raise();
        }
    }
    let updated_at = match (options.updated_at, column_base_type(rel, UPDATED_AT_COLUMN)) {
        (Some(false), _) => false,
        (_, Some(t)) if t == "timestamptz" || t == "timestamp" => true,
        (Some(true), Some(shown)) => Error::UpdatedAtType {
            table: &rel.display(),
            column: UPDATED_AT_COLUMN,
            shown: &shown,
        }
        .raise(),
        (Some(true), None) => Error::NoUpdatedAtColumn {
            table: &rel.display(),
            column: UPDATED_AT_COLUMN,
        }
        .raise(),
        (None, _) => false,
    };
    if rel.is_partitioned() {
        return out;
    }
    if options.audit {
        // The tenant column rides in the trigger: on a Citus worker the shard's trigger has no
        // registry row to find it in.
        let mut args = vec![
            noop_arg(options),
            format!(
                "{}{}",
                crate::audit::meta::TENANT_ARG,
                options.tenant_column
            ),
        ];
        args.extend(options.audit_exclude.iter().cloned());
        out.push(TriggerSpec {
            name: AUDIT,
            function: "tenantguard.audit()",
            tgtype: ROW | INSERT | DELETE | UPDATE,
            timing: "AFTER INSERT OR UPDATE OR DELETE",
            args,
        });
        out.push(TriggerSpec {
            name: AUDIT_TRUNCATE,
            function: "tenantguard.audit()",
            tgtype: TRUNCATE,
            timing: "AFTER TRUNCATE",
            args: vec![],
        });
    }
    if updated_at {
        out.push(TriggerSpec {
            name: UPDATED_AT,
            function: "tenantguard.set_updated_at()",
            tgtype: ROW | BEFORE | UPDATE,
            timing: "BEFORE UPDATE",
            args: vec![UPDATED_AT_COLUMN.into(), noop_arg(options)],
        });
    }
    out
}

/// tenantguard's triggers on the table as they are now.
pub fn live_triggers(relid: pg_sys::Oid) -> Vec<LiveTrigger> {
    thread_local! {
        static PLAN: OnceCell<OwnedPreparedStatement> = const { OnceCell::new() };
    }
    probe_select(
        &PLAN,
        // The function schema-qualified whatever the search_path (regprocedure's text leaves the
        // schema out when it is on the path, and the comparison with the spec would fail).
        "SELECT t.tgname::text,
                pg_catalog.format('%s.%s()', pg_catalog.quote_ident(n.nspname), pg_catalog.quote_ident(p.proname)),
                t.tgtype, t.tgenabled <> 'D', t.tgargs
           FROM pg_catalog.pg_trigger t
           JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid
           JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
          WHERE t.tgrelid = $1 AND NOT t.tgisinternal AND t.tgname::text LIKE 'tenantguard\\_%'",
        &[OID],
        &[relid.into()],
        |rows| {
            rows.map(|row| {
                let raw = row.get::<Vec<u8>>(5)?.unwrap_or_default();
                let mut args: Vec<String> = raw
                    .split(|b| *b == 0)
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect();
                args.pop(); // each argument ends with a NUL
                Ok(LiveTrigger {
                    name: row.get::<String>(1)?.unwrap_or_default(),
                    function: row.get::<String>(2)?.unwrap_or_default(),
                    tgtype: row.get::<i16>(3)?.unwrap_or_default(),
                    enabled: row.get::<bool>(4)?.unwrap_or(false),
                    args,
                })
            })
            .collect()
        },
    )
}

/// True when the live trigger is exactly the wanted one, and enabled.
pub fn is_intact(spec: &TriggerSpec, live: &LiveTrigger) -> bool {
    live.enabled
        && live.tgtype == spec.tgtype
        && live.function == spec.function
        && live.args == spec.args
}

pub fn create_sql(rel: &RelInfo, spec: &TriggerSpec) -> String {
    let args: Vec<String> = spec.args.iter().map(quote_literal).collect();
    format!(
        "CREATE TRIGGER {} {} ON {} FOR EACH {} EXECUTE FUNCTION {}",
        quote_identifier(spec.name),
        spec.timing,
        rel.qualified(),
        if spec.tgtype & ROW != 0 {
            "ROW"
        } else {
            "STATEMENT"
        },
        spec.function
            .replace("()", &format!("({})", args.join(", ")))
    )
}

pub fn drop_sql(rel: &RelInfo, name: &str) -> String {
    format!(
        "DROP TRIGGER IF EXISTS {} ON {}",
        quote_identifier(name),
        rel.qualified()
    )
}
