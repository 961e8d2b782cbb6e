-- Every presentation of a run, in training order (the `trainmap dynamics` export).
SELECT epoch, step, sample_id, label, loss, p_true, el2n, correct, pred, margin, weight, grand_last
FROM presentations
ORDER BY epoch, step, sample_id
