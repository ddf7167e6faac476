"""worksync_sa's benchmark suite: ``python -m benchmarks [--db URL] [--quick]``."""
