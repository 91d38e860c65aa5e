"""Annotation stage: the 45 quality signals, MinHash signatures, and the signal artifacts they need."""
