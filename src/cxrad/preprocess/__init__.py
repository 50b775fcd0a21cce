"""Stage: preprocess."""
