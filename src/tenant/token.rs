//! Signed tenant tokens: `set_tenant_token(token)` verifies a compact JWS (a JWT) against the keys
//! in `tenantguard.token_keys` and sets the tenant for the current transaction, in backend memory
//! that no SQL can write. With `tenantguard.require_signed_tenant = on`, the policies take the
//! tenant only from there: a `SET` of the tenant setting, `set_config()` or `set_tenant()` then
//! counts as unset.
//!
//! Verification is jsonwebtoken's (which uses ring for the primitives): the algorithm comes from
//! the key (the JWK's `alg`), never from the token; a token whose header names another algorithm,
//! `none`, or a key of another family (an RSA public key used as an HMAC secret) is refused.
//! `exp` is required, `nbf` checked when present, with `tenantguard.token_leeway` seconds of clock
//! skew.

use crate::errors::Error;
use crate::tenant::spec::{self, Found};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use pgrx::prelude::*;
use std::cell::{Cell, RefCell};
use std::str::FromStr;

/// The tenant a token set: for the transaction (local id) and subtransaction that set it.
#[derive(Clone)]
struct Verified {
    xid: u32,
    subxact: pg_sys::SubTransactionId,
    /// The tenant claim's value: a string or number as text, or a list as a JSON array.
    tenant: Vec<u8>,
    user: Option<Vec<u8>>,
}

/// A verification key: its id, the algorithm it is for, the key.
struct Key {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

thread_local! {
    /// What set_tenant_token() set, newest last; entries of ended transactions and aborted
    /// subtransactions are dropped.
    static VERIFIED: RefCell<Vec<Verified>> = const { RefCell::new(Vec::new()) };
    /// (the keys setting's text, the keys parsed from it).
    static KEYS: RefCell<Option<(String, Vec<Key>)>> = const { RefCell::new(None) };
    static CALLBACK: Cell<bool> = const { Cell::new(false) };
}

fn refuse(reason: &str) -> ! {
    Error::BadTenantToken { reason }.raise()
}

/// The keys, parsed once per change of the setting. Errors never show key material.
fn with_keys<R>(f: impl FnOnce(&[Key]) -> R) -> R {
    let text = crate::gucs::TOKEN_KEYS
        .get()
        .and_then(|s| s.into_string().ok())
        .unwrap_or_default();
    if text.trim().is_empty() {
        Error::NoTokenKeys.raise();
    }
    KEYS.with(|k| {
        let mut k = k.borrow_mut();
        if k.as_ref().map(|(t, _)| t != &text).unwrap_or(true) {
            let set: JwkSet = serde_json::from_str(&text).unwrap_or_else(|_| {
                Error::BadTokenKeys {
                    reason: "not a JWK set",
                }
                .raise()
            });
            let keys = set.keys.iter().map(key_of).collect();
            *k = Some((text, keys));
        }
        f(&k.as_ref().expect("just set").1)
    })
}

fn key_of(jwk: &Jwk) -> Key {
    let Some(alg) = jwk.common.key_algorithm else {
        Error::BadTokenKeys {
            reason: "every key needs its \"alg\"",
        }
        .raise()
    };
    let alg = Algorithm::from_str(&alg.to_string()).unwrap_or_else(|_| {
        Error::BadTokenKeys {
            reason: "a key's \"alg\" is not a signature algorithm",
        }
        .raise()
    });
    if !matches!(alg, Algorithm::HS256 | Algorithm::RS256 | Algorithm::EdDSA) {
        Error::BadTokenKeys {
            reason: "supported algorithms: HS256, RS256, EdDSA",
        }
        .raise();
    }
    let key = DecodingKey::from_jwk(jwk).unwrap_or_else(|_| {
        Error::BadTokenKeys {
            reason: "a key does not match its \"kty\"",
        }
        .raise()
    });
    Key {
        kid: jwk.common.key_id.clone(),
        alg,
        key,
    }
}

/// A claim at a path (the tenant-setting path syntax), as Found.
fn claim(claims: &serde_json::Value, path_text: &str) -> Found {
    let Ok(spec) = spec::parse(&format!("t.t:{path_text}")) else {
        Error::BadTokenKeys {
            reason: "tenantguard.token_tenant_claim is not a path",
        }
        .raise()
    };
    spec::find(claims.to_string().as_bytes(), &spec.path)
}

fn verify(token: &str) -> serde_json::Value {
    let header = jsonwebtoken::decode_header(token)
        .unwrap_or_else(|_| refuse("not a signed token with a supported algorithm"));
    with_keys(|keys| {
        let key = match &header.kid {
            Some(kid) => keys
                .iter()
                .find(|k| k.kid.as_deref() == Some(kid.as_str()))
                .unwrap_or_else(|| refuse("no key has the token's kid")),
            None if keys.len() == 1 => &keys[0],
            None => refuse("the token names no kid, and there is more than one key"),
        };
        let mut validation = Validation::new(key.alg);
        validation.leeway = crate::gucs::token_leeway() as u64;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = false;
        validation.required_spec_claims = ["exp".to_string()].into_iter().collect();
        match jsonwebtoken::decode::<serde_json::Value>(token, &key.key, &validation) {
            Ok(data) => data.claims,
            Err(e) => {
                use jsonwebtoken::errors::ErrorKind::*;
                refuse(match e.kind() {
                    InvalidAlgorithm => "the token's algorithm is not its key's",
                    InvalidSignature => "bad signature",
                    ExpiredSignature => "expired",
                    ImmatureSignature => "not valid yet (nbf)",
                    MissingRequiredClaim(_) => "no exp claim",
                    _ => "malformed token",
                })
            }
        }
    })
}

/// Verifies `token` and sets its tenant for the current transaction. Refusals are 28000 and
/// leave the transaction's verified tenant as it was.
#[pg_extern(volatile, parallel_unsafe)]
fn set_tenant_token(token: &str) -> Option<String> {
    register_callback();
    let claims = verify(token);
    let tenant = match claim(&claims, &crate::gucs::token_tenant_claim()) {
        Found::One(t) => t,
        Found::Many(items) => serde_json::Value::Array(
            items
                .into_iter()
                .map(|b| serde_json::Value::String(String::from_utf8_lossy(&b).into_owned()))
                .collect(),
        )
        .to_string()
        .into_bytes(),
        Found::None => refuse("the token has no tenant claim"),
    };
    let user = match claim(&claims, &crate::gucs::token_user_claim()) {
        Found::One(u) => Some(u),
        _ => None,
    };
    // SAFETY: the backend's own PGPROC, and the transaction state.
    let (xid, subxact) = unsafe {
        (
            crate::pg::raw::my_local_xid(),
            pg_sys::GetCurrentSubTransactionId(),
        )
    };
    VERIFIED.with(|v| {
        let mut v = v.borrow_mut();
        v.retain(|e| e.xid == xid);
        v.push(Verified {
            xid,
            subxact,
            tenant: tenant.clone(),
            user,
        });
    });
    Some(String::from_utf8_lossy(&tenant).into_owned())
}

/// Is `tenantguard.require_signed_tenant` on? A plain global read.
pub(crate) fn required() -> bool {
    crate::gucs::REQUIRE_SIGNED_TENANT.get()
}

/// The verified tenant of the current transaction, if a token set one. Never raises.
pub(crate) fn verified_tenant() -> Option<Vec<u8>> {
    // SAFETY: the backend's own PGPROC.
    let xid = unsafe { crate::pg::raw::my_local_xid() };
    VERIFIED.with(|v| {
        v.try_borrow()
            .ok()?
            .iter()
            .rev()
            .find(|e| e.xid == xid)
            .map(|e| e.tenant.clone())
    })
}

/// The verified application user of the current transaction (the token's user claim).
pub(crate) fn verified_user() -> Option<Vec<u8>> {
    // SAFETY: the backend's own PGPROC.
    let xid = unsafe { crate::pg::raw::my_local_xid() };
    VERIFIED.with(|v| {
        v.try_borrow()
            .ok()?
            .iter()
            .rev()
            .find(|e| e.xid == xid)
            .and_then(|e| e.user.clone())
    })
}

fn register_callback() {
    if CALLBACK.with(|c| c.replace(true)) {
        return;
    }
    // SAFETY: registers a callback that only touches this module's thread-local.
    unsafe { pg_sys::RegisterSubXactCallback(Some(subxact_event), std::ptr::null_mut()) };
}

/// A rolled-back subtransaction takes back the tenant a token set in it.
unsafe extern "C-unwind" fn subxact_event(
    event: pg_sys::SubXactEvent::Type,
    my_subid: pg_sys::SubTransactionId,
    _parent: pg_sys::SubTransactionId,
    _arg: *mut std::ffi::c_void,
) {
    if event == pg_sys::SubXactEvent::SUBXACT_EVENT_ABORT_SUB {
        VERIFIED.with(|v| {
            if let Ok(mut v) = v.try_borrow_mut() {
                v.retain(|e| e.subxact < my_subid);
            }
        });
    }
}
