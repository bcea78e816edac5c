"""Stage 4: tidy frames, metrics as pure functions, charts and the report."""
