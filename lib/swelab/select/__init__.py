"""Stage 1: which tasks (dataset loading, statistics, the seeded draw, instance sets)."""
