"""Study tools: seed grids, experiment reports, recipe measurements, the adaptation study and benchmarks.

None of this is needed to run the pipeline or predict: these tools run the pipeline many times
(in sandbox copies, through emopipe_ci.harness) and turn the runs into reports/ and docs/.
"""
