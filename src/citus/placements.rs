//! What the SQL side of the Citus support (`sql/citus.sql`) asks of this node: whether Citus is
//! here and which role the node plays, and the session's tenant context to read the workers'
//! audit rows with.

use pgrx::prelude::*;
use pgrx::JsonB;

/// 'coordinator', 'worker', or NULL when Citus is not in use in this database.
#[pg_extern(stable, parallel_safe)]
fn _citus_role() -> Option<&'static str> {
    if !super::active() {
        return None;
    }
    Some(if super::is_coordinator() {
        "coordinator"
    } else {
        "worker"
    })
}

/// The session's tenant context as a JSON object of setting name to value: what a worker needs to
/// see the audit rows this session may see (`tenantguard._audit_export`).
#[pg_extern(stable, parallel_safe)]
fn _context() -> JsonB {
    let settings = super::propagate::context_settings().unwrap_or_default();
    JsonB(serde_json::Value::Object(
        settings
            .into_iter()
            .map(|(k, v)| (k, serde_json::Value::String(v)))
            .collect(),
    ))
}
