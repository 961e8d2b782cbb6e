-- Every presentation of a run, in training order (the `trainmap dynamics` export).
-- token_count and token_accuracy are null outside sequence runs.
SELECT epoch, step, sample_id, label, loss, p_true, el2n, correct, pred, margin, weight, grand_last,
       token_count, token_accuracy
FROM presentations
ORDER BY epoch, step, sample_id
