"""`ctr bench` and the benchmarks behind it: what this system costs, measured side by
side with a baseline for every figure, so a number says what it should be read against.

`runner` runs the sections in order (`plan` says how big), each section is a module
(`sizes`, `train`, `data`, `pipeline`, `serve`), `cloud` is the local cloud the
pipeline and serving sections use, `report` holds the timing, figure and output code
they share. `train`, `data`, `serve` and `encodings` also run alone
(`python -m ctr_infra.bench.<module>`, `ctr model bench`, `ctr data bench`).
"""
