"""What the accelerator can do: its kind, the matmul ceiling MFU is measured against, and
the memory a compiled program needs on it.

MFU here is model FLOP/s over a *ceiling*: the FLOP/s of a large jitted matmul in the
trial's compute dtype, measured on the device once per process (at the first trial's
start). On a CPU the peak depends on cores, clocks and SIMD width; on a GPU the clocks,
power limit and cuBLAS decide how much of the datasheet figure a matmul reaches (an
H100 SXM's bf16 matmuls reach well under its 989 TFLOP/s), so a measured ceiling is the
honest denominator everywhere. The datasheet figures stay for comparison
(`datasheet_flops`).
"""

from __future__ import annotations

import functools
import time
from typing import Optional

import jax
import jax.numpy as jnp


# Dense peak FLOP/s by (device kind substring, dtype), from the vendors' datasheets
# (no sparsity). H100 SXM: 989 TFLOP/s bf16, 67 TFLOP/s fp32 (non-tensor-core).
_DATASHEET = {
    ('H200', 'bfloat16'): 989e12, ('H200', 'float32'): 67e12,
    ('H100', 'bfloat16'): 989e12, ('H100', 'float32'): 67e12,
    ('A100', 'bfloat16'): 312e12, ('A100', 'float32'): 19.5e12,
    ('TPU v4', 'bfloat16'): 275e12, ('TPU v5 lite', 'bfloat16'): 197e12,
    ('TPU v5p', 'bfloat16'): 459e12, ('TPU v6', 'bfloat16'): 918e12,
}


def device_kind() -> str:
  return jax.local_devices()[0].device_kind


def measure_matmul_flops(dtype: str = 'float32', size: int = 1024, seconds: float = 1.0) -> float:
  """FLOP/s of a jitted (size x size) @ (size x size) matmul on the default device,
  the best of repeated timings over about `seconds`."""
  a = jax.random.normal(jax.random.key(0), (size, size), jnp.dtype(dtype))
  b = jax.random.normal(jax.random.key(1), (size, size), jnp.dtype(dtype))
  matmul = jax.jit(lambda x, y: x @ y)
  matmul(a, b).block_until_ready()
  best = float('inf')
  deadline = time.perf_counter() + seconds
  while time.perf_counter() < deadline or best == float('inf'):
    start = time.perf_counter()
    matmul(a, b).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return 2.0 * size ** 3 / best


def datasheet_flops(dtype: str = 'float32') -> Optional[float]:
  """The vendor's dense peak FLOP/s of this device kind in `dtype`, or None if unknown."""
  kind = device_kind()
  for (name, dt), flops in _DATASHEET.items():
    if name in kind and dt == dtype:
      return flops
  return None


# Side of the square matmul that measures the ceiling. 1024 on a CPU (XLA's CPU matmul
# is at its best there); on an accelerator 8192, large enough to keep every tensor core
# busy for a millisecond or more (1.1 TFLOP a matmul), so launch overhead is noise.
CPU_CEILING_SIZE = 1024
ACCELERATOR_CEILING_SIZE = 8192


@functools.lru_cache(maxsize=None)
def peak_flops(dtype: str = 'float32') -> float:
  """The ceiling for MFU in `dtype`: a large matmul's FLOP/s on the default device,
  measured at the first call of the process and kept."""
  size = CPU_CEILING_SIZE if jax.default_backend() == 'cpu' else ACCELERATOR_CEILING_SIZE
  return measure_matmul_flops(dtype, size=size)


def compiled_memory_gb(compiled) -> float:
  """GB one device needs to run `compiled` (a `jax.stages.Compiled`), from XLA's memory
  analysis: arguments + outputs + temporaries - donated aliases. A property of the
  program, not of the process's history; 0.0 where the backend gives no analysis."""
  try:
    stats = compiled.memory_analysis()
  except (NotImplementedError, RuntimeError):
    stats = None
  if stats is None:
    return 0.0
  argument, output, temp, alias = (getattr(stats, f'{name}_size_in_bytes', 0) or 0
                                   for name in ('argument', 'output', 'temp', 'alias'))
  return (argument + output + temp - alias) / 1e9
