"""Dedup: exact duplicates and MinHash LSH clusters."""
