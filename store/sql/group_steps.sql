-- Mean loss and accuracy of each group's presentations per bucket of steps.
-- Parameters: $low, the first step with a group; $span, the number of steps from it to the
-- last one (store/sql/group_step_bounds.sql); $buckets (B <= span), the number of equal
-- buckets they are cut into: step s is in bucket floor((s - low) * B / span), so B = span is
-- one bucket per step (integer arithmetic: store.groups turns a bucket into its exact first
-- and last step). Presentations without a group are left out.
SELECT
    group_id,
    ((step - $low) * $buckets) // $span AS bucket,
    min(epoch) AS epoch,
    avg(loss) AS loss,
    avg(correct::DOUBLE) AS accuracy,
    count(*) AS presentations
FROM presentations
WHERE group_id IS NOT NULL
GROUP BY group_id, bucket
ORDER BY group_id, bucket
