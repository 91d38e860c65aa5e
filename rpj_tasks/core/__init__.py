"""Shared core of every stage: config, errors, storage, layout, the commit protocol, stats, ids, plan, worker processes."""
