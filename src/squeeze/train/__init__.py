"""Training recipes for the zoo's own checkpoints."""
