-- The class each sample was predicted as at its last presentation (NULL where the run
-- recorded no prediction, e.g. a per-sample loss).  View: presentations.
SELECT sample_id, arg_max(pred, step) AS predicted_label
FROM presentations
GROUP BY sample_id
ORDER BY sample_id
