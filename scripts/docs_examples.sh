#!/usr/bin/env bash
# Writes the SQL examples of docs/*.md as pg_regress test files into DIR/sql, so the test suite
# runs them and compares their output with pg_test/expected/docs_<page>.out: a changed result
# fails the suite, and the docs cannot drift from the code.
#
# Every ```sql block runs, in order, in a database of its own per page, as a superuser, except a
# block whose first line is "-- not run" (signatures and fragments). Roles an example creates are
# dropped at the end.
#
# usage: bash scripts/docs_examples.sh DIR   (prints the test names it wrote)
set -euo pipefail
cd "$(dirname "$0")/.."
dir=$1
mkdir -p "$dir/sql"
for page in docs/*.md; do
  name=docs_$(basename "$page" .md | tr '-' '_')
  blocks=$(awk '
    /^```sql[ \t]*$/ { inb = 1; first = 1; buf = ""; next }
    inb && /^```/ { if (!skip) printf "%s", buf; inb = 0; skip = 0; next }
    inb { if (first && $0 ~ /^-- not run/) skip = 1; first = 0; buf = buf $0 "\n" }
  ' "$page")
  [ -n "$blocks" ] || continue
  {
    echo "-- The SQL examples of $page, in order (written by scripts/docs_examples.sh)."
    echo "\\set SHOW_CONTEXT never"
    echo "SELECT string_agg(rolname, ',') AS roles_before FROM pg_roles \\gset"
    echo "CREATE DATABASE $name;"
    echo "\\c $name"
    echo "CREATE EXTENSION tenantguard;"
    printf '%s\n' "$blocks"
    echo "\\c regression"
    echo "DROP DATABASE $name;"
    echo "SELECT format('DROP ROLE %I', rolname) FROM pg_roles"
    echo " WHERE rolname <> ALL (string_to_array(:'roles_before', ',')) \\gexec"
  } > "$dir/sql/$name.sql"
  echo "$name"
done
