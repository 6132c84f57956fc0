from facenet.cli import COMMANDS, main


def test_no_arguments_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


def test_unknown_command_is_an_error(capsys):
    assert main(["no-such-command"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no-such-command" in err


def test_every_command_module_is_listed_once():
    modules = [m for m, _ in COMMANDS.values()]
    assert len(modules) == len(set(modules))
