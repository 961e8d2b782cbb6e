-- Per-sample summary of one run (DESIGN.md "Definitions").
-- Views: presentations, samples, grand.  Parameters: $epoch_min, $epoch_max bound the
-- epochs that loss, EL2N and GraNd are averaged over (Data Diet scores "at chosen
-- epochs"); forgetting, cartography and AUM always use every presentation.
WITH ordered AS (
    SELECT
        sample_id, epoch, step, loss, p_true, el2n, correct, margin, grand_last,
        lag(correct) OVER (PARTITION BY sample_id ORDER BY epoch, step) AS previous_correct
    FROM presentations
),
dynamics AS (
    SELECT
        sample_id,
        count(*) AS presentations,
        avg(loss) FILTER (WHERE epoch BETWEEN $epoch_min AND $epoch_max) AS loss,
        avg(el2n) FILTER (WHERE epoch BETWEEN $epoch_min AND $epoch_max) AS el2n,
        -- Last-layer GraNd approximation; NaN where it was not recorded.
        avg(grand_last) FILTER (
            WHERE epoch BETWEEN $epoch_min AND $epoch_max AND NOT isnan(grand_last)
        ) AS grand_last,
        -- Toneva et al. 2019: correct at presentation t, incorrect at t + 1.
        count(*) FILTER (WHERE previous_correct AND NOT correct) AS forgetting_events,
        -- NULL when never correct: such a sample is flagged, never given a sentinel count.
        min(epoch) FILTER (WHERE correct) AS first_learned_epoch,
        NOT bool_or(correct) AS never_learned,
        -- Swayamdipta et al. 2020 dataset cartography, over epochs.
        avg(p_true) AS confidence,
        stddev_pop(p_true) AS variability,
        avg(correct::DOUBLE) AS correctness,
        -- Pleiss et al. 2020: mean of (logit_y - max other logit).
        avg(margin) AS aum,
        arg_max(correct, step) AS final_correct
    FROM ordered
    GROUP BY sample_id
),
grand_scores AS (
    SELECT sample_id, avg(grand) AS grand
    FROM grand
    WHERE epoch BETWEEN $epoch_min AND $epoch_max
    GROUP BY sample_id
)
SELECT
    s.sample_id,
    s.label,
    s.original_label,
    s.label_noisy,
    d.loss,
    d.el2n,
    g.grand,
    d.grand_last,
    d.forgetting_events,
    d.first_learned_epoch,
    d.never_learned,
    d.confidence,
    d.variability,
    d.correctness,
    d.aum,
    d.final_correct,
    d.presentations
FROM samples AS s
LEFT JOIN dynamics AS d USING (sample_id)
LEFT JOIN grand_scores AS g USING (sample_id)
ORDER BY s.sample_id
