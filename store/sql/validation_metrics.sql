-- Validation loss and accuracy per epoch and validation dataloader, combined exactly over
-- ranks; rows written before several loaders were recorded (dataloader_idx NULL) are loader 0.
SELECT
    epoch,
    coalesce(dataloader_idx, 0)::SMALLINT AS dataloader_idx,
    sum(loss_sum) / nullif(sum(num_samples), 0) AS val_loss,
    sum(correct_sum) / nullif(sum(num_samples), 0) AS val_accuracy,
    sum(num_samples)::BIGINT AS num_samples
FROM epochs
WHERE split = 'val'
GROUP BY epoch, coalesce(dataloader_idx, 0)
ORDER BY epoch, dataloader_idx
