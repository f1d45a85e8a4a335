"""The README's usage example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_usage_example_runs():
    text = README.read_text()
    match = re.search(r"## Usage\n\n```python\n(.*?)```", text, re.S)
    assert match, "README.md has no python block under '## Usage'"
    namespace: dict = {}
    exec(compile(match.group(1), str(README), "exec"), namespace)
    assert namespace["y"].shape == (32, 64)
    assert namespace["logits"].shape == (32, 10)
    assert namespace["one"].shape == (1, 10)  # under frozen_weights
