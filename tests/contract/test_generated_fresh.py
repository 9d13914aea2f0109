"""gen/ is generated from proto/ by one command (tools/gen) and committed: prove it is fresh."""

from __future__ import annotations

import filecmp
import subprocess
from pathlib import Path

from conftest import REPO


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


def test_generated_code_matches_the_protos(tmp_path: Path) -> None:
    done = subprocess.run([str(REPO / "tools" / "gen"), str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    fresh, committed = tmp_path / "gen", REPO / "gen"
    assert _files(fresh) == _files(committed), "run `make gen` (tools/gen) and commit gen/"
    stale = [name for name in sorted(_files(fresh)) if not filecmp.cmp(fresh / name, committed / name, shallow=False)]
    assert not stale, f"gen/ is stale in {stale}: run `make gen` (tools/gen) and commit gen/"


def test_every_proto_file_is_generated() -> None:
    protos = {p.stem for p in (REPO / "proto" / "flowapi" / "v1").glob("*.proto")}
    generated = {p.name.removesuffix("_pb2.py") for p in (REPO / "gen" / "python" / "flowapi" / "v1").glob("*_pb2.py")}
    assert protos == generated
