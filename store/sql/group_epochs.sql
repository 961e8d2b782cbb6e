-- Per group and epoch: mean loss, accuracy and token accuracy of the group's presentations
-- (means over presentations; NULL where the run records no correctness or no tokens), and
-- how many presentations that was (distinct samples are not counted: on a long run that
-- costs more than the rest of the query). Presentations without a group are left out.
SELECT
    group_id,
    epoch,
    avg(loss) AS loss,
    avg(correct::DOUBLE) AS accuracy,
    avg(token_accuracy) AS token_accuracy,
    count(*) AS presentations
FROM presentations
WHERE group_id IS NOT NULL
GROUP BY group_id, epoch
ORDER BY group_id, epoch
