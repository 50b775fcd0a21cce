"""Stage: split."""
