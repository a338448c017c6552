"""The checkpoint flags shared by ``purejaxpo train`` and every ``purejaxpo lm`` trainer."""

from __future__ import annotations

import os


def check_checkpoint_args(args) -> None:
    """ValueError naming the flag for bad ``--checkpoint-dir/--checkpoint-every/--resume/--log``."""
    every = getattr(args, "checkpoint_every", None)
    directory = getattr(args, "checkpoint_dir", None)
    if every is not None and every < 1:
        raise ValueError(f"--checkpoint-every={every} is invalid: must be an integer >= 1")
    if every is not None and directory is None:
        raise ValueError("--checkpoint-every needs --checkpoint-dir")
    if getattr(args, "resume", False) and directory is None:
        raise ValueError("--resume needs --checkpoint-dir")
    if directory is not None and os.path.exists(directory) and not os.path.isdir(directory):
        raise ValueError(f"--checkpoint-dir={directory!r} is invalid: not a directory")
    if directory is not None and not getattr(args, "resume", False):
        from purejaxpo.checkpoint import latest_step

        latest = latest_step(directory)
        if latest is not None:
            raise ValueError(f"--checkpoint-dir={directory!r} already holds checkpoints (latest "
                             f"step {latest}): pass --resume to continue, or use a new directory")
    if getattr(args, "log", None):
        from purejaxpo.logs import check_log_path

        check_log_path(args.log, "--log")


def add_checkpoint_args(parser, *, what: str, every: str) -> None:
    """``--checkpoint-dir``, ``--checkpoint-every`` and ``--resume`` (checked by
    :func:`check_checkpoint_args`), for ``train`` and every ``lm`` trainer."""
    parser.add_argument("--checkpoint-dir", metavar="DIR", default=None,
                        help=f"save {what} here with orbax")
    parser.add_argument("--checkpoint-every", metavar="N", type=int, default=None, help=every)
    parser.add_argument("--resume", action="store_true",
                        help="continue from the latest complete checkpoint in --checkpoint-dir "
                             "(bitwise as if never stopped)")
