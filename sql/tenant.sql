-- The tenant functions the policies call (src/tenant/values.rs): C functions the executor calls
-- directly.
-- What tenantguard's policies compare the tenant column with: the named setting, NULL when it is
-- unset or empty (so it matches no row), parsed once per change of the setting rather than once
-- per query. STABLE, like current_setting(): evaluated once per scan, so an index serves it.
CREATE FUNCTION tenantguard.tenant_uuid(setting text) RETURNS uuid
LANGUAGE c STABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'tenantguard_tenant_uuid';
CREATE FUNCTION tenantguard.tenant_bigint(setting text) RETURNS bigint
LANGUAGE c STABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'tenantguard_tenant_bigint';
CREATE FUNCTION tenantguard.tenant_integer(setting text) RETURNS integer
LANGUAGE c STABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'tenantguard_tenant_integer';
CREATE FUNCTION tenantguard.tenant_smallint(setting text) RETURNS smallint
LANGUAGE c STABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'tenantguard_tenant_smallint';
CREATE FUNCTION tenantguard.tenant_text(setting text) RETURNS text
LANGUAGE c STABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'tenantguard_tenant_text';
-- The same for tables protected with tenant_list: the setting's list of tenants (comma-separated,
-- or a JSON array, or what its JSON path finds), as an array; empty when unset. The policies use
-- them as `tenant_id = ANY ((SELECT tenantguard.tenant_bigints(...)))`.
CREATE FUNCTION tenantguard.tenant_uuids(setting text) RETURNS uuid[]
LANGUAGE c STABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'tenantguard_tenant_uuids';
CREATE FUNCTION tenantguard.tenant_bigints(setting text) RETURNS bigint[]
LANGUAGE c STABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'tenantguard_tenant_bigints';
CREATE FUNCTION tenantguard.tenant_integers(setting text) RETURNS integer[]
LANGUAGE c STABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'tenantguard_tenant_integers';
CREATE FUNCTION tenantguard.tenant_smallints(setting text) RETURNS smallint[]
LANGUAGE c STABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'tenantguard_tenant_smallints';
CREATE FUNCTION tenantguard.tenant_texts(setting text) RETURNS text[]
LANGUAGE c STABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'tenantguard_tenant_texts';
-- The statement trigger protect(..., hierarchy => ...) attaches to the tenants table: a change
-- there makes every backend compute the tenants' subtrees again (src/tenant/subtree.rs).
CREATE FUNCTION tenantguard._tenants_changed() RETURNS trigger
LANGUAGE c AS 'MODULE_PATHNAME', 'tenantguard_registry_changed';
-- The tenant (or list) and its descendants in a hierarchy's tenants table, for tables protected
-- with hierarchy (src/tenant/subtree.rs).
CREATE FUNCTION tenantguard.tenant_subtree_uuid(spec text, tenants oid, key text, parent text, list boolean)
RETURNS uuid[] LANGUAGE c STABLE STRICT PARALLEL RESTRICTED AS 'MODULE_PATHNAME', 'tenantguard_subtree_uuid';
CREATE FUNCTION tenantguard.tenant_subtree_bigint(spec text, tenants oid, key text, parent text, list boolean)
RETURNS bigint[] LANGUAGE c STABLE STRICT PARALLEL RESTRICTED AS 'MODULE_PATHNAME', 'tenantguard_subtree_bigint';
CREATE FUNCTION tenantguard.tenant_subtree_integer(spec text, tenants oid, key text, parent text, list boolean)
RETURNS integer[] LANGUAGE c STABLE STRICT PARALLEL RESTRICTED AS 'MODULE_PATHNAME', 'tenantguard_subtree_integer';
CREATE FUNCTION tenantguard.tenant_subtree_smallint(spec text, tenants oid, key text, parent text, list boolean)
RETURNS smallint[] LANGUAGE c STABLE STRICT PARALLEL RESTRICTED AS 'MODULE_PATHNAME', 'tenantguard_subtree_smallint';
CREATE FUNCTION tenantguard.tenant_subtree_text(spec text, tenants oid, key text, parent text, list boolean)
RETURNS text[] LANGUAGE c STABLE STRICT PARALLEL RESTRICTED AS 'MODULE_PATHNAME', 'tenantguard_subtree_text';
