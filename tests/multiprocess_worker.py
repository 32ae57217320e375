"""One process of the multi-process training test: python multiprocess_worker.py PID NPROC PORT WORKDIR OUT [SPACE]."""
import os
import sys

import jax
import numpy as np

from pix2pixhd_jax.configs import tiny_test
from pix2pixhd_jax import train
from pix2pixhd_jax.cli import process

pid, nproc, port, workdir, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
space = int(sys.argv[6]) if len(sys.argv) > 6 else 1  # mesh.space: devices each image's rows are split over
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={8 // nproc}"
os.environ["JAX_PLATFORMS"] = "cpu"
process.setup()
jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU collectives across processes
if nproc > 1:
    jax.distributed.initialize(f"localhost:{port}", nproc, pid)

config = tiny_test.get_config()
config.num_devices = 0  # all 8 devices of all processes
config.data.batch_size = 8
config.data.synthetic_num = 8
config.data.serial_batches = True  # the same 8 examples form the global batch in both layouts
config.data.no_flip = True  # flips are drawn per process shard, so they would differ between layouts
config.optim.eps = 1e-3  # see test_train_step: keeps Adam smooth in noise-level gradients
config.mesh.space = space
config.model.conv_impl = "lax"  # both layouts alike; the CPU rewrites refuse space > 1
# Step 1, then a restart that resumes from the multi-process checkpoint for step 2.
for steps in (1, 2):
    config.train.max_steps = steps
    result = train.run(config, workdir)
    if pid == 0:
        state = result.state
        leaves = jax.tree_util.tree_leaves(state.g_params) + jax.tree_util.tree_leaves(state.d_params)
        np.savez(f"{out}.step{steps}.npz", *[np.asarray(leaf.addressable_data(0)) for leaf in leaves])
print(f"process {pid}/{jax.process_count()} with {jax.local_device_count()} of {jax.device_count()} devices: done")
