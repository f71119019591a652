-- Every object of the extension tenantguard, described from the catalogs with names instead of
-- OIDs, one line each, sorted: an upgraded installation and a fresh one must print the same.
\pset format unaligned
\pset tuples_only on
WITH ext AS (SELECT oid FROM pg_extension WHERE extname = 'tenantguard'),
member AS (
    SELECT d.classid, d.objid FROM pg_depend d, ext
     WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext.oid AND d.deptype = 'e'
),
lines AS (
    -- functions: their whole definition, owner-independent, with ACL and comment
    SELECT format('function %s | %s | acl %s | %s', p.oid::regprocedure, pg_get_functiondef(p.oid),
                  (SELECT array_agg(a ORDER BY a) FROM unnest(p.proacl::text[]) a),
                  obj_description(p.oid, 'pg_proc')) AS line
      FROM member m JOIN pg_proc p ON m.classid = 'pg_proc'::regclass AND p.oid = m.objid
    UNION ALL
    -- relations: kind, options, RLS flags, ACL, comment
    SELECT format('relation %s | kind %s | options %s | rls %s %s | acl %s | %s', c.oid::regclass,
                  c.relkind, c.reloptions, c.relrowsecurity, c.relforcerowsecurity,
                  (SELECT array_agg(a ORDER BY a) FROM unnest(c.relacl::text[]) a),
                  obj_description(c.oid, 'pg_class'))
      FROM member m JOIN pg_class c ON m.classid = 'pg_class'::regclass AND c.oid = m.objid
    UNION ALL
    -- columns, in order, with types, defaults, identity, collation
    SELECT format('column %s.%s | %s | %s | not null %s | default %s | identity %s | generated %s | collation %s | acl %s',
                  c.oid::regclass, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod),
                  a.attnotnull, pg_get_expr(ad.adbin, ad.adrelid), a.attidentity, a.attgenerated,
                  CASE WHEN a.attcollation <> 0 THEN a.attcollation::regcollation::text END,
                  a.attacl)
      FROM member m JOIN pg_class c ON m.classid = 'pg_class'::regclass AND c.oid = m.objid
      JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
      LEFT JOIN pg_attrdef ad ON ad.adrelid = c.oid AND ad.adnum = a.attnum
    UNION ALL
    SELECT format('index %s on %s | %s', i.indexrelid::regclass, i.indrelid::regclass,
                  pg_get_indexdef(i.indexrelid))
      FROM member m JOIN pg_index i ON m.classid = 'pg_class'::regclass AND i.indrelid = m.objid
    UNION ALL
    SELECT format('constraint %s on %s | %s', co.conname, co.conrelid::regclass, pg_get_constraintdef(co.oid))
      FROM member m JOIN pg_constraint co ON m.classid = 'pg_class'::regclass AND co.conrelid = m.objid
    UNION ALL
    SELECT format('view %s | %s', c.oid::regclass, pg_get_viewdef(c.oid))
      FROM member m JOIN pg_class c ON m.classid = 'pg_class'::regclass AND c.oid = m.objid
     WHERE c.relkind IN ('v', 'm')
    UNION ALL
    SELECT format('policy %s on %s | %s | %s | %s | %s | %s', p.polname, p.polrelid::regclass, p.polcmd,
                  p.polpermissive, p.polroles::regrole[], pg_get_expr(p.polqual, p.polrelid),
                  pg_get_expr(p.polwithcheck, p.polrelid))
      FROM member m JOIN pg_policy p ON m.classid = 'pg_class'::regclass AND p.polrelid = m.objid
    UNION ALL
    SELECT format('sequence %s | %s %s %s %s %s %s', s.seqrelid::regclass, format_type(s.seqtypid, NULL),
                  s.seqstart, s.seqincrement, s.seqmax, s.seqmin, s.seqcache)
      FROM member m JOIN pg_sequence s ON m.classid = 'pg_class'::regclass AND s.seqrelid = m.objid
    UNION ALL
    SELECT format('event trigger %s | %s | %s | %s | %s', e.evtname, e.evtevent, e.evtfoid::regprocedure,
                  e.evttags, e.evtenabled)
      FROM member m JOIN pg_event_trigger e ON m.classid = 'pg_event_trigger'::regclass AND e.oid = m.objid
    UNION ALL
    SELECT format('schema %s | acl %s', n.nspname, (SELECT array_agg(a ORDER BY a) FROM unnest(n.nspacl::text[]) a))
      FROM pg_namespace n WHERE n.nspname = 'tenantguard'
    UNION ALL
    SELECT format('member %s', pg_describe_object(m.classid, m.objid, 0)) FROM member m
    UNION ALL
    SELECT format('config %s | %s', cfg::regclass, cond)
      FROM pg_extension e, unnest(e.extconfig, e.extcondition) AS x(cfg, cond)
     WHERE e.extname = 'tenantguard'
)
SELECT line FROM lines ORDER BY line;
