"""The README followed as a new user follows it: every command of its ```bash blocks and every
```python block, in order, after one fresh tiny demo, in an empty folder holding only the configs
the commands name. Each must exit 0, and nothing may be written outside the ignored `work/` folder.

The few commands that cannot run here are skipped, each by an entry of SKIP with its reason; the
few that run longer than a test should are rewritten by REWRITE, each with its reason. A stale
entry (one that matches no README command) fails the test, so the lists follow the README.
MMU_README_DEMO=DIR reuses a finished `mmu demo --size tiny` folder instead of running the demo
(for iterating on the README; CI runs the demo).
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# regex on a command -> why it does not run in this test
SKIP = {
    r"^python -m pytest": "the test suite itself",
    r"^mmu fetch ": "downloads from a survey archive: needs the network",
    r"--raw work/raw ": "reads the files `mmu fetch` downloads",
    r"--scheduler tcp://": "needs a running Dask cluster",
    r"^torchrun ": "needs GPUs (and several nodes)",
    r"astroclip\.yaml .*work/real-shards": "GPU-sized (50,000 steps of batch 256), on real-data shards",
}
# (regex, replacement, why): applied to every command that runs
REWRITE = [
    (r"^python -m pip install [^&]*&& ", "",
     "the install part of the set-up line: the test runs in the installed environment"),
    (r"^(mmu pretrain --config pretrain/configs/demo\.yaml .*run\.dir=work/runs/demo)$", r"\1 train.steps=4",
     "400 steps are minutes of CPU; 4 steps (a checkpoint), then 6 with --resume, take the same path"),
    (r"^(mmu pretrain --config pretrain/configs/demo\.yaml .*run\.dir=work/runs/demo) --resume$",
     r"\1 train.steps=6 --resume", "continues the 4-step run to step 6"),
]
# files the commands read, relative to the repository (and so to the folder they run in)
INPUTS = ["pretrain/configs"]


def readme_blocks() -> list[tuple[str, str]]:
    """(language, body) of every fenced block of the README with a language, in order."""
    text = (REPO / "README.md").read_text()
    return [(m.group(1), m.group(2)) for m in re.finditer(r"^```(\w+)\n(.*?)^```", text, re.M | re.S)]


def bash_commands(body: str) -> list[str]:
    """The commands of a bash block: continuation lines joined, comment-only lines dropped."""
    joined = re.sub(r"\\\n\s*", "", body)
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]


def plan() -> list[tuple[str, str, str | None]]:
    """(kind, what to run, reason it is skipped or None) for every README command, in order."""
    steps = []
    for lang, body in readme_blocks():
        if lang == "python":
            steps.append(("python", body, None))
        elif lang == "bash":
            for cmd in bash_commands(body):
                why = next((reason for pattern, reason in SKIP.items()
                            if re.search(pattern, _rewritten(cmd, only_install=True))), None)
                steps.append(("bash", cmd, why))
    return steps


def _rewritten(cmd: str, only_install: bool = False) -> str:
    for pattern, replacement, _ in REWRITE[:1] if only_install else REWRITE:
        cmd = re.sub(pattern, replacement, cmd)
    return cmd


def _snapshot(root: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under `root` outside work/."""
    out = {}
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if rel.parts[0] == "work" or not path.is_file() or "__pycache__" in rel.parts:
            continue
        out[rel.as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def test_skip_and_rewrite_lists_match_the_readme():
    commands = [cmd for kind, cmd, _ in plan() if kind == "bash"]
    for pattern in SKIP:
        assert any(re.search(pattern, _rewritten(c, only_install=True)) for c in commands), \
            f"SKIP entry {pattern!r} matches no README command: remove it"
    for pattern, _, _ in REWRITE:
        assert any(re.search(pattern, c) or re.search(pattern, _rewritten(c, True)) for c in commands), \
            f"REWRITE entry {pattern!r} matches no README command: remove it"
    assert commands[0].endswith("mmu demo --out work/demo --size tiny"), commands[0]
    # the README's outputs all go under work/ (or to absolute cluster paths in skipped commands)
    for cmd in commands:
        for flag in re.findall(r"(?:--out|--hub|--raw|-o|run\.dir=)[ =]?(\S+)", cmd):
            assert flag.startswith(("work/", "/shared/")), (cmd, flag)


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_every_readme_command_runs_in_order_and_writes_only_under_work(tmp_path):
    cwd = tmp_path / "newcomer"
    for rel in INPUTS:
        shutil.copytree(REPO / rel, cwd / rel)
    before = _snapshot(cwd)
    repo_entries = set(os.listdir(REPO))
    env = {**os.environ, "MMU_NO_PROGRESS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "PYTHONWARNINGS": "default::FutureWarning"}
    env.pop("MMU_CATALOG", None)
    ran, skipped, times = [], [], []
    reuse = os.environ.get("MMU_README_DEMO")  # a finished tiny demo folder: copied, not rerun
    if reuse:
        shutil.copytree(reuse, cwd / "work" / "demo", symlinks=True)
    for kind, cmd, why in plan():
        if reuse and re.search(r"mmu demo --out work/demo --size tiny$", cmd):
            why = f"MMU_README_DEMO={reuse}: that tiny demo is reused"
        if why is not None:
            skipped.append((cmd, why))
            continue
        run = [sys.executable, "-c", cmd] if kind == "python" else ["bash", "-c", _rewritten(cmd)]
        t0 = time.perf_counter()
        out = subprocess.run(run, cwd=cwd, env=env, capture_output=True, text=True, timeout=1800)
        times.append((round(time.perf_counter() - t0, 1), cmd.splitlines()[0][:80]))
        assert out.returncode == 0, (f"README command failed (exit {out.returncode}):\n{run[-1]}\n"
                                     f"--- stderr ---\n{out.stderr[-4000:]}\n--- stdout ---\n{out.stdout[-2000:]}")
        if kind == "python":  # the snippets use the libraries' current API (lsdb's suffix_method, ...)
            assert "FutureWarning" not in out.stderr, (cmd, out.stderr[-3000:])
        ran.append(cmd)
    print("\n".join(f"{s:7.1f} s  {c}" for s, c in times))
    assert len(ran) >= 20, (len(ran), skipped)
    after = _snapshot(cwd)
    changed = {k for k in set(after) | set(before) if after.get(k) != before.get(k)}
    assert not changed, f"README commands wrote outside work/: {sorted(changed)}"
    assert set(os.listdir(REPO)) <= repo_entries | {".pytest_cache"}, set(os.listdir(REPO)) - repo_entries
    work = cwd / "work"
    for expected in ("demo/report.html", "hub/ls_desi/build.json", "shards/train/index.json",
                     "runs/demo/log.jsonl", "results/mymodel", "site/index.html", "refs.bib"):
        assert (work / expected).exists(), expected
