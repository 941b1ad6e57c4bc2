"""Long-running checks of the whole system on the local cloud (issue 15): the soak
harness (`ctr soak`, `harness`), its feeder and fault injector, and the Step Functions ->
Lambda connection probe (`probe`) behind the emulator fix in docs/design.md."""
