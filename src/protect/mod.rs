//! Protecting a table: the options protect() takes (`options`), the policy templates
//! (`templates`) and triggers (`triggers`) they ask for, the SQL that gets a table there
//! (`planner`), what was recorded about it (`registry`), checks of user-supplied SQL text
//! (`sqlcheck`), and the SQL-facing functions (`api`).

pub mod allowance;
pub mod api;
pub mod export;
pub mod options;
pub mod planner;
pub mod registry;
pub mod sqlcheck;
pub mod templates;
pub mod triggers;

/// What protect(), unprotect(), exempt() and unexempt() may act on: a plain or partitioned table
/// the caller may act as owner of (`RelInfo::check_protectable`), and with Citus, not a shard or a
/// worker's copy of a Citus table.
pub(crate) fn check_target(rel: &crate::catalog::RelInfo, verb: &str) {
    rel.check_protectable(verb);
    crate::citus::check_node(rel, verb);
}
