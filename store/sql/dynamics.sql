-- Every presentation of a run, in training order (the `trainmap dynamics` export).
-- token_count and token_accuracy are null outside sequence runs; group_id where the batches
-- gave no group (names: the run's groups table).
SELECT epoch, step, sample_id, label, loss, p_true, el2n, correct, pred, margin, weight, grand_last,
       token_count, token_accuracy, group_id
FROM presentations
ORDER BY epoch, step, sample_id
