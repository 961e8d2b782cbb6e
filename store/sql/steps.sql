-- Loss, global gradient norm and learning rate per optimisation step.
SELECT step, epoch, loss, grad_norm, lr
FROM steps
ORDER BY step
