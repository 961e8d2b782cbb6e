-- The first and last epoch with presentations (NULL while the run has none).  View: presentations.
SELECT min(epoch) AS epoch_min, max(epoch) AS epoch_max FROM presentations
