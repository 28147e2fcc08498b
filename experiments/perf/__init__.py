"""Performance experiments: net variants and training-loop designs measured with
the project's benchmark (`reproduce.bench`) before they are proposed for the
product. The log of what was measured and decided: perf_log.md."""
