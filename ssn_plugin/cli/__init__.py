"""Helpers of the command-line tools in ``tools/``: argument handling and process start-up."""
from .args import add_runner_args, apply_cfg_options, apply_runner_args, parse_runner_args
from .dist import init_cpu_process_group, run_runner, shutdown_process_group

__all__ = [
    'add_runner_args', 'apply_cfg_options', 'apply_runner_args', 'parse_runner_args',
    'init_cpu_process_group', 'run_runner', 'shutdown_process_group'
]
