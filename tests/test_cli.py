"""The command dispatcher: every documented command is registered; errors are clear."""

import pytest

from acehamil.cli import COMMANDS, build_parser, main


def test_every_documented_command_is_registered():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(sub.choices) == set(COMMANDS)


def test_missing_file_gives_a_clear_error(capsys, tmp_path):
    rc = main(["info", str(tmp_path / "nope.h5")])
    assert rc == 2
    assert "no such file" in capsys.readouterr().err


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "usage" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["--version"]])
def test_version(argv, capsys):
    with pytest.raises(SystemExit):
        main(argv)
    assert "acehamil" in capsys.readouterr().out
