-- The name of each group id a run's batches gave (store.schema.GROUPS). Every rank, and a
-- resumed run, may write the same group again: distinct.
SELECT DISTINCT group_id, group_name FROM groups ORDER BY group_id, group_name
