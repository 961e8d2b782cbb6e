-- The first and last step of the presentations that carry a group (NULL when none does).
SELECT min(step) AS low, max(step) AS high FROM presentations WHERE group_id IS NOT NULL
