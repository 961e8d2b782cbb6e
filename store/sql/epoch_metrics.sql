-- Train / validation loss and accuracy per epoch, combined exactly over ranks.
-- Parameter: $dataloader_idx, the validation dataloader shown as "val" (the run's monitored
-- one); rows written before several loaders were recorded (dataloader_idx NULL) are loader 0.
SELECT
    epoch,
    sum(loss_sum) FILTER (WHERE split = 'train')
        / nullif(sum(num_samples) FILTER (WHERE split = 'train'), 0) AS train_loss,
    sum(correct_sum) FILTER (WHERE split = 'train')
        / nullif(sum(num_samples) FILTER (WHERE split = 'train'), 0) AS train_accuracy,
    sum(loss_sum) FILTER (WHERE split = 'val' AND coalesce(dataloader_idx, 0) = $dataloader_idx)
        / nullif(sum(num_samples) FILTER (
            WHERE split = 'val' AND coalesce(dataloader_idx, 0) = $dataloader_idx), 0) AS val_loss,
    sum(correct_sum) FILTER (WHERE split = 'val' AND coalesce(dataloader_idx, 0) = $dataloader_idx)
        / nullif(sum(num_samples) FILTER (
            WHERE split = 'val' AND coalesce(dataloader_idx, 0) = $dataloader_idx), 0) AS val_accuracy,
    max(time) AS time
FROM epochs
GROUP BY epoch
ORDER BY epoch
