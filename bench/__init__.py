"""veo_nb benchmarks: ``make bench`` (``python -m bench``)."""
