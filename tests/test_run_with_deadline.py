"""The tests' deadline for runs of several processes (helpers.run_with_deadline)."""
import os
import sys

import pytest

from helpers import run_with_deadline
from helpers.tools import proc_stat

# A child that starts a grandchild in a session of its own (as torchrun starts its workers),
# prints the grandchild's pid and waits for it; the grandchild waits forever.
PARENT = '''
import subprocess, sys
GRANDCHILD = "import time\\ndef wait_for_a_peer_that_never_comes():\\n    time.sleep(600)\\n" \\
    "wait_for_a_peer_that_never_comes()\\n"
child = subprocess.Popen([sys.executable, "-c", GRANDCHILD], start_new_session=True)
print("grandchild", child.pid, flush=True)
child.wait()
'''


def alive(pid: int) -> bool:
    try:
        state = proc_stat(pid)[0]
    except FileNotFoundError:
        return False
    return state != 'Z'  # a zombie has ended; only its parent has not collected it


def test_a_hung_run_fails_with_every_process_stack_and_leaves_none_behind():
    with pytest.raises(pytest.fail.Exception) as failure:
        run_with_deadline([sys.executable, '-c', PARENT], deadline_s=5)
    message = str(failure.value)
    assert 'did not end within 5 s' in message
    # The grandchild, in another session, printed where it waited, and is gone.
    assert 'in wait_for_a_peer_that_never_comes' in message
    pid = int(message.split('grandchild ', 1)[1].split()[0])
    assert not alive(pid)


def test_a_run_within_the_deadline_is_subprocess_run():
    result = run_with_deadline(
        [sys.executable, '-c', 'import os, sys; print(os.environ["PYTHONFAULTHANDLER"]); '
         'print("err", file=sys.stderr); sys.exit(3)'], env=dict(os.environ, A='1'))
    assert (result.returncode, result.stdout, result.stderr) == (3, '1\n', 'err\n')
