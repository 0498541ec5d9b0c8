"""Load benchmarks for leitstand (`make bench`); not part of the test suite."""
