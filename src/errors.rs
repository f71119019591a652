//! User-facing errors: a real SQLSTATE, a message that names the object, and a hint.

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;

/// Raise an ERROR. Never returns: PostgreSQL unwinds the statement, so nothing half-done stays.
#[track_caller]
pub fn raise(code: PgSqlErrorCode, message: impl Into<String>, hint: impl Into<String>) -> ! {
    ErrorReport::new(code, message.into(), "tenantguard")
        .set_hint(hint)
        .report(PgLogLevel::ERROR);
    unreachable!("ERROR does not return")
}

/// Unwrap an SPI result. An SPI failure here is a bug in tenantguard, not a user mistake.
#[track_caller]
pub fn spi<T>(result: Result<T, pgrx::spi::Error>) -> T {
    match result {
        Ok(v) => v,
        Err(e) => {
            ErrorReport::new(
                PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                format!("tenantguard: internal query failed: {e}"),
                "tenantguard",
            )
            .report(PgLogLevel::ERROR);
            unreachable!("ERROR does not return")
        }
    }
}
