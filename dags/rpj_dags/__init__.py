"""rpj's DAG builders (rpv2.py at the folder root builds every DAG from the registry with them)."""
