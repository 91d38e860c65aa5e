"""Quality-signal artifacts: loading (load), building and installing (build)."""
