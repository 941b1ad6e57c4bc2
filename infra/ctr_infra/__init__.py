"""ctr_infra: the operator side of ctr-pipeline: the `ctr` CLI, the embedded local
cloud (LocalStack host mode + process Lambda executor + MLflow server), deploy of
template.yaml, benchmarks and package-size checks. Not shipped to Lambda."""
