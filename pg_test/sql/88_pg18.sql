-- min_version: 18
-- PostgreSQL 18: OLD and NEW in RETURNING show nothing of another tenant; a virtual generated
-- column is audited as to_jsonb() shows it (computed), and changes with its inputs.
\set SHOW_CONTEXT never
\c - tg_app
SET search_path = atk;
SET app.current_tenant_id = 'acme';
UPDATE accounts SET name = name RETURNING old.tenant_id, old.id, new.secret;
UPDATE accounts SET tenant_id = 'globex' WHERE id = 1 RETURNING old.tenant_id, new.tenant_id;
\echo sqlstate :LAST_ERROR_SQLSTATE
DELETE FROM accounts WHERE tenant_id = 'globex' RETURNING old.*;
\c - postgres
SELECT * FROM atk.globex_state;
-- Virtual generated columns in the audit trail
\c - tg_owner
CREATE TABLE public.priced (id int PRIMARY KEY, tenant_id text NOT NULL, qty int, price numeric,
                            total numeric GENERATED ALWAYS AS (qty * price) VIRTUAL);
SELECT tenantguard.protect('public.priced') IS NOT NULL AS protected;
GRANT SELECT, INSERT, UPDATE ON public.priced TO tg_app;
\c - tg_app
SET app.current_tenant_id = 'acme';
INSERT INTO public.priced (id, tenant_id, qty, price) VALUES (1, 'acme', 2, 10);
UPDATE public.priced SET qty = 3 WHERE id = 1;
SELECT op, old_values, new_values, changed_columns,
       new_values = (SELECT to_jsonb(p) FROM public.priced p WHERE p.id = 1) AS same_as_to_jsonb
  FROM tenantguard.audit_log WHERE table_name = 'priced' ORDER BY id;
