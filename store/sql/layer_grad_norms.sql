-- Gradient norm of each layer per optimisation step.
SELECT step, layer, grad_norm
FROM layer_grad_norms
ORDER BY step, layer
