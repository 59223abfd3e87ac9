"""The inputs of measure.sh: 20M float64 values keyed by 2M distinct
sparse int64 keys (uniform, 7919 apart), as .npy files in the current
folder."""
import numpy as np

rng = np.random.default_rng(1)
n = 20_000_000
np.save("k.npy", rng.integers(0, 2_000_000, n).astype(np.int64) * 7919)
np.save("v.npy", rng.standard_normal(n))
