-- Per-group summary of per-sample scores.  View: summary (store.sample_summary: one row per
-- sample, its group_id the group of its latest presentation; booleans as 0/1).  Each score
-- is the mean over the group's samples of their per-sample value (NULL where the run has
-- none of it); forgetting_events also as a total; flipped and never_learned count samples.
-- Samples without a group are left out.
SELECT
    group_id,
    count(*) AS samples,
    sum(presentations) AS presentations,
    count(*) FILTER (WHERE label_noisy > 0) AS flipped,
    count(*) FILTER (WHERE never_learned > 0) AS never_learned,
    avg(loss) AS loss,
    avg(el2n) AS el2n,
    avg(grand) AS grand,
    avg(grand_last) AS grand_last,
    avg(forgetting_events) AS forgetting_events,
    sum(forgetting_events) AS forgetting_events_total,
    avg(first_learned_epoch) AS first_learned_epoch,
    avg(confidence) AS confidence,
    avg(variability) AS variability,
    avg(correctness) AS correctness,
    avg(aum) AS aum,
    avg(final_correct) AS final_accuracy,
    avg(token_accuracy) AS token_accuracy,
    avg(token_count) AS token_count
FROM summary
WHERE group_id IS NOT NULL
GROUP BY group_id
ORDER BY group_id
