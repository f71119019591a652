//! The audit trail and updated_at: the trigger functions (`trigger`), what they know about each
//! relation (`meta`), row values as jsonb (`encode`), writing audit rows (`write`), and what each
//! role may read of them (`read`).

pub mod encode;
pub mod meta;
pub mod read;
pub mod trigger;
pub mod write;
