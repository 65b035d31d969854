"""A short, deterministic run of benchmarks/fuzz_decoders.py's targets: each decoder, fed mutated
real files and raw bytes, raises nothing but DecodeError/OmnivecError and keeps its contract.
(Run the script itself for minutes to explore further.)"""

from __future__ import annotations

import contextlib
import importlib.util
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # PIL warns about every corrupt EXIF block

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("fuzz_decoders", ROOT / "benchmarks" / "fuzz_decoders.py")
assert _spec and _spec.loader
fuzz = importlib.util.module_from_spec(_spec)
sys.modules["fuzz_decoders"] = fuzz
_spec.loader.exec_module(fuzz)

# examples per target: a few hundred in all, well under 30 s on two cores
EXAMPLES = {"sniff": 200, "text": 150, "read_file": 60, "chunking": 150, "caption_uri": 60, "image": 150,
            "manifest": 40, "audio": 50}


@pytest.fixture(scope="module")
def targets():
    ws = fuzz.Workspace()
    try:
        yield fuzz.make_targets(ws)
    finally:
        shutil.rmtree(ws.root, ignore_errors=True)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_decoder_raises_only_its_own_errors(targets, name):
    target = targets[name]

    @settings(max_examples=EXAMPLES[name], deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(target.strategy)
    def check(example: Any) -> None:
        with contextlib.suppress(*fuzz.ALLOWED):
            target.run(example)

    check()


def test_fuzzer_saves_a_finding_with_its_input(tmp_path, targets):
    """The script's own machinery: a target that crashes is shrunk, saved, and replayable."""
    from hypothesis import strategies as st

    def crashes(data: bytes) -> None:
        if len(data) >= 3:
            raise ZeroDivisionError("found it")

    fuzzer = fuzz.Fuzzer({"crash": fuzz.Target("crash", st.binary(min_size=1, max_size=50), crashes)},
                         tmp_path, slow_s=60)
    fuzzer.round("crash", 100)
    assert len(fuzzer.findings) == 1
    finding = next(iter(fuzzer.findings.values()))
    assert finding.signature.startswith("crash:ZeroDivisionError") and len(finding.example) == 3  # shrunk
    saved = list(tmp_path.glob("crash/*/input.bin"))
    assert len(saved) == 1 and saved[0].read_bytes() == finding.example
    assert "replay" in (saved[0].parent / "report.txt").read_text()
    fuzzer.round("crash", 50)  # a known signature is counted, not re-shrunk
    assert len(fuzzer.findings) == 1 and finding.hits > 1
