"""Stage: predict."""
