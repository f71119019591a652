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
