"""The fire() benchmark (``run.py``), the before/after comparison
(``compare.py``), the database backend's figures and the soak test.

A regular package, so ``benchmarks.*`` always comes from this checkout even
when ``TRIGGERS_BENCH_TREE`` puts another checkout first on ``sys.path``.
"""
