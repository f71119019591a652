//! Citus: tenantguard on a coordinator and its workers.
//!
//! Citus is optional and found at run time: when `citus` is in `shared_preload_libraries`, its
//! library is loaded into every backend with its symbols global (PostgreSQL opens libraries with
//! `RTLD_GLOBAL`), and tenantguard looks up the few functions it calls by name. Without Citus none
//! of this does anything, and nothing here costs more than one cached lookup.
//!
//! - Citus's own sessions between nodes (shard DDL, metadata sync, shard moves and splits) carry
//!   out what the coordinator decided: the event triggers stand aside for them, and tenantguard
//!   never protects, registers or guards a shard ([`internal_backend`], [`known_shard`]).
//! - The tenant context travels with every distributed statement (`propagate.rs`).
//! - The audit trigger on a shard writes the row under the distributed table's name
//!   (`src/audit/meta.rs`), on the node that holds the shard; the coordinator reads every node's
//!   rows (`sql/citus.sql`).

pub mod convert;
pub mod placements;
pub mod propagate;

use pgrx::pg_sys;
use std::cell::OnceCell;
use std::ffi::{c_char, c_void, CStr};

extern "C" {
    fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
}

type BoolFn = unsafe extern "C-unwind" fn() -> bool;
type OidBoolFn = unsafe extern "C-unwind" fn(pg_sys::Oid) -> bool;
type ShardIdFn = unsafe extern "C-unwind" fn(*const c_char, bool) -> u64;
type ShardRelationFn = unsafe extern "C-unwind" fn(i64, bool) -> pg_sys::Oid;
type VoidFn = unsafe extern "C-unwind" fn();
type PropagateSetFn = unsafe extern "C-unwind" fn(*mut pg_sys::VariableSetStmt, *const c_char);

/// The Citus functions tenantguard calls, when the Citus library is loaded.
pub(crate) struct Citus {
    has_been_loaded: BoolFn,
    is_coordinator: BoolFn,
    internal_backend: BoolFn,
    rebalancer_backend: BoolFn,
    shard_transfer_backend: BoolFn,
    relation_is_a_known_shard: unsafe extern "C-unwind" fn(pg_sys::Oid) -> bool,
    shard_id_from_name: unsafe extern "C-unwind" fn(*const c_char, bool) -> u64,
    shard_relation: unsafe extern "C-unwind" fn(i64, bool) -> pg_sys::Oid,
    pub(crate) use_coordinated_transaction: unsafe extern "C-unwind" fn(),
    pub(crate) propagate_set:
        unsafe extern "C-unwind" fn(*mut pg_sys::VariableSetStmt, *const c_char),
    /// Citus's `activeSetStmts`: the SET LOCAL commands its remote transactions begin with.
    pub(crate) active_set_stmts: *mut pg_sys::StringInfo,
    /// Citus's `InTableTypeConversionFunctionCall` (null if this Citus has none).
    pub(crate) converting: *const bool,
}

thread_local! {
    static CITUS: OnceCell<Option<Citus>> = const { OnceCell::new() };
}

/// Looks one symbol up among the loaded libraries.
fn symbol(name: &CStr) -> Option<*mut c_void> {
    // SAFETY: dlsym with RTLD_DEFAULT (a null handle on glibc) only reads the loader's tables.
    let found = unsafe { dlsym(std::ptr::null_mut(), name.as_ptr()) };
    (!found.is_null()).then_some(found)
}

fn resolve() -> Option<Citus> {
    macro_rules! get {
        ($name:literal, $t:ty) => {
            // SAFETY: the symbol is Citus's exported function of this signature (Citus 11 to 13,
            // checked against its headers); a missing one leaves Citus unsupported, not misused.
            unsafe { std::mem::transmute::<*mut c_void, $t>(symbol($name)?) }
        };
    }
    Some(Citus {
        has_been_loaded: get!(c"CitusHasBeenLoaded", BoolFn),
        is_coordinator: get!(c"IsCoordinator", BoolFn),
        internal_backend: get!(c"IsCitusInternalBackend", BoolFn),
        rebalancer_backend: get!(c"IsRebalancerInternalBackend", BoolFn),
        shard_transfer_backend: get!(c"IsCitusShardTransferBackend", BoolFn),
        relation_is_a_known_shard: get!(c"RelationIsAKnownShard", OidBoolFn),
        shard_id_from_name: get!(c"ExtractShardIdFromTableName", ShardIdFn),
        shard_relation: get!(c"LookupShardRelationFromCatalog", ShardRelationFn),
        use_coordinated_transaction: get!(c"UseCoordinatedTransaction", VoidFn),
        propagate_set: get!(c"PostprocessVariableSetStmt", PropagateSetFn),
        active_set_stmts: symbol(c"activeSetStmts")? as *mut pg_sys::StringInfo,
        converting: symbol(c"InTableTypeConversionFunctionCall")
            .map_or(std::ptr::null(), |p| p as *const bool),
    })
}

/// Runs `f` with Citus's functions when its library is loaded in this backend.
pub(crate) fn with<T>(f: impl FnOnce(&Citus) -> T) -> Option<T> {
    CITUS.with(|c| c.get_or_init(resolve).as_ref().map(f))
}

/// Is the Citus library loaded in this backend (whatever the database)? One cached lookup.
pub(crate) fn library_loaded() -> bool {
    CITUS.with(|c| c.get_or_init(resolve).is_some())
}

/// Is Citus in use in this database: its library loaded and its extension created?
pub(crate) fn active() -> bool {
    // SAFETY: CitusHasBeenLoaded reads Citus's cached metadata state (a catalog lookup the first
    // time); called inside pgrx's error boundary.
    with(|c| unsafe { pg_sys::ffi::pg_guard_ffi_boundary(|| (c.has_been_loaded)()) })
        .unwrap_or(false)
}

/// Is this session one that Citus opened from another node (or for a shard move or split) to
/// carry out a command? Citus itself tells by the application_name it gives its connections.
pub(crate) fn internal_backend() -> bool {
    with(|c| {
        // SAFETY: the three only compare application_name with Citus's prefixes.
        unsafe {
            (c.internal_backend)() || (c.rebalancer_backend)() || (c.shard_transfer_backend)()
        }
    })
    .unwrap_or(false)
}

/// Is the relation a Citus shard (a placement of a distributed or reference table) on this node?
pub(crate) fn known_shard(relid: pg_sys::Oid) -> bool {
    active()
        // SAFETY: a metadata lookup of Citus's, inside pgrx's error boundary.
        && with(|c| unsafe {
            pg_sys::ffi::pg_guard_ffi_boundary(|| (c.relation_is_a_known_shard)(relid))
        })
        .unwrap_or(false)
}

/// The distributed (or reference) table a shard on this node belongs to, by this node's oid of
/// it, and the shard's id.
pub(crate) fn shard_owner(shard: pg_sys::Oid) -> Option<(pg_sys::Oid, i64)> {
    if !known_shard(shard) {
        return None;
    }
    with(|c| {
        // SAFETY: catalog lookups of Citus's with missing_ok, inside pgrx's error boundary; the
        // name is copied before the relation can change.
        unsafe {
            pg_sys::ffi::pg_guard_ffi_boundary(|| {
                let name = pg_sys::get_rel_name(shard);
                if name.is_null() {
                    return None;
                }
                let id = (c.shard_id_from_name)(name, true) as i64;
                if id <= 0 {
                    return None;
                }
                let owner = (c.shard_relation)(id, true);
                (owner != pg_sys::InvalidOid).then_some((owner, id))
            })
        }
    })
    .flatten()
}

/// Is this node the coordinator (group 0)? A node not yet added to a cluster is one too.
pub(crate) fn is_coordinator() -> bool {
    // SAFETY: reads Citus's cached local group id (a catalog lookup the first time), inside
    // pgrx's error boundary.
    with(|c| unsafe { pg_sys::ffi::pg_guard_ffi_boundary(|| (c.is_coordinator)()) }).unwrap_or(true)
}

/// Is the table a Citus table (distributed, reference, or Citus-managed local) in this node's
/// metadata?
pub(crate) fn is_citus_table(relid: pg_sys::Oid) -> bool {
    use crate::catalog::{kept_first, OID};
    thread_local! {
        static PLAN: OnceCell<pgrx::spi::OwnedPreparedStatement> = const { OnceCell::new() };
    }
    active()
        && kept_first::<bool>(
            &PLAN,
            "SELECT true FROM pg_catalog.pg_dist_partition WHERE logicalrelid = $1",
            &[OID],
            &[relid.into()],
        )
        .unwrap_or(false)
}

/// Is `citus.enable_unsafe_triggers` on? Citus refuses triggers on its tables otherwise.
pub(crate) fn unsafe_triggers_allowed() -> bool {
    // SAFETY: a missing_ok lookup of a setting; the value is read at once.
    unsafe {
        let raw = pg_sys::GetConfigOption(c"citus.enable_unsafe_triggers".as_ptr(), true, false);
        !raw.is_null() && CStr::from_ptr(raw).to_bytes() == b"on"
    }
}

/// Where protect(), unprotect(), exempt() and unexempt() may run for this table under Citus:
/// never on a shard, and for a Citus table only on the coordinator, which Citus copies from.
pub(crate) fn check_node(rel: &crate::catalog::RelInfo, verb: &str) {
    if !active() {
        return;
    }
    if let Some((owner, _)) = shard_owner(rel.oid) {
        let owner = crate::catalog::RelInfo::load(owner);
        crate::errors::Error::CitusShard {
            verb,
            shard: &rel.display(),
            table: &owner.qualified(),
        }
        .raise();
    }
    if !is_coordinator() && is_citus_table(rel.oid) {
        crate::errors::Error::CitusNotCoordinator {
            verb,
            table: &rel.display(),
        }
        .raise();
    }
}
