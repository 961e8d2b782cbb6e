-- The key each sample id stands for, in runs whose dataset identifies samples by strings.
-- Ranks and resumed runs may write a key twice: distinct.
SELECT DISTINCT sample_id, sample_key FROM sample_keys ORDER BY sample_id
