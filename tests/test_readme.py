"""The Python examples of README's "Where users already work" section run."""

import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _section_examples():
    text = README.read_text()
    section = text.split("## Where users already work", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.DOTALL)


@pytest.mark.parametrize("code", _section_examples(), ids=lambda c: c.split("\n", 1)[0][:40])
def test_readme_example_runs(code):
    for module in re.findall(r"^(?:from|import) (\w+)", code, re.MULTILINE):
        pytest.importorskip(module, reason=f"{module} is not installed")
    exec(compile(code, str(README), "exec"), {})  # noqa: S102 (our own README)
