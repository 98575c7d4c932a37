"""Fixtures shared by several test modules."""

from __future__ import annotations

import json

import pytest

from small_run import SMALL_RUN, finish, start


@pytest.fixture(scope="session")
def small_run(tmp_path_factory):
    """(config file, output dir) of the small real run, made once, uninterrupted, on the local executor."""
    root = tmp_path_factory.mktemp("small-run")
    config = root / "small.yaml"
    config.write_text(json.dumps(SMALL_RUN))  # JSON is YAML
    out = root / "local"
    finish(start(out, config))
    return config, out
