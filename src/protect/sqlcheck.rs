//! Parse-level checks on SQL text, with PostgreSQL's own grammar, before any of it runs.
//!
//! tenantguard runs generated DDL through SPI, which executes every statement in a string. User
//! text (a `shared_read` predicate, an extra policy's expressions) is placed inside that DDL, so it
//! must be exactly one expression, and each generated statement exactly one statement.

use crate::errors::Error;
use pgrx::prelude::*;
use std::ffi::CString;

/// The statements `sql` parses into. Syntax errors are raised as PostgreSQL's own (42601).
fn raw_statements(sql: &str) -> Vec<*mut pg_sys::Node> {
    let Ok(text) = CString::new(sql) else {
        Error::NulInSql.raise();
    };
    // SAFETY: raw_parser reads a NUL-terminated string and returns a List of RawStmt (or NIL)
    // allocated in the current memory context, which outlives this call.
    unsafe {
        let list = pg_sys::raw_parser(text.as_ptr(), pg_sys::RawParseMode::RAW_PARSE_DEFAULT);
        if list.is_null() {
            return Vec::new();
        }
        (0..(*list).length as usize)
            .map(|i| {
                let raw = (*(*list).elements.add(i)).ptr_value as *mut pg_sys::RawStmt;
                (*raw).stmt
            })
            .collect()
    }
}

pub fn statement_count(sql: &str) -> usize {
    raw_statements(sql).len()
}

/// True when `expr` is exactly one SQL expression: `SELECT (expr)` parses to one plain SELECT with
/// a single target and no other clause, so nothing in `expr` can close the parenthesis and go on.
pub fn is_single_expression(expr: &str) -> bool {
    let stmts = raw_statements(&format!("SELECT ({expr}\n)"));
    let [node] = stmts.as_slice() else {
        return false;
    };
    // SAFETY: `node` comes from the parser; it is checked to be a SelectStmt before the cast.
    unsafe {
        if node.is_null() || (**node).type_ != pg_sys::NodeTag::T_SelectStmt {
            return false;
        }
        let s = *node as *mut pg_sys::SelectStmt;
        let s = &*s;
        s.op == pg_sys::SetOperation::SETOP_NONE
            && !s.targetList.is_null()
            && (*s.targetList).length == 1
            && s.distinctClause.is_null()
            && s.intoClause.is_null()
            && s.fromClause.is_null()
            && s.whereClause.is_null()
            && s.groupClause.is_null()
            && s.havingClause.is_null()
            && s.windowClause.is_null()
            && s.valuesLists.is_null()
            && s.sortClause.is_null()
            && s.limitOffset.is_null()
            && s.limitCount.is_null()
            && s.lockingClause.is_null()
            && s.withClause.is_null()
    }
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use super::{is_single_expression, statement_count};
    use pgrx::prelude::*;

    #[pg_test]
    fn single_expressions() {
        for ok in [
            "true",
            "tenant_id IN (SELECT id FROM tenants WHERE status = 'active')",
            "a = 1 OR (b = 2)",
            "x = ';'",
            "EXISTS (SELECT 1 FROM t WHERE t.a = b) -- trailing comment",
        ] {
            assert!(is_single_expression(ok), "{ok}");
        }
        // Text that parses, but not as one expression.
        for bad in [
            "true) FROM t WHERE (true",
            "true); DROP TABLE t; SELECT (true",
            "true) UNION SELECT (1",
            "true) ORDER BY (1",
        ] {
            assert!(!is_single_expression(bad), "{bad}");
        }
    }

    #[pg_test(error = "syntax error at or near \"WITH\"")]
    fn syntax_errors_are_postgres_errors() {
        is_single_expression("true) WITH CHECK (true");
    }

    #[pg_test]
    fn counts_statements() {
        assert_eq!(statement_count("SELECT 1"), 1);
        assert_eq!(statement_count("SELECT 1; SELECT 2"), 2);
        assert_eq!(
            statement_count("CREATE POLICY p ON t USING ((true)); DROP TABLE x"),
            2
        );
    }
}
