"""The CLI logs through the ``synq_hf`` logger only: importing synq_hf or running a command leaves the root logger as it was."""

import logging
import subprocess
import sys

from synq_hf.cli import main


def test_cli_command_leaves_the_root_logger_alone(tmp_path, capsys):
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    package = logging.getLogger("synq_hf")
    package_level, package_handlers = package.level, list(package.handlers)
    assert main(["push", str(tmp_path), "me/repo"]) == 1  # runs (old order, warns) and fails: no model there
    err = capsys.readouterr().err
    assert "deprecated" in err and "does not hold a synq_hf-quantized model" in err  # the warning reached stderr
    assert (root.level, root.handlers) == (level, handlers)
    assert (package.level, package.handlers) == (package_level, package_handlers)


def test_import_and_a_command_leave_the_root_logger_unconfigured(tmp_path):
    """In a fresh process (pytest's own root handlers would hide a ``basicConfig`` call)."""
    code = (
        "import logging, sys; root = logging.getLogger(); before = (root.level, list(root.handlers)); "
        "import synq_hf, synq_hf.cli; assert (root.level, root.handlers) == before, 'import'; "
        "code = synq_hf.cli.main(['push', sys.argv[1], 'me/repo']); "
        "assert (root.level, root.handlers) == before, (root.level, root.handlers); print('exit', code)"
    )
    run = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout.strip() == "exit 1", run.stderr
    assert "deprecated" in run.stderr  # the package's own warning still reaches stderr
