//! Event triggers: every table that gains the tenant column is protected in the same transaction
//! (`autoprotect`), protection cannot be switched off by accident (`refusals`, the guard), and
//! dropped tables leave the registry. `events` holds the trigger functions themselves and when
//! they stand aside: while tenantguard itself changes a table, while an extension script runs,
//! and in a superuser's session with `row_security = off`, which is how pg_dump scripts and
//! pg_restore run (a restore brings back policies, RLS flags and the registry exactly as dumped).

pub mod autoprotect;
pub mod events;
pub mod refusals;
