-- One sample's presentations over training.  Parameter: $sample_id.
-- token_count and token_accuracy are null outside sequence runs.
SELECT epoch, step, loss, p_true, el2n, correct, pred, margin, weight, grand_last,
       token_count, token_accuracy
FROM presentations
WHERE sample_id = $sample_id
ORDER BY epoch, step
