-- Each sample's suggested label: the class its presentations predicted most often
-- (``pred``) over epochs $epoch_min..$epoch_max, and its confidence: the share of those
-- presentations that predicted it. A tie goes to the label the sample was trained on,
-- then to the smallest class. Samples without a prediction in the window (never
-- presented there, or a run whose outputs have no classes) get NULL for both.
WITH counted AS (
    SELECT sample_id, pred, count(*) AS votes,
           sum(count(*)) OVER (PARTITION BY sample_id) AS presented,
           any_value(label) AS presented_label
    FROM presentations
    WHERE epoch BETWEEN $epoch_min AND $epoch_max AND pred IS NOT NULL
    GROUP BY sample_id, pred
),
best AS (
    SELECT sample_id, pred AS suggested_label, votes / presented AS suggested_confidence,
           presented AS window_presentations
    FROM counted
    QUALIFY row_number() OVER (
        PARTITION BY sample_id ORDER BY votes DESC, (pred = presented_label) DESC, pred
    ) = 1
)
SELECT s.sample_id, s.label, s.original_label, s.label_noisy,
       b.suggested_label::BIGINT AS suggested_label,
       b.suggested_confidence::DOUBLE AS suggested_confidence,
       coalesce(b.window_presentations, 0)::BIGINT AS window_presentations
FROM samples AS s
LEFT JOIN best AS b USING (sample_id)
ORDER BY s.sample_id
