import pytest

from facenet.cli import COMMANDS, main


def test_no_arguments_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


def test_unknown_command_is_an_error():
    with pytest.raises(SystemExit) as e:
        main(["no-such-command"])
    assert e.value.code == 2


def test_every_command_module_is_listed_once():
    modules = [m for m, _ in COMMANDS.values()]
    assert len(modules) == len(set(modules))
