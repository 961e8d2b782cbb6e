-- Train / validation loss and accuracy per epoch, combined exactly over ranks.
SELECT
    epoch,
    sum(loss_sum) FILTER (WHERE split = 'train')
        / nullif(sum(num_samples) FILTER (WHERE split = 'train'), 0) AS train_loss,
    sum(correct_sum) FILTER (WHERE split = 'train')
        / nullif(sum(num_samples) FILTER (WHERE split = 'train'), 0) AS train_accuracy,
    sum(loss_sum) FILTER (WHERE split = 'val')
        / nullif(sum(num_samples) FILTER (WHERE split = 'val'), 0) AS val_loss,
    sum(correct_sum) FILTER (WHERE split = 'val')
        / nullif(sum(num_samples) FILTER (WHERE split = 'val'), 0) AS val_accuracy,
    max(time) AS time
FROM epochs
GROUP BY epoch
ORDER BY epoch
