"""The jaxtyping annotations of the public API, checked at test time (issue 10, item 7).

Every public function of exg_jax carries jaxtyping annotations (array shapes
with named axes, dtypes; see ``exg_jax/_typing.py``). Here they are checked
by ``jaxtyping.install_import_hook(["exg_jax"], "beartype.beartype")``, as
optimistix does with ``--jaxtyping-packages``, but in a subprocess
(``tests/_typecheck_api.py``) rather than for the whole suite: the bad-input
tests (``tests/test_bad_input*.py``) pass wrong types and shapes on purpose
and expect the library's own ``ValueError`` / ``TypeError`` naming the
argument, which the annotation check would pre-empt with its own message.

The script drives the public API with valid inputs, eagerly and under
``jax.jit`` / ``jax.grad``, once in float32 (x64 off) and once in float64
(x64 on); the suite runs the float32 one (see ``DTYPES``).
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = Path(__file__).resolve().with_name("_typecheck_api.py")
CANARIES = 3  # deliberately ill-typed calls the script expects the hook to catch
# float32 (the users' default, x64 off) in the suite: the two dtypes share every
# annotation (dtypes are checked as "floating"), and the float64 run doubled the
# suite's slowest test (149 s on 2 cores). `python tests/_typecheck_api.py float64`
# runs the other one by hand.
DTYPES = ("float32",)


def test_public_api_satisfies_its_annotations():
    pytest.importorskip("beartype")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p
    )
    procs = {
        dtype: subprocess.Popen(
            [sys.executable, str(SCRIPT), dtype],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for dtype in DTYPES
    }
    failures = []
    for dtype, proc in procs.items():
        try:
            out, err = proc.communicate(timeout=900)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            failures.append(f"[{dtype}] timed out\n{out}\n{err}")
            continue
        ok = (
            proc.returncode == 0
            and out.count("CANARY OK:") == CANARIES
            and f"OK {dtype}" in out.splitlines()
        )
        if not ok:
            failures.append(
                f"[{dtype}] exit code {proc.returncode}\n--- stdout ---\n{out}"
                f"\n--- stderr (end) ---\n{err[-20000:]}"
            )
    assert not failures, "\n\n".join(failures)
