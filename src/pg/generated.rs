//! Virtual generated columns (PostgreSQL 18): they are not stored, so a trigger's tuple holds
//! them as NULL, while `to_jsonb()` of the row computes them. The audit trigger computes them the
//! same way: each generation expression is prepared once per relation and evaluated per row
//! against the row. Before 18 there are none, and this is empty.

use pgrx::pg_sys;

/// The prepared generation expressions of one relation's virtual columns.
pub struct Virtual {
    #[cfg(feature = "pg18")]
    columns: Vec<(usize, *mut pg_sys::ExprState)>,
    #[cfg(feature = "pg18")]
    slot: *mut pg_sys::TupleTableSlot,
    #[cfg(feature = "pg18")]
    econtext: *mut pg_sys::ExprContext,
}

impl Virtual {
    /// Prepares the relation's virtual generated columns, allocating in `cxt` (which must live as
    /// long as the result).
    ///
    /// # Safety
    /// `rel` must be an open relation.
    #[cfg(feature = "pg18")]
    pub unsafe fn prepare(rel: pg_sys::Relation, cxt: pg_sys::MemoryContext) -> Virtual {
        let desc = (*rel).rd_att;
        let mut columns = Vec::new();
        let old = pg_sys::MemoryContextSwitchTo(cxt);
        for i in 0..(*desc).natts as usize {
            let att = &*crate::pg::nodes::tuple_desc_attr(desc, i);
            if !att.attisdropped && att.attgenerated as u8 == pg_sys::ATTRIBUTE_GENERATED_VIRTUAL {
                let expr = pg_sys::build_generation_expression(rel, i as i32 + 1);
                columns.push((
                    i,
                    pg_sys::ExecInitExpr(expr as *mut pg_sys::Expr, std::ptr::null_mut()),
                ));
            }
        }
        let (slot, econtext) = if columns.is_empty() {
            (std::ptr::null_mut(), std::ptr::null_mut())
        } else {
            // A copy of the descriptor: the relcache's own is reference-counted under the
            // statement's resource owner, and this slot outlives the statement.
            let copy = pg_sys::CreateTupleDescCopy(desc);
            (
                pg_sys::MakeSingleTupleTableSlot(copy, &pg_sys::TTSOpsHeapTuple),
                pg_sys::CreateStandaloneExprContext(),
            )
        };
        pg_sys::MemoryContextSwitchTo(old);
        Virtual {
            columns,
            slot,
            econtext,
        }
    }

    #[cfg(not(feature = "pg18"))]
    pub unsafe fn prepare(_rel: pg_sys::Relation, _cxt: pg_sys::MemoryContext) -> Virtual {
        Virtual {}
    }

    /// Fills the virtual columns of a deformed row.
    ///
    /// # Safety
    /// `tuple` must be a row of the relation prepared for, `values`/`nulls` its deformed form.
    #[cfg(feature = "pg18")]
    pub unsafe fn compute(
        &self,
        tuple: pg_sys::HeapTuple,
        values: &mut [pg_sys::Datum],
        nulls: &mut [bool],
    ) {
        if self.columns.is_empty() {
            return;
        }
        pg_sys::ExecStoreHeapTuple(tuple, self.slot, false);
        (*self.econtext).ecxt_scantuple = self.slot;
        for (i, state) in &self.columns {
            let mut isnull = false;
            // The expression's result lives in the current (per-row) memory context.
            values[*i] = pg_sys::ExecEvalExpr(*state, self.econtext, &mut isnull);
            nulls[*i] = isnull;
        }
        pg_sys::ExecClearTuple(self.slot);
    }

    #[cfg(not(feature = "pg18"))]
    pub unsafe fn compute(
        &self,
        _tuple: pg_sys::HeapTuple,
        _values: &mut [pg_sys::Datum],
        _nulls: &mut [bool],
    ) {
    }
}
