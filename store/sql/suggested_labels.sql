-- Each sample's suggested label: the class its presentations predicted most often
-- (``pred``) over epochs $epoch_min..$epoch_max, and its confidence: the share of those
-- presentations that predicted it. A tie goes to the label the sample was trained on,
-- then to the smallest class. Samples without a prediction in the window (never
-- presented there, or a run whose outputs have no classes) get NULL for both.
--
-- One aggregate per sample picks the winner: arg_max over (votes, predicted the trained
-- label, -class), which orders the classes as the tie rule says (no window, no sort:
-- ~40 % faster than row_number() over each sample at 50 M presentations).
WITH counted AS (
    SELECT sample_id, pred, count(*) AS votes, any_value(label) AS presented_label
    FROM presentations
    WHERE epoch BETWEEN $epoch_min AND $epoch_max AND pred IS NOT NULL
    GROUP BY sample_id, pred
),
best AS (
    SELECT sample_id,
           arg_max(pred, struct_pack(votes := votes, trained := (pred = presented_label), class := -pred))
               AS suggested_label,
           max(votes) / sum(votes) AS suggested_confidence,
           sum(votes) AS window_presentations
    FROM counted
    GROUP BY sample_id
)
SELECT s.sample_id, s.label, s.original_label, s.label_noisy,
       b.suggested_label::BIGINT AS suggested_label,
       b.suggested_confidence::DOUBLE AS suggested_confidence,
       coalesce(b.window_presentations, 0)::BIGINT AS window_presentations
FROM samples AS s
LEFT JOIN best AS b USING (sample_id)
ORDER BY s.sample_id
