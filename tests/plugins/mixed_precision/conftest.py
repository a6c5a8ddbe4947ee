"""tests/plugins/mixed_precision: needs core and runyard-mixed-precision only.

runyard-local may be absent (these tests also run in a venv holding only core and this
plugin), so tasks run on a small executor kind of the tests' own, registered per test by
the ``process_executor`` fixture.
"""

# No `from __future__ import annotations`: cattrs resolves ProcessExecutor's annotations by
# its module's name, "conftest", which names whichever conftest.py pytest imported last.

from collections.abc import Iterator
from typing import Any, ClassVar

import attrs
import pytest
from helpers import ChildProcessBackend
from runyard.executor import Executor
from runyard.hookspecs import hookimpl
from runyard.plugins import ExecutorRegistry, Plugins
from runyard.testing import registered_plugin


@attrs.define
class ProcessExecutor(Executor):
    """Each task a child process of the driver (a test executor kind, not runyard-local)."""

    kind: ClassVar[str] = "mixed-precision-test-process"


# Resolve its annotations now, while this module is the one named "conftest" (pytest names
# every conftest.py so; cattrs would otherwise look them up in whichever came last).
attrs.resolve_types(ProcessExecutor)


class ProcessPlugin:
    @hookimpl
    def runyard_register_executors(self, registry: ExecutorRegistry) -> None:
        registry.add(ProcessExecutor, ChildProcessBackend)


@pytest.fixture
def process_executor(runyard_plugins: Plugins) -> Iterator[type[ProcessExecutor]]:
    """The tests' executor class, registered with a fresh plugin manager for the test."""
    with registered_plugin(ProcessPlugin(), name="mixed-precision-test-process"):
        yield ProcessExecutor


@pytest.fixture
def guide_block() -> Any:
    """The experiment guide's "Using Plugins" code block (from tests/e2e/experiment-guide.md)."""
    import re
    from pathlib import Path

    guide = (Path(__file__).resolve().parents[2] / "e2e" / "experiment-guide.md").read_text()
    section = guide.split("### Using Plugins", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, flags=re.S)
    assert match is not None
    return match.group(1)
