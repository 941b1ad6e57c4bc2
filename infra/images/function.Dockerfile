# Container image of a Lambda function too big for a zip package: train, reload and
# monitor (layers/deps-train, 555 MB unzipped) against Lambda's 250 MB limit (measured by
# `python -m ctr_infra.sizes`). predict and score are zip functions (DepsServeLayer).
#
# Built by `sam build` from the repository root (template.yaml: DockerContext ".",
# DockerBuildArgs FUNCTION/DEPS, DockerBuildTarget "function"); the root
# .dockerignore keeps the build context to what is copied here. By hand:
#   docker build -f infra/images/function.Dockerfile --target function \
#     --build-arg FUNCTION=train --build-arg DEPS=deps-train .
#
# AWS's Lambda base image for Python 3.13 (Amazon Linux 2023) brings the runtime
# interface client; Lambda runs the image as its own unprivileged user, and every
# invocation is a Lambda request, not a long-running service.
#checkov:skip=CKV_DOCKER_2:Lambda images get no HEALTHCHECK; Lambda's runtime API tracks the function's health.
#checkov:skip=CKV_DOCKER_3:Lambda ignores USER and runs the image as its own unprivileged user.

FROM public.ecr.aws/lambda/python:3.13 AS function
ARG FUNCTION
ARG DEPS
RUN test -n "${FUNCTION}" && test -n "${DEPS}" \
    || { echo "build with --build-arg FUNCTION=<dir under functions/> --build-arg DEPS=deps-<x>" >&2; exit 1; }
# Third-party dependencies first (cached until the pins change), into the image's
# site-packages; the same pinned file as the function's layer would use.
COPY layers/${DEPS}/requirements.txt /tmp/requirements.txt
RUN pip install --no-cache-dir -r /tmp/requirements.txt && rm /tmp/requirements.txt
# The domain package (what CtrLayer ships to zip functions) and the thin handler.
COPY layers/ctr/python/ctr ${LAMBDA_TASK_ROOT}/ctr
COPY functions/${FUNCTION}/app.py ${LAMBDA_TASK_ROOT}/
CMD ["app.lambda_handler"]
