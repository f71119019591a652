//! Statements that come from tenantguard's own SQL and PL/pgSQL functions (coverage(), lint(), the
//! protect() wrapper, ...) are not captured with slow_query_track = all: their bodies are loaded
//! once per database and the verdict is kept per statement text.

use crate::session;
use pgrx::prelude::*;
use std::cell::{Cell, RefCell};
use std::ffi::CStr;

/// Bodies of tenantguard's SQL and PL/pgSQL functions, and the verdicts already reached for
/// statement texts (a loop runs the same statement text again and again; searching every body for
/// it each time cost about 14 us per nested statement).
pub(crate) struct Bodies {
    pub(crate) texts: Vec<String>,
    pub(crate) verdicts: std::collections::HashMap<Vec<u8>, bool>,
}

/// Statement texts remembered at most; the map starts over beyond this.
pub(crate) const MAX_VERDICTS: usize = 4096;

thread_local! {
    /// Bodies of tenantguard's SQL and PL/pgSQL functions in this database, loaded when first
    /// needed and dropped when pg_proc changes.
    pub(crate) static BODIES: RefCell<Option<Bodies>> = const { RefCell::new(None) };
    pub(crate) static BODIES_CALLBACK: Cell<bool> = const { Cell::new(false) };
}

#[pg_guard]
pub(crate) unsafe extern "C-unwind" fn bodies_invalidated(
    _arg: pg_sys::Datum,
    _cacheid: i32,
    _hash: u32,
) {
    BODIES.with(|b| {
        if let Ok(mut b) = b.try_borrow_mut() {
            *b = None;
        }
    });
}

/// True for a nested statement that comes from one of tenantguard's own SQL or PL/pgSQL
/// functions (coverage(), lint(), the protect() wrapper, ...). Only asked for nested statements
/// with slow_query_track = all.
pub(crate) fn from_tenantguard_function(source: *const std::ffi::c_char) -> bool {
    if source.is_null() {
        return false;
    }
    if BODIES.with(|b| b.borrow().is_none()) {
        crate::pg::callbacks::register_once(
            &BODIES_CALLBACK,
            None,
            &[(pg_sys::SysCacheIdentifier::PROCOID, bodies_invalidated)],
        );
        let _internal = session::Internal::enter();
        let bodies: Vec<String> = Spi::connect(|client| {
            client
                .select(
                    "SELECT p.prosrc FROM pg_catalog.pg_proc p
                       JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
                       JOIN pg_catalog.pg_language l ON l.oid = p.prolang
                      WHERE n.nspname = 'tenantguard' AND l.lanname IN ('sql', 'plpgsql')",
                    None,
                    &[],
                )?
                .map(|row| row.get::<String>(1).map(|s| s.unwrap_or_default()))
                .collect::<Result<Vec<_>, _>>()
        })
        .unwrap_or_default();
        BODIES.with(|b| {
            *b.borrow_mut() = Some(Bodies {
                texts: bodies,
                verdicts: Default::default(),
            })
        });
    }
    // SAFETY: the statement's NUL-terminated source text.
    let raw = unsafe { CStr::from_ptr(source) }.to_bytes();
    BODIES.with(|b| {
        let mut b = b.borrow_mut();
        let Some(bodies) = b.as_mut() else {
            return false;
        };
        if let Some(&verdict) = bodies.verdicts.get(raw) {
            return verdict;
        }
        let text = String::from_utf8_lossy(raw);
        let text = text.trim();
        let verdict = !text.is_empty() && bodies.texts.iter().any(|body| body.contains(text));
        if bodies.verdicts.len() >= MAX_VERDICTS {
            bodies.verdicts.clear();
        }
        bodies.verdicts.insert(raw.to_vec(), verdict);
        verdict
    })
}

// The hooks run for every statement, so their common path (a statement that is timed and turns
// out fast, or is not timed) stays outside pgrx's error boundary, whose `sigsetjmp` per call cost
// more than the rest of the hook. That path calls only server functions that cannot raise an
// ERROR (declared in `settings::raw`) and Rust code that cannot panic (no RefCell is borrowed while
// anything else runs). What can fail - recording an entry, the SPI lookup for nested statements -
// runs in #[pg_guard] functions, and the frames an ERROR from there passes through own nothing that
// needs dropping.

/// from_tenantguard_function behind the error boundary: it may run SPI.
#[pg_guard]
pub(crate) unsafe extern "C-unwind" fn nested_from_tenantguard(
    source: *const std::ffi::c_char,
) -> bool {
    from_tenantguard_function(source)
}
