"""Watching the served model (issue 14): fresh-data quality, feature drift, serving skew,
alarms and auto-rollback.

`reports` holds the typed contract every part of monitoring shares: the monitor step
writes these models under `monitoring/` (keys in `ctr.layout`), `GET /monitoring`, `ctr
monitor` and the page read them. `ctr.predlog` is the served-prediction record that the
predict function logs and the skew check reads. The rest: `baseline` (what training
saves), `drift` (the measure), `rollback` (the rule), `monitor` (the step), `skew`,
`summary` and `cloudwatch` (metrics sink, alarm reader).
"""
