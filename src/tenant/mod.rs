//! The session's tenant: `set_tenant()` and `current_tenant()` (`context`), and the typed tenant
//! values the generated policies compare the tenant column with (`values`).

pub mod context;
pub mod spec;
pub mod subtree;
pub mod token;
pub mod values;
