# Shared by bench/audit_bench.sh and bench/audit_instructions.sh; the caller defines psql_su.

# make_table VARIANT: a fresh table "t_VARIANT" with the variant's trigger.
make_table() {
  local v=$1 t="t_$1"
  psql_su -c "SET client_min_messages = warning; DROP TABLE IF EXISTS $t;
    CREATE TABLE $t (id bigint PRIMARY KEY, tenant_id uuid NOT NULL, name text, price numeric,
                     qty int, updated_at timestamptz NOT NULL DEFAULT now())"
  case $v in
    a_none | u_none) ;;
    a_tg) psql_su -c "SELECT tenantguard.protect('$t', updated_at => false)" >/dev/null ;;
    a_seed) psql_su -c "CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON $t FOR EACH ROW EXECUTE FUNCTION seed_audit()" ;;
    a_jsonb) psql_su -c "CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON $t FOR EACH ROW EXECUTE FUNCTION jsonb_audit()" ;;
    u_tg) psql_su -c "SELECT tenantguard.protect('$t', audit => false, updated_at => true)" >/dev/null ;;
    u_moddatetime) psql_su -c "CREATE TRIGGER upd BEFORE UPDATE ON $t FOR EACH ROW EXECUTE FUNCTION moddatetime(updated_at)" ;;
    u_plpgsql) psql_su -c "CREATE TRIGGER upd BEFORE UPDATE ON $t FOR EACH ROW EXECUTE FUNCTION plpgsql_updated_at()" ;;
  esac
}

