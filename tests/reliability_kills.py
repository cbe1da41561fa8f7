"""kill -9 writers mid-write, many times; counts for docs/reliability.md.

    PYTHONPATH=python python tests/reliability_kills.py [KILLS_PER_KIND]

For each kind (``slimgrad.save``, ``quant.save``, ``slimgrad quantize -o``) a
child process rewrites one target in a loop and is killed with SIGKILL while
a temporary file exists (mid-write). After each kill the target must load
(if it exists); after all kills of a kind, one more write to the target must
leave no temporary file behind.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import slimgrad
from slimgrad import _safetensors as st
from slimgrad import quant
from slimgrad.cli import main
from test_reliability_files import _kill_mid_write, _stray


def run(kills: int) -> dict[str, dict[str, int]]:
    out = {}
    for kind in ("save", "quant", "cli"):
        with tempfile.TemporaryDirectory() as d:
            tmp = Path(d)
            target, source = tmp / "out.safetensors", None
            if kind == "cli":
                source = tmp / "in.safetensors"
                st.write(source, {"w": st.to_entry(np.ones((2000, 2000), np.float32))}, None)
            broken = stray_before = 0
            for _ in range(kills):
                _kill_mid_write(tmp, kind, target, source)
                stray_before = len(_stray(tmp))
                if target.exists():
                    try:
                        (slimgrad.load if kind == "save" else quant.load)(target)
                    except ValueError:
                        broken += 1
            if kind == "save":
                slimgrad.save(target, w=np.ones(2, np.float32))
            elif kind == "quant":
                quant.save(target, {"w": np.ones(2, np.float32)})
            else:
                main(["quantize", str(source), "-o", str(target)])
            out[kind] = {
                "kills": kills,
                "stray before the next write": stray_before,
                "broken targets": broken,
                "stray after it": len(_stray(tmp)),
            }
    return out


if __name__ == "__main__":
    for kind, c in run(int(sys.argv[1]) if len(sys.argv) > 1 else 20).items():
        print(kind, c)
