"""Helpers of the command-line tools in ``tools/``: argument handling and process start-up."""
from .args import (add_runner_args, apply_cfg_options, apply_runner_args, follow_data_root,
                   parse_runner_args, set_image_cache)
from .dist import init_cpu_process_group, run_runner, shutdown_process_group

__all__ = [
    'add_runner_args', 'apply_cfg_options', 'apply_runner_args', 'parse_runner_args',
    'follow_data_root', 'set_image_cache',
    'init_cpu_process_group', 'run_runner', 'shutdown_process_group'
]
