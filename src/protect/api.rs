//! The SQL-facing entry points: protect() (and its callers, auto-protect and the event triggers'
//! follow-ups), unprotect(), exempt() and unexempt().

use crate::catalog::{probe_first, RelInfo, TenantColumn, OID};
use crate::errors::{spi, Error};
use crate::protect::options::{resolve_options, ProtectArgs};
use crate::protect::planner::{execute, plan_protect, render_script, unprotect_plans, TablePlan};
use crate::protect::registry::load_registration;
use crate::protect::templates::ProtectOptions;
use pgrx::prelude::*;
use pgrx::spi::OwnedPreparedStatement;
use pgrx::JsonB;
use std::cell::OnceCell;

#[pg_extern(volatile, parallel_unsafe)]
pub(crate) fn _protect(tbl: pg_sys::Oid, args: JsonB) -> String {
    let _internal = crate::session::Internal::enter();
    let args: ProtectArgs = match serde_json::from_value(args.0) {
        Ok(a) => a,
        Err(e) => Error::InvalidProtectArguments {
            reason: e.to_string(),
        }
        .raise(),
    };
    let dry_run = args.dry_run;
    let options = resolve_options(args);
    protect_with(tbl, &options, dry_run)
}

/// Protects a table and every partition below it with resolved options. Every table is checked
/// before anything changes.
pub(crate) fn protect_with(tbl: pg_sys::Oid, options: &ProtectOptions, dry_run: bool) -> String {
    let root = RelInfo::load(tbl);
    crate::protect::check_target(&root, "protect");
    let mut targets = vec![root.clone()];
    targets.extend(root.partitions());
    let checked: Vec<(RelInfo, TenantColumn)> = targets
        .into_iter()
        .map(|rel| {
            crate::protect::check_target(&rel, "protect");
            let col = TenantColumn::load(&rel, &options.tenant_column);
            (rel, col)
        })
        .collect();

    for (rel, _) in &checked {
        if crate::citus::is_citus_table(rel.oid)
            && !crate::citus::unsafe_triggers_allowed()
            && !crate::protect::triggers::desired_triggers(rel, options).is_empty()
        {
            Error::CitusTriggers {
                table: &rel.display(),
            }
            .raise();
        }
    }
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
    let inherited = probe_first::<JsonB>(
        &PARENT_PLAN,
        "SELECT r.options FROM pg_catalog.pg_inherits i
           JOIN tenantguard.registry r ON r.relid = i.inhparent
          WHERE i.inhrelid = $1 ORDER BY i.inhseqno LIMIT 1",
        &[OID],
        &[tbl.into()],
    )
    .and_then(|j| crate::protect::registry::options_from_registry(j.0));
    let mut options = inherited.unwrap_or_else(|| {
        let admin_exists = probe_first::<bool>(
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
    // On a Citus coordinator, create_distributed_table() refuses a table with triggers unless
    // citus.enable_unsafe_triggers is on: isolate the new table now and leave the triggers off,
    // so that it can be distributed; protect() after that adds them (docs/citus.md).
    let deferred = crate::citus::active()
        && !crate::citus::unsafe_triggers_allowed()
        && (options.audit || options.updated_at != Some(false));
    if deferred {
        options.audit = false;
        options.updated_at = Some(false);
    }
    let account = protect_with(tbl, &options, false);
    if deferred {
        format!(
            "{account} (Citus: no audit or updated_at trigger while citus.enable_unsafe_triggers \
             is off)"
        )
    } else {
        account
    }
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
    let parent = probe_first::<JsonB>(
        &PLAN,
        "SELECT r.options FROM pg_catalog.pg_inherits i
           JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid AND c.relispartition
           JOIN tenantguard.registry r ON r.relid = i.inhparent
          WHERE i.inhrelid = $1",
        &[OID],
        &[tbl.into()],
    )
    .and_then(|j| crate::protect::registry::options_from_registry(j.0))?;
    let rel = RelInfo::load(tbl);
    let own = load_registration(&rel)?.options?;
    if own == parent {
        return None;
    }
    Some(protect_with(tbl, &parent, false))
}

#[pg_extern(volatile, parallel_unsafe)]
pub(crate) fn _unprotect(tbl: pg_sys::Oid, dry_run: bool) -> String {
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
pub(crate) fn _exempt(tbl: pg_sys::Oid, reason: Option<&str>) -> String {
    let _internal = crate::session::Internal::enter();
    let rel = RelInfo::load(tbl);
    crate::protect::check_target(&rel, "exempt");
    let Some(reason) = reason else {
        Error::ExemptWithoutReason {
            table: &rel.display(),
            null: true,
        }
        .raise();
    };
    if reason.trim().is_empty() {
        Error::ExemptWithoutReason {
            table: &rel.display(),
            null: false,
        }
        .raise();
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
pub(crate) fn _unexempt(tbl: pg_sys::Oid) -> String {
    let _internal = crate::session::Internal::enter();
    let rel = RelInfo::load(tbl);
    crate::protect::check_target(&rel, "unexempt");
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
        assert_eq!(
            crate::protect::registry::tree_hash(a),
            crate::protect::registry::tree_hash(b)
        );
        assert_ne!(
            crate::protect::registry::tree_hash(a),
            crate::protect::registry::tree_hash(c)
        );
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
            crate::protect::registry::tree_hash(&format!(
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
            crate::protect::registry::function_identity(&again.to_u32().to_string()),
            "public.tg_f(pg_catalog.text)"
        );
        // Built-in functions keep their numbers.
        assert_eq!(crate::protect::registry::function_identity("2293"), "2293");
    }

    #[pg_test]
    fn predicate_is_null_safe_and_typed() {
        let col = |t: &str| crate::catalog::TenantColumn {
            name: "tenant_id".into(),
            base_type: t.into(),
            not_null: true,
        };
        let opts = |setting: &str| crate::protect::templates::ProtectOptions {
            tenant_setting: setting.into(),
            ..Default::default()
        };
        let one = |t: &str, setting: &str| {
            crate::protect::templates::tenant_predicates(&col(t), &opts(setting)).1
        };
        assert_eq!(
            one("uuid", "app.current_tenant_id"),
            "tenant_id OPERATOR(pg_catalog.=) tenantguard.tenant_uuid('app.current_tenant_id')"
        );
        assert_eq!(
            one("int2", "x.y"),
            "tenant_id OPERATOR(pg_catalog.=) tenantguard.tenant_smallint('x.y')"
        );
        assert_eq!(
            one("varchar", "x.y"),
            "tenant_id OPERATOR(pg_catalog.=) tenantguard.tenant_text('x.y')"
        );
        // A list: the same for reads and writes, = ANY of the STABLE list function.
        let list = crate::protect::templates::ProtectOptions {
            tenant_list: true,
            ..opts("x.y")
        };
        let (read, write) = crate::protect::templates::tenant_predicates(&col("int8"), &list);
        assert_eq!(read, write);
        assert_eq!(
            write,
            "tenant_id OPERATOR(pg_catalog.=) ANY (tenantguard.tenant_bigints('x.y'))"
        );
    }
}
