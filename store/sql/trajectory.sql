-- One sample's presentations over training.  Parameter: $sample_id.
SELECT epoch, step, loss, p_true, el2n, correct, pred, margin, weight, grand_last
FROM presentations
WHERE sample_id = $sample_id
ORDER BY epoch, step
