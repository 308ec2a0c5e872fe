"""CI tools and the harness they share with the studies and the tests.

harness: a sandbox copy of the repository, param overrides (one merge rule), repro, a subprocess
runner. gate: the metric gate. deps: dvc.yaml's code dependencies, generated from the import graph.
"""
