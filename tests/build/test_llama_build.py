"""
The installed llama.cpp build (scripts/bootstrap) runs on any CPU of its architecture.

A build with AMX or AVX-512 instructions dies with SIGILL on CPUs without them, and one with AMX
dies even on CPUs that have it (see "Portable build" in README.md). These tests read the machine
code of the shared libraries that ship in the installed llama_cpp package, and run the packaged
model for a token in a child process.
"""

from __future__ import annotations

import hashlib
import importlib.util
import platform
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
OBJDUMP = shutil.which("objdump")

# Intel AMX: tile configuration, loads and stores, and the tile dot products.
AMX = re.compile(
    r"\s(ldtilecfg|sttilecfg|tilerelease|tilezero|tileloadd|tileloaddt1|tilestored"
    r"|tdpb[su][su]d|tdpbf16ps|tdpfp16ps|tcmmimfp16ps|tcmmrlfp16ps)\s"
)
# AVX-512: 512-bit registers, opmask registers, or the upper 16 vector registers; each of them
# exists only in EVEX-encoded (AVX-512) instructions.
AVX512 = re.compile(r"%zmm\d|%k[0-7]\b|%[xy]mm(1[6-9]|2\d|3[01])\b|\{1to\d+\}")


def llama_libraries() -> list[Path]:
    spec = importlib.util.find_spec("llama_cpp")  # located, not imported: loading is the test
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("llama-cpp-python is not installed; run scripts/bootstrap")
    lib = Path(next(iter(spec.submodule_search_locations))) / "lib"
    # A wheel holds libfoo.so, libfoo.so.0 and libfoo.so.0.1.2 as three copies: read one of each.
    unique: dict[bytes, Path] = {}
    for path in sorted(lib.glob("*.so*"), key=lambda p: len(p.name), reverse=True):
        unique[hashlib.sha256(path.read_bytes()).digest()] = path
    assert unique, f"no shared libraries in {lib}"
    return sorted(unique.values())


def forbidden_instructions(library: Path) -> dict[str, list[str]]:
    """The first few AMX and AVX-512 instructions in the library's code, by kind."""
    found: dict[str, list[str]] = {"AMX": [], "AVX-512": []}
    with subprocess.Popen(
        [str(OBJDUMP), "-d", "--no-show-raw-insn", str(library)],
        stdout=subprocess.PIPE,
        text=True,
        errors="replace",
    ) as objdump:
        assert objdump.stdout is not None
        for line in objdump.stdout:
            for kind, pattern in (("AMX", AMX), ("AVX-512", AVX512)):
                if len(found[kind]) < 5 and pattern.search(line):
                    found[kind].append(line.strip())
    assert objdump.returncode == 0, f"objdump failed on {library}"
    return found


def test_the_instruction_check_recognises_amx_and_avx512():
    assert AMX.search("  1234:\ttilezero %tmm0 \n")
    assert AMX.search("  1234:\ttdpbssd %tmm2,%tmm1,%tmm0\n")
    assert AVX512.search("  1234:\tvmovups %zmm0,(%rax)\n")
    assert AVX512.search("  1234:\tvpaddd %ymm17,%ymm1,%ymm2\n")
    assert not AVX512.search("  1234:\tvfmadd231ps %ymm15,%ymm1,%ymm0\n")
    assert not AMX.search("  1234:\tcall   <tiled_repack_src1>\n")


@pytest.mark.skipif(
    platform.machine() not in ("x86_64", "AMD64"),
    reason=f"AMX and AVX-512 are x86-64 instructions; this machine is {platform.machine()}",
)
@pytest.mark.skipif(
    OBJDUMP is None,
    reason="objdump is not installed (Debian package binutils; scripts/test installs it)",
)
def test_llama_libraries_have_no_amx_or_avx512_instructions():
    found = {lib.name: forbidden_instructions(lib) for lib in llama_libraries()}
    bad = {name: kinds for name, kinds in found.items() if any(kinds.values())}
    assert not bad, f"llama.cpp was not built portably (rebuild with scripts/bootstrap): {bad}"


@pytest.mark.local_model
def test_embedded_model_generates_a_token_in_a_child_process():
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "llama_smoke.py")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    died = f" (killed by {signal.Signals(-done.returncode).name})" if done.returncode < 0 else ""
    assert done.returncode == 0, f"exit {done.returncode}{died}: {done.stderr[-2000:]}"
    assert done.stdout.strip() not in ("", "''")
