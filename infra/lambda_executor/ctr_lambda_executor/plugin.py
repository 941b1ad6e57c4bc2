"""plux plugin: LAMBDA_RUNTIME_EXECUTOR=process selects ProcessRuntimeExecutor."""

from localstack.services.lambda_.invocation.plugins import RuntimeExecutorPlugin


class ProcessRuntimeExecutorPlugin(RuntimeExecutorPlugin):
    name = "process"

    def load(self, *args, **kwargs):
        from ctr_lambda_executor.executor import ProcessRuntimeExecutor

        return ProcessRuntimeExecutor
