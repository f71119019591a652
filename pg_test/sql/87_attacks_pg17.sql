-- min_version: 17
-- MERGE ... RETURNING (PostgreSQL 17): what RETURNING shows is only the tenant's own rows, and an
-- attempt on another tenant's key returns nothing of it.
\set SHOW_CONTEXT never
\c - tg_app
SET search_path = atk;
SET app.current_tenant_id = 'acme';
MERGE INTO accounts a USING (VALUES ('globex', 1), ('globex', 3), ('acme', 1)) v(t, id)
   ON a.tenant_id = v.t AND a.id = v.id
  WHEN MATCHED THEN UPDATE SET name = a.name
  RETURNING merge_action(), a.tenant_id, a.id, a.secret;
MERGE INTO accounts a USING (VALUES ('globex', 60)) v(t, id) ON a.tenant_id = v.t AND a.id = v.id
  WHEN NOT MATCHED THEN INSERT VALUES (v.t, v.id, 'via merge', 'x')
  RETURNING merge_action(), a.tenant_id, a.id;
\echo sqlstate :LAST_ERROR_SQLSTATE
\c - postgres
SELECT * FROM atk.globex_state;
