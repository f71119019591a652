//! Row values as jsonb, built as JsonbValues directly (no text round trip), with the same result
//! `to_jsonb()` gives; and the small datums an audit row needs.

use pgrx::pg_sys;
use std::cell::OnceCell;
use std::ffi::CStr;
use std::ffi::CString;
use std::ptr;

/// How one column's value becomes a jsonb value; the same result `to_jsonb()` gives.
pub(crate) enum Encoding {
    Int2,
    Int4,
    Int8,
    /// numeric; NaN and infinities become strings through the output function, as in to_jsonb().
    Numeric(*mut pg_sys::FmgrInfo),
    Bool,
    Text,
    Jsonb,
    /// date, timestamp, timestamptz: ISO 8601, as to_jsonb() writes them.
    DateTime(pg_sys::Oid),
    /// uuid: its text form, written here rather than through uuid_out (a tenant column is
    /// usually a uuid, so most audited rows have one or two).
    Uuid,
    /// A built-in type to_jsonb() writes as its text output: the output function, cached.
    Output(*mut pg_sys::FmgrInfo),
    /// Everything else (arrays, composites, floats, json, user-defined types): to_jsonb() itself.
    ToJsonb(*mut pg_sys::FmgrInfo),
}

pub(crate) struct Column {
    /// 0-based index into the deformed tuple.
    pub(crate) index: usize,
    pub(crate) name: CString,
    pub(crate) encoding: Encoding,
}

// utils/datum.h, which pgrx's bindings leave out. Called only through pg_guard_ffi_boundary, so an
// ERROR inside it unwinds properly.
extern "C-unwind" {
    fn datum_image_eq(
        value1: pg_sys::Datum,
        value2: pg_sys::Datum,
        typ_by_val: bool,
        typ_len: i32,
    ) -> bool;
}

thread_local! {
    /// 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE' as text datums, made once in TopMemoryContext.
    pub(crate) static OP_TEXTS: OnceCell<[pg_sys::Datum; 4]> = const { OnceCell::new() };
}

/// Length of a uuid's text form, 8-4-4-4-12 hex digits.
pub(crate) const UUID_TEXT_LEN: usize = 36;

/// A uuid datum's text form, exactly as uuid_out writes it: lower-case hex digits with dashes
/// after the 4th, 6th, 8th and 10th byte.
///
/// # Safety
/// `datum` must be a uuid datum (a pointer to 16 bytes).
pub(crate) unsafe fn uuid_text(datum: pg_sys::Datum) -> [u8; UUID_TEXT_LEN] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = std::slice::from_raw_parts(datum.cast_mut_ptr::<u8>() as *const u8, 16);
    let mut out = [b'-'; UUID_TEXT_LEN];
    let mut j = 0;
    for (i, b) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            j += 1;
        }
        out[j] = HEX[(b >> 4) as usize];
        out[j + 1] = HEX[(b & 0xf) as usize];
        j += 2;
    }
    out
}

/// A jsonb datum as a value to push: scalars unwrapped, containers as binary.
///
/// # Safety
/// `datum` must be a jsonb datum.
pub(crate) unsafe fn jsonb_value(datum: pg_sys::Datum, out: &mut pg_sys::JsonbValue) {
    let jb = pg_sys::pg_detoast_datum(datum.cast_mut_ptr()) as *mut pg_sys::Jsonb;
    let root = ptr::addr_of_mut!((*jb).root);
    if (*root).header & pg_sys::JB_FSCALAR != 0 {
        pg_sys::JsonbExtractScalar(root, out);
    } else {
        out.type_ = pg_sys::jbvType::jbvBinary;
        out.val.binary.data = root;
        out.val.binary.len =
            (pgrx::varsize(jb as *const pg_sys::varlena) - pg_sys::VARHDRSZ) as i32;
    }
}

pub(crate) fn string_value(out: &mut pg_sys::JsonbValue, s: *mut std::ffi::c_char, len: usize) {
    out.type_ = pg_sys::jbvType::jbvString;
    out.val.string.val = s;
    out.val.string.len = len as i32;
}

/// One column's value as a JsonbValue, valid until the current memory context is reset.
///
/// # Safety
/// `datum` must be a non-null value of the column's type.
pub(crate) unsafe fn encode(
    encoding: &Encoding,
    datum: pg_sys::Datum,
    out: &mut pg_sys::JsonbValue,
) {
    match encoding {
        Encoding::Int2 | Encoding::Int4 | Encoding::Int8 => {
            let v = match encoding {
                Encoding::Int2 => datum.value() as i16 as i64,
                Encoding::Int4 => datum.value() as i32 as i64,
                _ => datum.value() as i64,
            };
            out.type_ = pg_sys::jbvType::jbvNumeric;
            out.val.numeric = pg_sys::int64_to_numeric(v);
        }
        Encoding::Numeric(finfo) => {
            let n = pg_sys::pg_detoast_datum(datum.cast_mut_ptr()) as pg_sys::Numeric;
            if pg_sys::numeric_is_nan(n) || pg_sys::numeric_is_inf(n) {
                let s = pg_sys::OutputFunctionCall(*finfo, datum);
                string_value(out, s, CStr::from_ptr(s).to_bytes().len());
            } else {
                out.type_ = pg_sys::jbvType::jbvNumeric;
                out.val.numeric = n;
            }
        }
        Encoding::Bool => {
            out.type_ = pg_sys::jbvType::jbvBool;
            out.val.boolean = datum.value() != 0;
        }
        Encoding::Text => {
            let t = pg_sys::pg_detoast_datum_packed(datum.cast_mut_ptr());
            string_value(
                out,
                pgrx::vardata_any(t) as *mut std::ffi::c_char,
                pgrx::varsize_any_exhdr(t),
            );
        }
        Encoding::Jsonb => jsonb_value(datum, out),
        Encoding::DateTime(typid) => {
            let s = pg_sys::JsonEncodeDateTime(ptr::null_mut(), datum, *typid, ptr::null());
            string_value(out, s, CStr::from_ptr(s).to_bytes().len());
        }
        Encoding::Uuid => {
            let s = pg_sys::pnstrdup(uuid_text(datum).as_ptr() as *const _, UUID_TEXT_LEN);
            string_value(out, s, UUID_TEXT_LEN);
        }
        Encoding::Output(finfo) => {
            let s = pg_sys::OutputFunctionCall(*finfo, datum);
            string_value(out, s, CStr::from_ptr(s).to_bytes().len());
        }
        Encoding::ToJsonb(finfo) => {
            let j = pg_sys::FunctionCall1Coll(*finfo, pg_sys::InvalidOid, datum);
            jsonb_value(j, out);
        }
    }
}

/// A jsonb object of the given columns of a deformed row.
///
/// The columns come in jsonb's key order, so the object is handed to JsonbValueToJsonb whole:
/// one call per row instead of two pushJsonbValue calls per column and a sort at the end. A value
/// that is itself a jsonb container (a jsonb column, or to_jsonb() of an array or composite) must
/// be unpacked into the object, which pushJsonbValue does; such rows take that path.
///
/// # Safety
/// `values`/`nulls` must be the deformed row the columns index into.
pub(crate) unsafe fn row_object(
    columns: &[Column],
    values: &[pg_sys::Datum],
    nulls: &[bool],
) -> pg_sys::Datum {
    let mut pairs: Vec<pg_sys::JsonbPair> = Vec::with_capacity(columns.len());
    for (order, c) in columns.iter().enumerate() {
        let mut pair: pg_sys::JsonbPair = std::mem::zeroed();
        string_value(
            &mut pair.key,
            c.name.as_ptr() as *mut std::ffi::c_char,
            c.name.as_bytes().len(),
        );
        if nulls[c.index] {
            pair.value.type_ = pg_sys::jbvType::jbvNull;
        } else {
            encode(&c.encoding, values[c.index], &mut pair.value);
        }
        pair.order = order as u32;
        pairs.push(pair);
    }
    if pairs
        .iter()
        .any(|p| p.value.type_ == pg_sys::jbvType::jbvBinary)
    {
        return pushed_object(&mut pairs);
    }
    let mut object: pg_sys::JsonbValue = std::mem::zeroed();
    object.type_ = pg_sys::jbvType::jbvObject;
    object.val.object.nPairs = pairs.len() as i32;
    object.val.object.pairs = pairs.as_mut_ptr();
    pg_sys::Datum::from(pg_sys::JsonbValueToJsonb(&mut object))
}

/// The same object built through pushJsonbValue, which unpacks container values.
///
/// # Safety
/// The pairs' values must be valid JsonbValues.
pub(crate) unsafe fn pushed_object(pairs: &mut [pg_sys::JsonbPair]) -> pg_sys::Datum {
    use pg_sys::JsonbIteratorToken::{WJB_BEGIN_OBJECT, WJB_END_OBJECT, WJB_KEY, WJB_VALUE};
    let mut state: *mut pg_sys::JsonbParseState = ptr::null_mut();
    pg_sys::pushJsonbValue(&mut state, WJB_BEGIN_OBJECT, ptr::null_mut());
    for p in pairs.iter_mut() {
        pg_sys::pushJsonbValue(&mut state, WJB_KEY, &mut p.key);
        pg_sys::pushJsonbValue(&mut state, WJB_VALUE, &mut p.value);
    }
    let res = pg_sys::pushJsonbValue(&mut state, WJB_END_OBJECT, ptr::null_mut());
    pg_sys::Datum::from(pg_sys::JsonbValueToJsonb(res))
}

/// A deformed heap tuple.
///
/// # Safety
/// `tuple` must be a tuple of `desc`.
pub(crate) unsafe fn deform(
    tuple: pg_sys::HeapTuple,
    desc: pg_sys::TupleDesc,
) -> (Vec<pg_sys::Datum>, Vec<bool>) {
    let n = (*desc).natts as usize;
    let mut values = vec![pg_sys::Datum::from(0); n];
    let mut nulls = vec![true; n];
    pg_sys::heap_deform_tuple(tuple, desc, values.as_mut_ptr(), nulls.as_mut_ptr());
    (values, nulls)
}

/// True when the column's value is the same in both rows (NULLs equal, values byte-equal).
///
/// # Safety
/// The slices must be deformed rows of the same descriptor.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn same(
    i: usize,
    typlen: i16,
    byval: bool,
    a: &[pg_sys::Datum],
    an: &[bool],
    b: &[pg_sys::Datum],
    bn: &[bool],
) -> bool {
    match (an[i], bn[i]) {
        (true, true) => true,
        (false, false) => {
            pg_sys::ffi::pg_guard_ffi_boundary(|| datum_image_eq(a[i], b[i], byval, typlen as i32))
        }
        _ => false,
    }
}

/// True when two versions of a row hold byte-identical data: same null bitmap, same attribute
/// bytes (an unchanged TOASTed value keeps its pointer). No deforming, one memcmp.
///
/// # Safety
/// Both must be valid heap tuples of the same relation.
pub(crate) unsafe fn same_bytes(a: pg_sys::HeapTuple, b: pg_sys::HeapTuple) -> bool {
    let (ha, hb) = ((*a).t_data, (*b).t_data);
    let mask = pg_sys::HEAP_NATTS_MASK as u16;
    if (*a).t_len != (*b).t_len
        || (*ha).t_hoff != (*hb).t_hoff
        || ((*ha).t_infomask2 & mask) != ((*hb).t_infomask2 & mask)
        || ((*ha).t_infomask ^ (*hb).t_infomask) & pg_sys::HEAP_HASNULL as u16 != 0
    {
        return false;
    }
    let start = std::mem::offset_of!(pg_sys::HeapTupleHeaderData, t_bits);
    let len = (*a).t_len as usize - start;
    let pa = std::slice::from_raw_parts((ha as *const u8).add(start), len);
    let pb = std::slice::from_raw_parts((hb as *const u8).add(start), len);
    pa == pb
}

/// A `name` datum, palloc'd in the current memory context.
///
/// # Safety
/// `s` must be a valid C string.
pub(crate) unsafe fn name_datum(s: *const std::ffi::c_char) -> pg_sys::Datum {
    let n = pg_sys::palloc0(pg_sys::NAMEDATALEN as usize) as *mut pg_sys::NameData;
    pg_sys::namestrcpy(n, s);
    pg_sys::Datum::from(n)
}

pub(crate) fn text_datum(s: &[u8]) -> pg_sys::Datum {
    // SAFETY: copies the bytes into a new text value.
    pg_sys::Datum::from(unsafe {
        pg_sys::cstring_to_text_with_len(s.as_ptr() as *const std::ffi::c_char, s.len() as i32)
    })
}

/// The operation's name as a text datum, made once per backend.
pub(crate) fn op_text(op: &str) -> pg_sys::Datum {
    const OPS: [&str; 4] = ["INSERT", "UPDATE", "DELETE", "TRUNCATE"];
    let texts = OP_TEXTS.with(|t| {
        *t.get_or_init(|| {
            // SAFETY: four small text values in TopMemoryContext, kept for the backend's life.
            unsafe {
                let old = pg_sys::MemoryContextSwitchTo(pg_sys::TopMemoryContext);
                let texts = OPS.map(|o| text_datum(o.as_bytes()));
                pg_sys::MemoryContextSwitchTo(old);
                texts
            }
        })
    });
    texts[OPS
        .iter()
        .position(|o| *o == op)
        .expect("a known operation")]
}
