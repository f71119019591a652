//! Everything that calls PostgreSQL outside pgrx's error boundary, or depends on the server's
//! major version, in one place a reviewer can check against each version's headers.

/// Declares the version-1 calling convention record for a C function the SQL declares directly.
#[macro_export]
macro_rules! pg_finfo_v1 {
    ($finfo:ident) => {
        #[no_mangle]
        #[doc(hidden)]
        pub extern "C" fn $finfo() -> &'static pgrx::pg_sys::Pg_finfo_record {
            const V1: pgrx::pg_sys::Pg_finfo_record =
                pgrx::pg_sys::Pg_finfo_record { api_version: 1 };
            &V1
        }
    };
}

pub mod callbacks;
pub mod executor;
pub mod generated;
pub mod nodes;
pub mod raw;
pub mod settings;
