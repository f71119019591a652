//! Reading the tenant stats: tenant_stats(), top_tenants(), tenant_stats_info(), and
//! reset_tenant_stats(). Who sees what is the rule of slow_queries(): superusers, members of
//! tenantguard_admin and of pg_read_all_stats every row; anyone else this database's rows of the
//! session's tenant.

use crate::errors::Error;
use crate::privileges;
use crate::slowlog::ring::{require_preload, same_tenant};
use crate::slowlog::stats::{self, *};
use pgrx::prelude::*;
use std::collections::HashMap;
use std::ffi::CStr;

fn visible(what: &str) -> Vec<Row> {
    require_preload(what);
    let all = privileges::reads_all_stats();
    let tenant = crate::tenant::context::tenant_value().filter(|t| !t.is_empty());
    // SAFETY: a global of the backend.
    let db = unsafe { pg_sys::MyDatabaseId };
    if !all && tenant.is_none() {
        // Nothing to show; the caller's own counts still go to shared memory.
        stats::publish();
        return Vec::new();
    }
    stats::snapshot()
        .into_iter()
        .filter(|r| {
            all || (r.key.dbid == db
                && tenant
                    .as_deref()
                    .is_some_and(|t| same_tenant(&r.key.tenant[..r.key.tenant_len as usize], t)))
        })
        .collect()
}

fn name_of(p: *const std::ffi::c_char) -> Option<String> {
    // SAFETY: a palloc'd name or NULL.
    (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
}

fn database_name(dbid: pg_sys::Oid) -> Option<String> {
    // SAFETY: a catalog lookup by OID; NULL when the database is gone.
    name_of(unsafe { pg_sys::get_database_name(dbid) })
}

fn tenant_of(key: &Key) -> Option<String> {
    (key.tenant_len > 0)
        .then(|| String::from_utf8_lossy(&key.tenant[..key.tenant_len as usize]).into_owned())
}

fn time_of(us: u64) -> Option<TimestampWithTimeZone> {
    (us != 0 && us != u64::MAX)
        .then(|| TimestampWithTimeZone::try_from(us as i64).ok())
        .flatten()
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn mean_ms(c: &[u64; COUNTERS]) -> f64 {
    if c[CALLS] == 0 {
        0.0
    } else {
        ms(c[TOTAL_US]) / c[CALLS] as f64
    }
}

#[pg_extern(volatile, parallel_restricted)]
#[allow(clippy::type_complexity)]
fn tenant_stats() -> TableIterator<
    'static,
    (
        name!(database, Option<String>),
        name!(db_user, Option<String>),
        name!(tenant_id, Option<String>),
        name!(calls, i64),
        name!(total_time_ms, f64),
        name!(mean_time_ms, f64),
        name!(max_time_ms, f64),
        name!(rows, i64),
        name!(shared_blks_hit, i64),
        name!(shared_blks_read, i64),
        name!(temp_blks_written, i64),
        name!(errors, i64),
        name!(timeouts, i64),
        name!(first_seen, Option<TimestampWithTimeZone>),
        name!(last_seen, Option<TimestampWithTimeZone>),
    ),
> {
    let rows: Vec<_> = visible("tenantguard.tenant_stats()")
        .iter()
        .map(|r| {
            let c = &r.counts;
            (
                database_name(r.key.dbid),
                // SAFETY: a catalog lookup by OID; NULL when the role is gone.
                name_of(unsafe { pg_sys::GetUserNameFromId(r.key.userid, true) }),
                tenant_of(&r.key),
                c[CALLS] as i64,
                ms(c[TOTAL_US]),
                mean_ms(c),
                ms(c[MAX_US]),
                c[ROWS] as i64,
                c[BLKS_HIT] as i64,
                c[BLKS_READ] as i64,
                c[TEMP_WRITTEN] as i64,
                c[ERRORS] as i64,
                c[TIMEOUTS] as i64,
                time_of(c[FIRST_SEEN]),
                time_of(c[LAST_SEEN]),
            )
        })
        .collect();
    TableIterator::new(rows)
}

/// What top_tenants() can rank by, and the counter (or derived figure) each one is.
const RANKINGS: &[&str] = &[
    "total_time",
    "calls",
    "mean_time",
    "max_time",
    "rows",
    "shared_blks_hit",
    "shared_blks_read",
    "temp_blks_written",
    "errors",
    "timeouts",
];

fn rank_value(by: &str, c: &[u64; COUNTERS]) -> f64 {
    match by {
        "total_time" => c[TOTAL_US] as f64,
        "calls" => c[CALLS] as f64,
        "mean_time" => mean_ms(c),
        "max_time" => c[MAX_US] as f64,
        "rows" => c[ROWS] as f64,
        "shared_blks_hit" => c[BLKS_HIT] as f64,
        "shared_blks_read" => c[BLKS_READ] as f64,
        "temp_blks_written" => c[TEMP_WRITTEN] as f64,
        "errors" => c[ERRORS] as f64,
        _ => c[TIMEOUTS] as f64,
    }
}

/// The `n` heaviest tenants by `by`, every role's statements added up per database and tenant.
#[pg_extern(volatile, parallel_restricted)]
#[allow(clippy::type_complexity)]
fn top_tenants(
    n: default!(i32, 10),
    by: default!(&str, "'total_time'"),
) -> TableIterator<
    'static,
    (
        name!(database, Option<String>),
        name!(tenant_id, Option<String>),
        name!(calls, i64),
        name!(total_time_ms, f64),
        name!(mean_time_ms, f64),
        name!(max_time_ms, f64),
        name!(rows, i64),
        name!(shared_blks_hit, i64),
        name!(shared_blks_read, i64),
        name!(temp_blks_written, i64),
        name!(errors, i64),
        name!(timeouts, i64),
        name!(last_seen, Option<TimestampWithTimeZone>),
    ),
> {
    if !RANKINGS.contains(&by) {
        Error::InvalidArgument {
            message: format!("top_tenants(): cannot rank by \"{by}\""),
            hint: "Rank by total_time, calls, mean_time, max_time, rows, shared_blks_hit, \
                   shared_blks_read, temp_blks_written, errors or timeouts.",
        }
        .raise();
    }
    if n < 0 {
        Error::InvalidArgument {
            message: format!("top_tenants(): n must not be negative, got {n}"),
            hint: "Pass how many tenants to show, for example 10.",
        }
        .raise();
    }
    let mut sums: HashMap<(pg_sys::Oid, Vec<u8>), [u64; COUNTERS]> = HashMap::new();
    for r in visible("tenantguard.top_tenants()") {
        let key = (
            r.key.dbid,
            r.key.tenant[..r.key.tenant_len as usize].to_vec(),
        );
        let s = sums.entry(key).or_insert([0; COUNTERS]);
        for i in SUMMED {
            s[i] += r.counts[i];
        }
        s[MAX_US] = s[MAX_US].max(r.counts[MAX_US]);
        s[LAST_SEEN] = s[LAST_SEEN].max(r.counts[LAST_SEEN]);
    }
    let mut ranked: Vec<_> = sums.into_iter().collect();
    ranked.sort_by(|a, b| {
        rank_value(by, &b.1)
            .total_cmp(&rank_value(by, &a.1))
            .then_with(|| (u32::from(a.0 .0), &a.0 .1).cmp(&(u32::from(b.0 .0), &b.0 .1)))
    });
    ranked.truncate(n as usize);
    let rows: Vec<_> = ranked
        .into_iter()
        .map(|((db, tenant), c)| {
            (
                database_name(db),
                (!tenant.is_empty()).then(|| String::from_utf8_lossy(&tenant).into_owned()),
                c[CALLS] as i64,
                ms(c[TOTAL_US]),
                mean_ms(&c),
                ms(c[MAX_US]),
                c[ROWS] as i64,
                c[BLKS_HIT] as i64,
                c[BLKS_READ] as i64,
                c[TEMP_WRITTEN] as i64,
                c[ERRORS] as i64,
                c[TIMEOUTS] as i64,
                time_of(c[LAST_SEEN]),
            )
        })
        .collect();
    TableIterator::new(rows)
}

/// The table's bound, how many entries it holds, how many were evicted since the server started
/// or the last reset, and when that reset was. For those who see every row: the number of
/// entries says how many tenants are active.
#[pg_extern(volatile, parallel_restricted)]
fn tenant_stats_info() -> TableIterator<
    'static,
    (
        name!(max_entries, i64),
        name!(entries, i64),
        name!(evicted, i64),
        name!(reset_at, Option<TimestampWithTimeZone>),
    ),
> {
    require_preload("tenantguard.tenant_stats_info()");
    if !privileges::reads_all_stats() {
        Error::NotStatsReader {
            what: "tenantguard.tenant_stats_info()",
        }
        .raise();
    }
    stats::publish();
    let (max, used, evicted, reset_at) = stats::info();
    TableIterator::once((
        max as i64,
        used as i64,
        evicted as i64,
        (reset_at != 0)
            .then(|| TimestampWithTimeZone::try_from(reset_at).ok())
            .flatten(),
    ))
}

#[pg_extern(volatile, parallel_unsafe)]
fn reset_tenant_stats() -> i64 {
    require_preload("tenantguard.reset_tenant_stats()");
    if !privileges::is_admin() {
        Error::NotAdmin {
            verb: "reset",
            object: "the tenant stats",
        }
        .raise();
    }
    stats::reset()
}
