"""The README's two set-up commands exist, CI runs the same test command plus the slow tests, the
README states how long each test command takes, and its outputs go to the ignored work folder.
(tests/test_readme_commands.py runs every README command.)"""
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _section(title: str) -> str:
    text = (REPO / "README.md").read_text()
    return text.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def _setup_commands() -> list[str]:
    blocks = _section("Set up").split("```bash\n")[1:]
    return [b.split("```", 1)[0].strip() for b in blocks]


def test_readme_has_exactly_two_setup_commands():
    cmds = _setup_commands()
    assert len(cmds) == 2 and all("\n" not in c for c in cmds), cmds
    assert "pip install" in cmds[0] and "mmu demo --out work/demo " in cmds[0]
    assert "pip install" in cmds[1] and "pytest" in cmds[1]


def test_ci_runs_the_readme_test_command_and_the_slow_tests():
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert _setup_commands()[1] in ci
    assert "python -m pytest -q -m slow" in ci


def test_readme_states_the_duration_of_every_test_command():
    setup = _section("Set up")
    fast = setup.split("```bash\n" + _setup_commands()[1])[0].rstrip().rsplit("\n\n", 1)[-1]  # the text above
    assert re.search(r"\d+ min", fast), fast
    tests = _section("Tests")
    for marker in ("slow", "benchmark"):
        line = next(ln for ln in tests.splitlines() if ln.startswith(f"python -m pytest -q -m {marker}"))
        assert re.search(r"\d+ min", line), line
    assert not re.search(r"\b(TINY|SMALL|FAST|SLOW)_[A-Z]+\b", (REPO / "README.md").read_text())


def test_the_work_folder_is_ignored():
    assert "/work/" in (REPO / ".gitignore").read_text().splitlines()
