"""Stage 2: models attempt tasks (the grid runner, agents, providers, the embedded model, imports)."""
