"""Every `mmu ...` command line in the README's shell blocks parses with today's parser: an option
renamed or removed in the CLI fails here, not in a newcomer's terminal."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from mmu.cli import make_parser

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_commands() -> list[str]:
    blocks = re.findall(r"```(?:bash|sh|shell)\n(.*?)```", README.read_text(), flags=re.S)
    commands = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            for part in line.split("&&"):
                words = shlex.split(part, comments=True)
                while words and "=" in words[0] and not words[0].startswith("-"):  # VAR=value mmu ...
                    words = words[1:]
                if words[:1] == ["mmu"]:
                    commands.append(shlex.join(words[1:]))
    return commands


COMMANDS = readme_commands()


def test_the_readme_has_commands():
    assert len(COMMANDS) >= 10 and any(c.startswith("eval ") for c in COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_parses(command, capsys):
    try:
        args = make_parser().parse_args(shlex.split(command))
    except SystemExit as e:
        pytest.fail(f"`mmu {command}` does not parse: {capsys.readouterr().err.strip()} (exit {e.code})")
    assert getattr(args, "func", None) is not None, f"`mmu {command}` names no command"
