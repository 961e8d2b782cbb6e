-- Per-sample summary of one run (DESIGN.md "Definitions").
-- Views: presentations, samples, grand.  Parameters: $epoch_min, $epoch_max bound the
-- epochs that loss, EL2N, GraNd and the token means are averaged over (Data Diet scores
-- "at chosen epochs"); forgetting, cartography and AUM always use every presentation.
--
-- group_id is the group (presentations.group_id) of the sample's latest presentation that
-- carried one (a dataset gives each sample one group); NULL when its batches gave none.
--
-- Every output kind (run.json "output_kind") is summarised by this one query:
--   classification  every column but token_accuracy / token_count;
--   sequence        one row per sequence: loss, p_true, el2n, margin are token means and
--                   `correct` is the recorder's per-sequence rule (token accuracy >= the
--                   run's sequence_correct_threshold), so forgetting and cartography read
--                   it as they read a class prediction; token_accuracy and token_count are
--                   the means over presentations;
--   loss            only loss (and GraNd where scheduled): every score that needs
--                   `correct`, p_true or the margin is NULL, never 0 or false.
WITH ordered AS (
    SELECT
        sample_id, epoch, step, loss, p_true, el2n, correct, margin, grand_last,
        token_accuracy, token_count, group_id,
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
        -- NULL when correctness was not recorded (a per-sample-loss run), not 0.
        CASE WHEN count(correct) > 0 THEN
            count(*) FILTER (WHERE previous_correct AND NOT correct)
        END AS forgetting_events,
        -- NULL when never correct: such a sample is flagged, never given a sentinel count.
        min(epoch) FILTER (WHERE correct) AS first_learned_epoch,
        -- NULL (neither learned nor never learned) when correctness was not recorded.
        NOT bool_or(correct) AS never_learned,
        -- Swayamdipta et al. 2020 dataset cartography, over epochs.
        avg(p_true) AS confidence,
        stddev_pop(p_true) AS variability,
        avg(correct::DOUBLE) AS correctness,
        -- Pleiss et al. 2020: mean of (logit_y - max other logit).
        avg(margin) AS aum,
        arg_max(correct, step) AS final_correct,
        -- Sequences: mean token accuracy and mean number of tokens that count.
        avg(token_accuracy) FILTER (WHERE epoch BETWEEN $epoch_min AND $epoch_max) AS token_accuracy,
        avg(token_count) FILTER (WHERE epoch BETWEEN $epoch_min AND $epoch_max) AS token_count,
        arg_max(group_id, step) FILTER (WHERE group_id IS NOT NULL) AS group_id
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
    d.presentations,
    d.group_id,
    d.token_accuracy,
    d.token_count
FROM samples AS s
LEFT JOIN dynamics AS d USING (sample_id)
LEFT JOIN grand_scores AS g USING (sample_id)
ORDER BY s.sample_id
