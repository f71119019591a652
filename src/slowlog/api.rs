//! Reading the ring and the log: slow_queries(), reset_slow_queries(), and flushing the ring into
//! tenantguard._slow_query_log.

use crate::catalog::kept_first;
use crate::errors::{spi, Error};
use crate::privileges;
use crate::session;
use crate::slowlog::ring::{
    self, require_preload, same_tenant, snapshot, Copied, STATUS_CANCELLED, STATUS_OK,
};
use pgrx::prelude::*;
use pgrx::spi::OwnedPreparedStatement;
use pgrx::{PgBuiltInOids, PgOid};
use std::cell::OnceCell;
use std::ffi::CStr;

/// True for superusers, members of tenantguard_admin and of pg_read_all_stats: they see every
/// slow query, every role's statement text included.
#[pg_extern(stable, parallel_safe)]
fn _reads_all_stats() -> bool {
    privileges::reads_all_stats()
}

fn text_of(bytes: &[u8], len: u16) -> String {
    String::from_utf8_lossy(&bytes[..len as usize]).into_owned()
}

type SlowRow = (
    Option<TimestampWithTimeZone>,
    f64,
    i64,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
    Option<String>,
    i64,
);

fn to_row(e: &Copied) -> SlowRow {
    // SAFETY: catalog lookups by OID; NULL when the database or role is gone.
    let (database, user) = unsafe {
        let d = pg_sys::get_database_name(e.dbid);
        let u = pg_sys::GetUserNameFromId(e.userid, true);
        (
            (!d.is_null()).then(|| CStr::from_ptr(d).to_string_lossy().into_owned()),
            (!u.is_null()).then(|| CStr::from_ptr(u).to_string_lossy().into_owned()),
        )
    };
    let nonempty = |s: String| (!s.is_empty()).then_some(s);
    let hidden = e.queryid == TEXT_HIDDEN;
    (
        TimestampWithTimeZone::try_from(e.started_at).ok(),
        e.duration_us as f64 / 1000.0,
        e.rows as i64,
        // 0: the server computed no query id (compute_query_id off, or auto with nothing asking).
        (e.queryid != 0 && !hidden).then_some(e.queryid),
        (!hidden).then(|| text_of(&e.query, e.query_len)),
        database,
        user,
        nonempty(text_of(&e.app_user, e.app_user_len)),
        nonempty(text_of(&e.tenant, e.tenant_len)),
        match e.status {
            STATUS_OK => "ok",
            STATUS_CANCELLED => "cancelled",
            _ => "error",
        }
        .to_string(),
        // An error whose code was never seen (swallowed by an EXCEPTION block) has none: NULL.
        (e.status != STATUS_OK && e.sqlstate != [0; 5])
            .then(|| String::from_utf8_lossy(&e.sqlstate).into_owned()),
        e.seq as i64,
    )
}

/// The entries the caller may see: every one for superusers, members of tenantguard_admin and of
/// pg_read_all_stats; otherwise this database's entries of the caller's tenant. Another role's
/// statement text and query id are blanked unless the caller is one of the first three, as
/// pg_stat_statements shows them.
fn visible() -> Vec<Copied> {
    let all = privileges::reads_all_stats();
    let tenant = crate::tenant::context::tenant_value();
    // SAFETY: globals of the backend.
    let (db, me) = unsafe { (pg_sys::MyDatabaseId, pg_sys::GetUserId()) };
    snapshot()
        .into_iter()
        .filter(|e| {
            all || (e.dbid == db
                && tenant
                    .as_deref()
                    .is_some_and(|t| same_tenant(&e.tenant[..e.tenant_len as usize], t)))
        })
        .map(|mut e| {
            if !all && e.userid != me {
                e.query_len = 0;
                e.queryid = TEXT_HIDDEN;
            }
            e
        })
        .collect()
}

/// An entry's query id when its text is hidden: `to_row` shows NULL text and NULL query id.
const TEXT_HIDDEN: i64 = i64::MIN;

#[pg_extern(volatile, parallel_restricted)]
#[allow(clippy::type_complexity)]
fn slow_queries() -> TableIterator<
    'static,
    (
        name!(started_at, Option<TimestampWithTimeZone>),
        name!(duration_ms, f64),
        name!(rows, i64),
        name!(queryid, Option<i64>),
        name!(query, Option<String>),
        name!(database, Option<String>),
        name!(db_user, Option<String>),
        name!(app_user, Option<String>),
        name!(tenant_id, Option<String>),
        name!(status, String),
        name!(sqlstate, Option<String>),
    ),
> {
    require_preload("tenantguard.slow_queries()");
    let rows: Vec<_> = visible()
        .iter()
        .map(|e| {
            let r = to_row(e);
            (r.0, r.1, r.2, r.3, r.4, r.5, r.6, r.7, r.8, r.9, r.10)
        })
        .collect();
    TableIterator::new(rows)
}

#[pg_extern(volatile, parallel_unsafe)]
fn reset_slow_queries() -> i64 {
    require_preload("tenantguard.reset_slow_queries()");
    if !privileges::is_admin() {
        Error::NotAdmin {
            verb: "reset",
            object: "the slow query ring",
        }
        .raise();
    }
    // SAFETY: the ring is attached (require_preload).
    unsafe { ring::clear() }
}

/// Copies this database's ring entries not yet in tenantguard.slow_query_log into it, each once:
/// the table is keyed by (server start time, entry number) and the insert skips existing keys,
/// so concurrent or repeated flushes, and flushes that roll back, neither lose nor double rows.
#[pg_extern(volatile, parallel_unsafe)]
fn _flush_slow_queries() -> i64 {
    require_preload("tenantguard.flush_slow_queries()");
    let _internal = session::Internal::enter();
    // SAFETY: a global set by the postmaster.
    let epoch = unsafe { pg_sys::PgStartTime };
    let epoch = TimestampWithTimeZone::try_from(epoch).ok();
    thread_local! {
        static LAST: OnceCell<OwnedPreparedStatement> = const { OnceCell::new() };
    }
    let tstz = PgOid::BuiltIn(PgBuiltInOids::TIMESTAMPTZOID);
    let last = kept_first::<i64>(
        &LAST,
        "SELECT max(seq) FROM tenantguard._slow_query_log WHERE epoch = $1",
        &[tstz],
        &[epoch.into()],
    )
    .unwrap_or(0);
    // SAFETY: a global of the backend.
    let db = unsafe { pg_sys::MyDatabaseId };
    let mut inserted = 0i64;
    let rows: Vec<SlowRow> = snapshot()
        .iter()
        .filter(|e| e.dbid == db && e.seq as i64 > last)
        .map(to_row)
        .collect();
    if rows.is_empty() {
        return 0;
    }
    let oid = |o| PgOid::BuiltIn(o);
    let text = oid(PgBuiltInOids::TEXTOID);
    let int8 = oid(PgBuiltInOids::INT8OID);
    let types = [
        tstz,
        oid(PgBuiltInOids::FLOAT8OID),
        int8,
        int8,
        text,
        text,
        text,
        text,
        text,
        text,
        text,
        tstz,
        int8,
    ];
    spi(Spi::connect_mut(|client| {
        // Planned once per flush, run once per entry.
        let insert = client.prepare_mut(
            "INSERT INTO tenantguard._slow_query_log
                (started_at, duration_ms, rows, queryid, query, database, db_user, app_user,
                 tenant_id, status, sqlstate, epoch, seq)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
             ON CONFLICT (epoch, seq) DO NOTHING",
            &types,
        )?;
        for r in rows {
            let done = client.update(
                &insert,
                None,
                &[
                    r.0.into(),
                    r.1.into(),
                    r.2.into(),
                    r.3.into(),
                    r.4.into(),
                    r.5.into(),
                    r.6.into(),
                    r.7.into(),
                    r.8.into(),
                    r.9.into(),
                    r.10.into(),
                    epoch.into(),
                    r.11.into(),
                ],
            )?;
            inserted += done.len() as i64;
        }
        Ok::<_, pgrx::spi::Error>(())
    }));
    inserted
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    // The #[pg_test] cluster does not preload tenantguard: the reading functions say how to.
    #[pg_test(error = "tenantguard.slow_queries() needs tenantguard in shared_preload_libraries")]
    fn slow_queries_without_preload() {
        Spi::run("SELECT * FROM tenantguard.slow_queries()").unwrap();
    }

    #[pg_test(
        error = "tenantguard.flush_slow_queries() needs tenantguard in shared_preload_libraries"
    )]
    fn flush_without_preload() {
        Spi::run("SELECT tenantguard._flush_slow_queries()").unwrap();
    }

    #[pg_test]
    fn without_preload_everything_else_works() {
        Spi::run("CREATE TABLE np (id int, tenant_id text)").unwrap();
        Spi::run("SELECT tenantguard.protect('np')").unwrap();
        Spi::run("INSERT INTO np VALUES (1, 'a')").unwrap();
        assert_eq!(
            Spi::get_one::<String>(
                "SELECT status FROM tenantguard.coverage() WHERE table_name = 'np'"
            )
            .unwrap()
            .as_deref(),
            Some("protected")
        );
        assert_eq!(
            Spi::get_one::<i64>(
                "SELECT count(*) FROM tenantguard.audit_log WHERE table_oid = 'np'::regclass"
            )
            .unwrap(),
            Some(1)
        );
    }
}
