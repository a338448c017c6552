"""Runs the sweep of tests/test_sweep.py in a fresh process (sharded or multi-host).

    python tests/sweep_subprocess.py sharded OUT.csv            # needs XLA_FLAGS device count
    python tests/sweep_subprocess.py multihost OUT.csv PORT ID  # one of 2 processes

Writes the table (and the curves next to it, ``OUT.csv.npy``) from process 0 only.
"""

import sys

import numpy as np


def main(mode: str, out: str, port: str = "", process_id: str = "0") -> None:
    import jax

    if mode == "multihost":
        jax.distributed.initialize(coordinator_address=f"localhost:{port}", num_processes=2,
                                   process_id=int(process_id), initialization_timeout=60)
    sys.path.insert(0, __file__.rsplit("/", 1)[0])
    from test_sweep import BASE, GRID, SEEDS

    from purejaxpo.sweep import sweep

    result = sweep(jax.random.PRNGKey(0), BASE, grid=GRID, seeds=SEEDS, log=None)
    expected_devices = 8 if mode == "sharded" else 2
    assert result.device_count == expected_devices, result.device_count
    if jax.process_index() == 0:
        result.table.to_csv(out, index=False)
        np.save(out + ".npy", result.curves)
    if mode == "multihost":
        jax.distributed.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:])
