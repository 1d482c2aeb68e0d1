"""Hostile-input fuzzing of kumo: the ARM front door (Azure's OpenAPI specs through schemathesis, and
hand-written hostile requests), the template expression language and the OCI layer unpacker. The
modules here hold the generators and checks; tests/unit/test_fuzz_*.py and tests/e2e/test_hostile_input.py
run them at a small scale, tests/fuzz/run.py at a large one."""
